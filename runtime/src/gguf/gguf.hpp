#pragma once
// Read-only GGUF (v2/v3) reader. The file is validated completely when it is opened, so every
// later access (getters, tensor_data) works on trusted offsets and cannot read out of bounds.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pmoe {

enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12
};

// "u32", "string", "array", ... ; "type <n>" for an invalid id.
std::string gguf_type_name(GgufValueType t);
// GGML's name of a tensor type id ("f32", "q4_K", ...) or nullptr if GGML has no such type.
const char* ggml_type_name(uint32_t type);
// True for the tensor types pocketmoe computes with (f32, f16, bf16, the legacy block types
// Q4_0..Q8_0, the K-quants Q2_K..Q6_K, IQ4_NL and IQ4_XS).
bool gguf_type_supported(uint32_t type);
// Their names, comma-separated, for error messages.
std::string gguf_supported_types();
// llama.cpp's name of a `general.file_type` value ("Q4_K - Medium", "Q8_0", ...), as its loader
// prints it; "unknown (<n>)" for a value it does not define.
std::string llama_ftype_name(uint32_t ftype);

struct GgufTensorInfo {
  std::string name;
  uint32_t type = 0;      // GGML type id (pmoe_dtype)
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] contiguous; unused dims = 1
  uint64_t offset = 0;    // ABSOLUTE byte offset of the data in the file
  uint64_t size = 0;      // bytes
  uint64_t n_elements() const;
};

/// How a GGUF file's bytes come into memory (docs/config.md, `weights.load`).
enum class GgufLoad {
  map,  // mapped read-only: pages come from the page cache as they are touched
  read  // read whole into anonymous memory that asks for 2 MiB pages (transparent huge pages):
        // no TLB miss every 4 KiB where decode reads scattered rows; read-only after the read
};

/// "read" or "mmap", as `weights.load` spells them.
inline const char* gguf_load_name(GgufLoad how) { return how == GgufLoad::read ? "read" : "mmap"; }

class GgufFile {
 public:
  // Maps (or reads, GgufLoad::read) the file read-only (never writes it) and validates everything.
  static std::unique_ptr<GgufFile> open(const std::string& path, GgufLoad how = GgufLoad::map);
  // Same validation over caller-owned bytes (no copy; they must outlive the object).
  static std::unique_ptr<GgufFile> from_memory(const uint8_t* data, size_t size, std::string name);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // may pass file_size() if there are no tensors
  uint64_t file_size() const { return size_; }
  const uint8_t* base() const { return data_; }

  // metadata
  bool has(std::string_view key) const;
  std::vector<std::string> keys() const;  // in file order
  GgufValueType type_of(std::string_view key) const;  // throws if missing
  // For arrays: element type and element count (throws if missing or not an array).
  GgufValueType array_type_of(std::string_view key) const;
  uint64_t array_size(std::string_view key) const;

  // Integer getters accept any integer-typed value that fits; missing key, wrong type or an
  // out-of-range value -> pmoe::Error "<path>: metadata key '<key>': <what>".
  uint32_t get_u32(std::string_view key) const;
  std::optional<uint32_t> get_u32_opt(std::string_view key) const;  // nullopt only if missing
  int32_t get_i32(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;
  int64_t get_i64(std::string_view key) const;
  float get_f32(std::string_view key) const;  // accepts f32/f64
  std::optional<float> get_f32_opt(std::string_view key) const;
  double get_f64(std::string_view key) const;  // accepts f32/f64
  bool get_bool(std::string_view key) const;
  std::optional<bool> get_bool_opt(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  std::optional<std::string> get_string_opt(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  // Zero-copy view of a string array; the views point into the file and live as long as it.
  std::vector<std::string_view> get_string_view_array(std::string_view key) const;
  std::vector<int32_t> get_i32_array(std::string_view key) const;  // any integer array that fits
  std::vector<float> get_f32_array(std::string_view key) const;    // f32/f64 arrays
  // Human readable value, arrays shortened: [1, 2, 3, ... (151936 items)]
  std::string value_summary(std::string_view key) const;
  // The serialized value as stored (type tag included), for copying entries between files.
  std::span<const uint8_t> raw_value(std::string_view key) const;

  // tensors
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;  // nullptr if absent
  const uint8_t* tensor_data(const GgufTensorInfo& t) const;       // pointer into the mapping

 private:
  struct KvEntry {
    std::string key;
    GgufValueType type;
    GgufValueType elem_type;  // arrays only
    uint64_t count;           // arrays only
    uint64_t tag_offset;      // offset of the value's type tag
    uint64_t value_offset;    // offset of the value (arrays: of the first element)
    uint64_t end_offset;      // one past the value
  };

  GgufFile() = default;
  void parse();
  const KvEntry& entry(std::string_view key) const;  // throws if missing
  const KvEntry* find_entry(std::string_view key) const;
  [[noreturn]] void key_error(std::string_view key, const std::string& what) const;

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<KvEntry> kvs_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace pmoe
