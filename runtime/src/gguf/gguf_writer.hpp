#pragma once
// Streaming GGUF v3 writer: metadata is held in memory (already serialized), tensor data is
// produced on demand while writing, so multi-GB files never sit in memory.
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.hpp"

namespace pmoe {

class GgufWriter {
 public:
  using Fill = std::function<void(uint8_t* dst, uint64_t size)>;
  using Progress = std::function<void(uint64_t bytes_done, uint64_t bytes_total)>;

  void set_alignment(uint32_t a);  // default 32; writes general.alignment only if != 32

  // Adding a key twice, or general.alignment (use set_alignment), throws pmoe::Error.
  void add_u8(std::string key, uint8_t v);
  void add_i8(std::string key, int8_t v);
  void add_u16(std::string key, uint16_t v);
  void add_i16(std::string key, int16_t v);
  void add_u32(std::string key, uint32_t v);
  void add_i32(std::string key, int32_t v);
  void add_u64(std::string key, uint64_t v);
  void add_i64(std::string key, int64_t v);
  void add_f32(std::string key, float v);
  void add_f64(std::string key, double v);
  void add_bool(std::string key, bool v);
  void add_string(std::string key, std::string v);
  void add_string_array(std::string key, std::vector<std::string> v);
  void add_i32_array(std::string key, std::vector<int32_t> v);
  void add_f32_array(std::string key, std::vector<float> v);
  // Array of any fixed-size element type (not STRING/ARRAY): `count` little-endian elements.
  void add_array(std::string key, GgufValueType elem, const void* data, uint64_t count);
  // Copy a metadata entry (any type, arrays too) from another file, e.g. tokenizer.* keys.
  // general.alignment is taken over as set_alignment().
  void copy_key(const GgufFile& from, std::string_view key);
  // An already serialized value (type tag + value, as GgufFile::raw_value returns). Not checked:
  // tests use it to write malformed entries.
  void add_raw(std::string key, std::vector<uint8_t> typed_value);

  // `fill(dst, size)` produces the tensor's bytes while writing (dst is zeroed beforehand).
  // ne: 1..4 dims, ne[0] contiguous; type must be one dtype.h knows.
  void add_tensor(std::string name, uint32_t type, std::vector<int64_t> ne, Fill fill);
  // Any type id with an explicit byte size, unchecked (for files the reader has to reject).
  void add_raw_tensor(std::string name, uint32_t type, std::vector<int64_t> ne, uint64_t size, Fill fill);

  // Writes header, KV, tensor infos (offsets = running sum padded to alignment, like llama.cpp),
  // padding, data (each tensor padded to the alignment). Writes path + ".tmp", then renames it.
  void write(const std::string& path, Progress progress = {}) const;

 private:
  struct Kv {
    std::string key;
    std::vector<uint8_t> value;  // type tag + value
  };
  struct Tensor {
    std::string name;
    uint32_t type;
    std::vector<int64_t> ne;
    uint64_t size;
    Fill fill;
  };
  void add_kv(std::string key, std::vector<uint8_t> value);

  uint32_t alignment_ = 32;
  std::vector<Kv> kvs_;
  std::vector<Tensor> tensors_;
  std::set<std::string, std::less<>> keys_, names_;
};

}  // namespace pmoe
