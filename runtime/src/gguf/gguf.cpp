#include "gguf/gguf.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include <pocketmoe/dtype.h>

#include "common/error.hpp"

namespace pmoe {

static_assert(std::endian::native == std::endian::little, "GGUF is read in place: little-endian hosts only");

namespace {

constexpr uint32_t kMaxValueType = static_cast<uint32_t>(GgufValueType::FLOAT64);
// Smallest possible encodings, used to bound the counts in the header by the file size:
// key length + 1-byte key + type tag + 1-byte value; name length + 1-byte name + n_dims + one ne
// + type + offset.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorBytes = 8 + 1 + 4 + 8 + 4 + 8;

// Size of a fixed-size value type, 0 for STRING/ARRAY.
uint64_t fixed_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    default: return 0;
  }
}

bool is_int(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::UINT16:
    case GgufValueType::INT16: case GgufValueType::UINT32: case GgufValueType::INT32:
    case GgufValueType::UINT64: case GgufValueType::INT64: return true;
    default: return false;
  }
}

bool is_float(GgufValueType t) { return t == GgufValueType::FLOAT32 || t == GgufValueType::FLOAT64; }

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// An integer metadata value of any width: negative values keep their int64 bits.
struct Int {
  bool neg;
  uint64_t bits;
  std::string str() const { return neg ? std::to_string(static_cast<int64_t>(bits)) : std::to_string(bits); }
  template <class T>
  std::optional<T> as() const {
    if (neg) {
      const auto s = static_cast<int64_t>(bits);
      if (!std::in_range<T>(s)) return std::nullopt;
      return static_cast<T>(s);
    }
    if (!std::in_range<T>(bits)) return std::nullopt;
    return static_cast<T>(bits);
  }
};

Int int_at(GgufValueType t, const uint8_t* p) {
  auto s = [](int64_t v) { return Int{v < 0, static_cast<uint64_t>(v)}; };
  switch (t) {
    case GgufValueType::UINT8: return {false, load<uint8_t>(p)};
    case GgufValueType::INT8: return s(load<int8_t>(p));
    case GgufValueType::UINT16: return {false, load<uint16_t>(p)};
    case GgufValueType::INT16: return s(load<int16_t>(p));
    case GgufValueType::UINT32: return {false, load<uint32_t>(p)};
    case GgufValueType::INT32: return s(load<int32_t>(p));
    case GgufValueType::UINT64: return {false, load<uint64_t>(p)};
    case GgufValueType::INT64: return s(load<int64_t>(p));
    default: return {false, 0};
  }
}

double float_at(GgufValueType t, const uint8_t* p) {
  return t == GgufValueType::FLOAT32 ? load<float>(p) : load<double>(p);
}

std::string format_double(double v, bool as_float) {
  char buf[64];
  auto r = as_float ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(v))
                    : std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// Quoted, control characters escaped, long strings cut (at a UTF-8 boundary).
std::string quote(std::string_view s) {
  constexpr size_t kMax = 80;
  bool cut = false;
  if (s.size() > kMax) {
    size_t n = kMax;
    while (n > 0 && (static_cast<uint8_t>(s[n]) & 0xC0) == 0x80) --n;
    s = s.substr(0, n);
    cut = true;
  }
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<uint8_t>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += cut ? "\"..." : "\"";
  return out;
}

// Bounds-checked reader over (data, size). Descriptions of fields are callables so that the
// message text is only built when something is wrong.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& name) : data_(data), size_(size), name_(name) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  [[noreturn]] void fail(uint64_t at, const std::string& what) const {
    throw Error(name_ + ": byte " + std::to_string(at) + ": " + what);
  }

  template <class F>
  void need(uint64_t n, F&& what, uint64_t at) const {
    if (n > left())
      fail(at, "file ends at byte " + std::to_string(size_) + " while " + std::to_string(n) +
                   " bytes were needed (from byte " + std::to_string(pos_) + ") for " + what());
  }

  template <class T, class F>
  T read(F&& what) {
    need(sizeof(T), what, pos_);
    T v = load<T>(data_ + pos_);
    pos_ += sizeof(T);
    return v;
  }

  template <class F>
  void skip(uint64_t n, F&& what, uint64_t at) {
    need(n, what, at);
    pos_ += n;
  }

  // A GGUF string: u64 length + bytes. Errors point at the length field.
  template <class F>
  std::string_view read_string(F&& what) {
    const uint64_t at = pos_;
    const auto n = read<uint64_t>([&] { return "the length of " + what(); });
    need(n, what, at);
    std::string_view s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& name_;
};

std::string type_desc(GgufValueType t, GgufValueType elem) {
  return t == GgufValueType::ARRAY ? "array of " + gguf_type_name(elem) : gguf_type_name(t);
}

std::string shape_str(const int64_t* ne, uint32_t n) {
  std::string s = "{";
  for (uint32_t i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "}";
}

}  // namespace

std::string gguf_type_name(GgufValueType t) {
  static constexpr const char* kNames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                           "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i <= kMaxValueType ? kNames[i] : "type " + std::to_string(i);
}

const char* ggml_type_name(uint32_t type) {
  // GGML's type table (ggml.h), including ids that were later removed.
  static constexpr const char* kNames[] = {
      "f32",     "f16",     "q4_0",    "q4_1",     "q4_2",       "q4_3",       "q5_0",       "q5_1",
      "q8_0",    "q8_1",    "q2_K",    "q3_K",     "q4_K",       "q5_K",       "q6_K",       "q8_K",
      "iq2_xxs", "iq2_xs",  "iq3_xxs", "iq1_s",    "iq4_nl",     "iq3_s",      "iq2_s",      "iq4_xs",
      "i8",      "i16",     "i32",     "i64",      "f64",        "iq1_m",      "bf16",       "q4_0_4_4",
      "q4_0_4_8", "q4_0_8_8", "tq1_0", "tq2_0",    "iq4_nl_4_4", "iq4_nl_4_8", "iq4_nl_8_8", "mxfp4"};
  return type < std::size(kNames) ? kNames[type] : nullptr;
}

namespace {
// The tensor types pocketmoe computes with, in GGML id order.
constexpr uint32_t kSupportedTypes[] = {
    PMOE_DTYPE_F32,  PMOE_DTYPE_F16,  PMOE_DTYPE_Q4_0, PMOE_DTYPE_Q4_1, PMOE_DTYPE_Q5_0,   PMOE_DTYPE_Q5_1,
    PMOE_DTYPE_Q8_0, PMOE_DTYPE_Q2_K, PMOE_DTYPE_Q3_K, PMOE_DTYPE_Q4_K, PMOE_DTYPE_Q5_K,   PMOE_DTYPE_Q6_K,
    PMOE_DTYPE_IQ4_NL, PMOE_DTYPE_IQ4_XS, PMOE_DTYPE_BF16};
}  // namespace

bool gguf_type_supported(uint32_t type) {
  return std::find(std::begin(kSupportedTypes), std::end(kSupportedTypes), type) != std::end(kSupportedTypes);
}

std::string gguf_supported_types() {
  std::string s;
  for (uint32_t t : kSupportedTypes) s += (s.empty() ? "" : ", ") + std::string(pmoe_dtype_name(t));
  return s;
}

std::string llama_ftype_name(uint32_t ftype) {
  // llama.h's llama_ftype; 1024 marks a type guessed from the tensors
  static const std::map<uint32_t, const char*> kNames = {
      {0, "all F32"},           {1, "F16"},           {2, "Q4_0"},           {3, "Q4_1"},
      {7, "Q8_0"},              {8, "Q5_0"},          {9, "Q5_1"},           {10, "Q2_K - Medium"},
      {11, "Q3_K - Small"},     {12, "Q3_K - Medium"}, {13, "Q3_K - Large"},  {14, "Q4_K - Small"},
      {15, "Q4_K - Medium"},    {16, "Q5_K - Small"}, {17, "Q5_K - Medium"}, {18, "Q6_K"},
      {19, "IQ2_XXS - 2.0625 bpw"}, {20, "IQ2_XS - 2.3125 bpw"}, {21, "Q2_K - Small"},
      {22, "IQ3_XS - 3.3 bpw"}, {23, "IQ3_XXS - 3.0625 bpw"}, {24, "IQ1_S - 1.5625 bpw"},
      {25, "IQ4_NL - 4.5 bpw"}, {26, "IQ3_S - 3.4375 bpw"}, {27, "IQ3_S mix - 3.66 bpw"},
      {28, "IQ2_S - 2.5 bpw"},  {29, "IQ2_M - 2.7 bpw"}, {30, "IQ4_XS - 4.25 bpw"},
      {31, "IQ1_M - 1.75 bpw"}, {32, "BF16"},         {36, "TQ1_0 - 1.69 bpw ternary"},
      {37, "TQ2_0 - 2.06 bpw ternary"}, {38, "MXFP4 MoE"}};
  const auto it = kNames.find(ftype & ~1024u);
  if (it == kNames.end()) return "unknown (" + std::to_string(ftype) + ")";
  return std::string(it->second) + (ftype & 1024u ? " (guessed)" : "");
}

uint64_t GgufTensorInfo::n_elements() const {
  // Validated at load time not to overflow.
  return static_cast<uint64_t>(ne[0]) * static_cast<uint64_t>(ne[1]) * static_cast<uint64_t>(ne[2]) *
         static_cast<uint64_t>(ne[3]);
}

// ---------------------------------------------------------------------------------------------
// Opening

namespace {
/// The whole file in anonymous memory that asks for transparent huge pages, read-only once read.
/// Throws Error naming the file (and the byte offset where a read failed); closes nothing. The
/// file's pages stay in the page cache (reclaimable; a second run reads them from there).
void* read_whole(int fd, const std::string& path, size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    const int e = errno;
    throw Error(path + ": cannot allocate " + std::to_string(size) + " bytes to read it into: " + std::strerror(e));
  }
  ::madvise(p, size, MADV_HUGEPAGE);  // a hint: without THP the pages are just smaller
  auto fail = [&](const std::string& what) {
    ::munmap(p, size);
    throw Error(path + ": " + what);
  };
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::pread(fd, static_cast<uint8_t*>(p) + done, std::min<size_t>(size - done, size_t(1) << 30), off_t(done));
    const int e = errno;
    if (n > 0) {
      done += size_t(n);
      continue;
    }
    if (n < 0 && e == EINTR) continue;
    fail("read failed at byte offset " + std::to_string(done) + ": " + (n == 0 ? "the file ended early" : std::strerror(e)));
  }
  if (::mprotect(p, size, PROT_READ) != 0) {
    const int e = errno;
    fail(std::string("cannot make the weights read-only: ") + std::strerror(e));
  }
  return p;
}
}  // namespace

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path, GgufLoad how) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below)
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);  // (only for the FIFO check: reads block)
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0 && how == GgufLoad::read) {
    try {
      f->data_ = static_cast<const uint8_t*>(read_whole(fd, path, f->size_));
    } catch (...) {
      ::close(fd);
      throw;
    }
    f->mapped_ = true;  // (munmap frees it too)
  } else if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw Error(path + ": cannot map " + std::to_string(f->size_) + " bytes: " + std::strerror(e));
    }
    f->data_ = static_cast<const uint8_t*>(p);
    f->mapped_ = true;
  }
  ::close(fd);  // the mapping keeps the file alive
  f->parse();
  return f;
}

std::unique_ptr<GgufFile> GgufFile::from_memory(const uint8_t* data, size_t size, std::string name) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = std::move(name);
  f->data_ = data;
  f->size_ = data ? size : 0;
  f->parse();
  return f;
}

GgufFile::~GgufFile() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void GgufFile::parse() {
  Cursor c(data_, size_, path_);

  // --- header
  c.need(4, [] { return std::string("the magic 'GGUF'"); }, 0);
  if (std::memcmp(data_, "GGUF", 4) != 0) {
    std::string shown;
    for (int i = 0; i < 4; ++i) shown += std::isprint(data_[i]) ? static_cast<char>(data_[i]) : '.';
    c.fail(0, "not a GGUF file: the magic is '" + shown + "', expected 'GGUF'");
  }
  c.skip(4, [] { return std::string(); }, 0);
  version_ = c.read<uint32_t>([] { return std::string("the version"); });
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped >= 1 && swapped <= 3)
      c.fail(4, "big-endian GGUF (version field " + std::to_string(version_) +
                    ") is not supported; supported: little-endian GGUF versions 2 and 3");
    c.fail(4, "unsupported GGUF version " + std::to_string(version_) + "; supported versions: 2 and 3" +
                  (version_ == 1 ? " (version 1 used 32-bit counts)" : ""));
  }
  const auto n_tensors = c.read<uint64_t>([] { return std::string("the tensor count"); });
  const auto n_kv = c.read<uint64_t>([] { return std::string("the metadata count"); });
  // Bound the counts by the file size before trusting them (they size allocations).
  auto too_many = [&](uint64_t at, uint64_t n, uint64_t min_bytes, const char* what) {
    if (n > c.left() / min_bytes)
      c.fail(at, "file ends at byte " + std::to_string(size_) + ", too early for the " + std::to_string(n) + " " +
                     what + " the header announces (at least " + std::to_string(min_bytes) + " bytes each)");
  };
  too_many(8, n_tensors, kMinTensorBytes, "tensor infos");
  too_many(16, n_kv, kMinKvBytes, "metadata entries");

  // --- metadata
  kvs_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    const uint64_t key_at = c.pos();
    const std::string_view key = c.read_string([&] { return "the key of metadata entry #" + std::to_string(i); });
    if (key.empty()) c.fail(key_at, "metadata entry #" + std::to_string(i) + " has an empty key");
    if (auto it = kv_index_.find(key); it != kv_index_.end())
      c.fail(key_at, "duplicate metadata key '" + std::string(key) + "'");
    const std::string k(key);
    auto what = [&](const char* field) { return [&k, field] { return std::string(field) + " of metadata key '" + k + "'"; }; };

    KvEntry e{k, GgufValueType::UINT8, GgufValueType::UINT8, 0, c.pos(), 0, 0};
    const auto t = c.read<uint32_t>(what("the value type"));
    if (t > kMaxValueType)
      c.fail(e.tag_offset, "metadata key '" + k + "' has invalid value type " + std::to_string(t) + " (valid: 0..12)");
    e.type = static_cast<GgufValueType>(t);

    GgufValueType vt = e.type;
    uint64_t count = 1;
    if (e.type == GgufValueType::ARRAY) {
      const uint64_t et_at = c.pos();
      const auto et = c.read<uint32_t>(what("the array element type"));
      if (et == static_cast<uint32_t>(GgufValueType::ARRAY))
        c.fail(et_at, "metadata key '" + k + "' is an array of arrays; nested arrays are not supported");
      if (et > kMaxValueType)
        c.fail(et_at, "metadata key '" + k + "' has invalid array element type " + std::to_string(et) +
                          " (valid: 0..8, 10..12)");
      vt = e.elem_type = static_cast<GgufValueType>(et);
      const uint64_t count_at = c.pos();
      count = e.count = c.read<uint64_t>(what("the array length"));
      const uint64_t min_size = vt == GgufValueType::STRING ? 8 : fixed_size(vt);
      if (count > c.left() / min_size)
        c.fail(count_at, "metadata key '" + k + "' is an array of " + std::to_string(count) + " " +
                             gguf_type_name(vt) + " values (at least " + std::to_string(min_size) +
                             " bytes each), but the file ends at byte " + std::to_string(size_));
    }
    e.value_offset = c.pos();
    if (vt == GgufValueType::STRING) {
      for (uint64_t j = 0; j < count; ++j)
        c.read_string([&] {
          return e.type == GgufValueType::ARRAY ? "element " + std::to_string(j) + " of metadata key '" + k + "'"
                                                : "the value of metadata key '" + k + "'";
        });
    } else {
      const uint64_t n = count * fixed_size(vt);  // bounded by the file size above
      c.skip(n, what("the value"), c.pos());
      if (vt == GgufValueType::BOOL)
        for (uint64_t j = 0; j < count; ++j)
          if (data_[e.value_offset + j] > 1)
            c.fail(e.value_offset + j, "metadata key '" + k + "' has bool value " +
                                           std::to_string(data_[e.value_offset + j]) + " (must be 0 or 1)");
    }
    e.end_offset = c.pos();
    kv_index_.emplace(k, kvs_.size());
    kvs_.push_back(std::move(e));
  }

  // --- alignment
  if (has("general.alignment")) {
    const uint32_t a = get_u32("general.alignment");
    if (a == 0 || (a & (a - 1)) != 0)
      key_error("general.alignment", "value " + std::to_string(a) + " is not a power of two");
    alignment_ = a;
  }

  // --- tensor directory
  struct Pending {
    uint64_t rel;        // offset relative to the data section
    uint64_t offset_at;  // where the offset field is
  };
  std::vector<Pending> pending;
  pending.reserve(n_tensors);
  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const uint64_t name_at = c.pos();
    const std::string_view name = c.read_string([&] { return "the name of tensor #" + std::to_string(i); });
    if (name.empty()) c.fail(name_at, "tensor #" + std::to_string(i) + " has an empty name");
    if (tensor_index_.count(name)) c.fail(name_at, "duplicate tensor name '" + std::string(name) + "'");
    GgufTensorInfo t;
    t.name = name;
    const std::string tn = "tensor '" + t.name + "'";
    auto what = [&tn](const char* field) { return [&tn, field] { return std::string(field) + " of " + tn; }; };

    const uint64_t nd_at = c.pos();
    t.n_dims = c.read<uint32_t>(what("n_dims"));
    if (t.n_dims < 1 || t.n_dims > 4)
      c.fail(nd_at, tn + " has n_dims " + std::to_string(t.n_dims) + " (must be 1..4)");
    const uint64_t ne_at = c.pos();
    uint64_t n_el = 1;
    for (uint32_t d = 0; d < t.n_dims; ++d) {
      const uint64_t at = c.pos();
      t.ne[d] = c.read<int64_t>(what("the shape"));
      if (t.ne[d] < 0) c.fail(at, tn + " has negative ne[" + std::to_string(d) + "] = " + std::to_string(t.ne[d]));
    }
    for (uint32_t d = 0; d < t.n_dims; ++d)
      if (__builtin_mul_overflow(n_el, static_cast<uint64_t>(t.ne[d]), &n_el) ||
          n_el > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        c.fail(ne_at, tn + " has shape " + shape_str(t.ne, t.n_dims) + " whose element count overflows");

    const uint64_t type_at = c.pos();
    t.type = c.read<uint32_t>(what("the type"));
    if (!gguf_type_supported(t.type)) {
      const char* gn = ggml_type_name(t.type);
      if (!gn) c.fail(type_at, tn + " has unknown type id " + std::to_string(t.type));
      throw Error(path_ + ": " + tn + " has type " + gn + " (id " + std::to_string(t.type) +
                  "), which pocketmoe does not support; supported: " + gguf_supported_types());
    }
    const uint32_t be = pmoe_dtype_block_elems(t.type);
    if (t.ne[0] % be != 0)
      c.fail(ne_at, tn + ": ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                        pmoe_dtype_name(t.type) + " block size " + std::to_string(be));
    if (__builtin_mul_overflow(n_el / be, uint64_t{pmoe_dtype_block_bytes(t.type)}, &t.size))
      c.fail(ne_at, tn + " has shape " + shape_str(t.ne, t.n_dims) + " whose byte size overflows");

    const uint64_t off_at = c.pos();
    const auto rel = c.read<uint64_t>(what("the data offset"));
    if (rel % alignment_ != 0)
      c.fail(off_at, tn + " has data offset " + std::to_string(rel) + ", which is not a multiple of the alignment " +
                         std::to_string(alignment_));
    pending.push_back({rel, off_at});
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // --- data section: starts at the next multiple of the alignment
  const uint64_t pad = (alignment_ - c.pos() % alignment_) % alignment_;
  data_offset_ = c.pos() + pad;  // pos <= size, pad < 2^32: no overflow
  if (!tensors_.empty() && data_offset_ > size_)
    c.fail(c.pos(), "file ends at byte " + std::to_string(size_) + " while the tensor data section should start at byte " +
                        std::to_string(data_offset_));
  const uint64_t data_bytes = data_offset_ <= size_ ? size_ - data_offset_ : 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensorInfo& t = tensors_[i];
    const uint64_t rel = pending[i].rel;
    if (rel > data_bytes || t.size > data_bytes - rel)
      c.fail(pending[i].offset_at,
             "tensor '" + t.name + "' data (" + std::to_string(t.size) + " bytes at data offset " + std::to_string(rel) +
                 ") extends past the end of the file: the data section has only " + std::to_string(data_bytes) +
                 " bytes (file ends at byte " + std::to_string(size_) + ")");
    t.offset = data_offset_ + rel;
  }
  // Overlaps: sorted by start, any overlap shows up between neighbours. Empty tensors overlap nothing.
  std::vector<size_t> order;
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (tensors_[i].size > 0) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    const GgufTensorInfo& a = tensors_[order[i - 1]];
    const GgufTensorInfo& b = tensors_[order[i]];
    if (a.offset + a.size > b.offset)
      c.fail(pending[order[i]].offset_at, "tensor '" + b.name + "' (bytes " + std::to_string(b.offset) + ".." +
                                              std::to_string(b.offset + b.size) + ") overlaps tensor '" + a.name +
                                              "' (bytes " + std::to_string(a.offset) + ".." +
                                              std::to_string(a.offset + a.size) + ")");
  }
}

// ---------------------------------------------------------------------------------------------
// Metadata access (all offsets were validated by parse())

const GgufFile::KvEntry* GgufFile::find_entry(std::string_view key) const {
  const auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second];
}

const GgufFile::KvEntry& GgufFile::entry(std::string_view key) const {
  const KvEntry* e = find_entry(key);
  if (!e) key_error(key, "missing");
  return *e;
}

void GgufFile::key_error(std::string_view key, const std::string& what) const {
  throw Error(path_ + ": metadata key '" + std::string(key) + "': " + what);
}

bool GgufFile::has(std::string_view key) const { return find_entry(key) != nullptr; }

std::vector<std::string> GgufFile::keys() const {
  std::vector<std::string> out;
  out.reserve(kvs_.size());
  for (const KvEntry& e : kvs_) out.push_back(e.key);
  return out;
}

GgufValueType GgufFile::type_of(std::string_view key) const { return entry(key).type; }

GgufValueType GgufFile::array_type_of(std::string_view key) const {
  const KvEntry& e = entry(key);
  if (e.type != GgufValueType::ARRAY) key_error(key, "has type " + type_desc(e.type, e.elem_type) + ", expected an array");
  return e.elem_type;
}

uint64_t GgufFile::array_size(std::string_view key) const {
  array_type_of(key);
  return entry(key).count;
}

namespace {
template <class T>
constexpr const char* int_name() {
  if constexpr (std::is_same_v<T, uint32_t>) return "u32";
  else if constexpr (std::is_same_v<T, int32_t>) return "i32";
  else if constexpr (std::is_same_v<T, uint64_t>) return "u64";
  else return "i64";
}
}  // namespace

#define PMOE_GGUF_INT_GETTER(T, fn)                                                                  \
  T GgufFile::fn(std::string_view key) const {                                                       \
    const KvEntry& e = entry(key);                                                                   \
    if (!is_int(e.type)) key_error(key, "has type " + type_desc(e.type, e.elem_type) + ", expected an integer");       \
    const Int v = int_at(e.type, data_ + e.value_offset);                                            \
    const auto r = v.as<T>();                                                                        \
    if (!r) key_error(key, "value " + v.str() + " does not fit in " + int_name<T>());                \
    return *r;                                                                                       \
  }
PMOE_GGUF_INT_GETTER(uint32_t, get_u32)
PMOE_GGUF_INT_GETTER(int32_t, get_i32)
PMOE_GGUF_INT_GETTER(uint64_t, get_u64)
PMOE_GGUF_INT_GETTER(int64_t, get_i64)
#undef PMOE_GGUF_INT_GETTER

std::optional<uint32_t> GgufFile::get_u32_opt(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return get_u32(key);
}

double GgufFile::get_f64(std::string_view key) const {
  const KvEntry& e = entry(key);
  if (!is_float(e.type)) key_error(key, "has type " + type_desc(e.type, e.elem_type) + ", expected f32 or f64");
  return float_at(e.type, data_ + e.value_offset);
}

float GgufFile::get_f32(std::string_view key) const {
  const double v = get_f64(key);
  if (std::isfinite(v) && std::fabs(v) > std::numeric_limits<float>::max())
    key_error(key, "value " + format_double(v, false) + " does not fit in f32");
  return static_cast<float>(v);
}

std::optional<float> GgufFile::get_f32_opt(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return get_f32(key);
}

bool GgufFile::get_bool(std::string_view key) const {
  const KvEntry& e = entry(key);
  if (e.type != GgufValueType::BOOL) key_error(key, "has type " + type_desc(e.type, e.elem_type) + ", expected bool");
  return data_[e.value_offset] != 0;
}

std::optional<bool> GgufFile::get_bool_opt(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return get_bool(key);
}

std::string GgufFile::get_string(std::string_view key) const {
  const KvEntry& e = entry(key);
  if (e.type != GgufValueType::STRING) key_error(key, "has type " + type_desc(e.type, e.elem_type) + ", expected string");
  const auto n = load<uint64_t>(data_ + e.value_offset);
  return std::string(reinterpret_cast<const char*>(data_ + e.value_offset + 8), n);
}

std::optional<std::string> GgufFile::get_string_opt(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return get_string(key);
}

std::vector<std::string_view> GgufFile::get_string_view_array(std::string_view key) const {
  const KvEntry& e = entry(key);
  if (e.type != GgufValueType::ARRAY || e.elem_type != GgufValueType::STRING)
    key_error(key, "has type " + type_desc(e.type, e.elem_type) + ", expected an array of strings");
  std::vector<std::string_view> out;
  out.reserve(e.count);
  uint64_t p = e.value_offset;
  for (uint64_t j = 0; j < e.count; ++j) {
    const auto n = load<uint64_t>(data_ + p);
    out.emplace_back(reinterpret_cast<const char*>(data_ + p + 8), n);
    p += 8 + n;
  }
  return out;
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const auto views = get_string_view_array(key);
  return std::vector<std::string>(views.begin(), views.end());
}

std::vector<int32_t> GgufFile::get_i32_array(std::string_view key) const {
  const KvEntry& e = entry(key);
  if (e.type != GgufValueType::ARRAY || !is_int(e.elem_type))
    key_error(key, "has type " + type_desc(e.type, e.elem_type) + ", expected an array of integers");
  const uint64_t es = fixed_size(e.elem_type);
  std::vector<int32_t> out(e.count);
  for (uint64_t j = 0; j < e.count; ++j) {
    const Int v = int_at(e.elem_type, data_ + e.value_offset + j * es);
    const auto r = v.as<int32_t>();
    if (!r) key_error(key, "element " + std::to_string(j) + " = " + v.str() + " does not fit in i32");
    out[j] = *r;
  }
  return out;
}

std::vector<float> GgufFile::get_f32_array(std::string_view key) const {
  const KvEntry& e = entry(key);
  if (e.type != GgufValueType::ARRAY || !is_float(e.elem_type))
    key_error(key, "has type " + type_desc(e.type, e.elem_type) + ", expected an array of f32 or f64");
  const uint64_t es = fixed_size(e.elem_type);
  std::vector<float> out(e.count);
  for (uint64_t j = 0; j < e.count; ++j)
    out[j] = static_cast<float>(float_at(e.elem_type, data_ + e.value_offset + j * es));
  return out;
}

std::string GgufFile::value_summary(std::string_view key) const {
  const KvEntry& e = entry(key);
  // One value of type t at p; returns the text and the encoded size.
  auto one = [&](GgufValueType t, uint64_t p) -> std::pair<std::string, uint64_t> {
    if (is_int(t)) return {int_at(t, data_ + p).str(), fixed_size(t)};
    if (is_float(t)) return {format_double(float_at(t, data_ + p), t == GgufValueType::FLOAT32), fixed_size(t)};
    if (t == GgufValueType::BOOL) return {data_[p] ? "true" : "false", 1};
    const auto n = load<uint64_t>(data_ + p);  // STRING
    return {quote(std::string_view(reinterpret_cast<const char*>(data_ + p + 8), n)), 8 + n};
  };
  if (e.type != GgufValueType::ARRAY) return one(e.type, e.value_offset).first;
  constexpr uint64_t kAll = 8, kHead = 3;  // short arrays in full, long ones by their head
  const uint64_t shown = e.count <= kAll ? e.count : kHead;
  std::string s = "[";
  uint64_t p = e.value_offset;
  for (uint64_t j = 0; j < shown; ++j) {
    auto [text, n] = one(e.elem_type, p);
    s += (j ? ", " : "") + text;
    p += n;
  }
  if (shown < e.count) s += ", ... (" + std::to_string(e.count) + " items)";
  return s + "]";
}

std::span<const uint8_t> GgufFile::raw_value(std::string_view key) const {
  const KvEntry& e = entry(key);
  return {data_ + e.tag_offset, e.end_offset - e.tag_offset};
}

// ---------------------------------------------------------------------------------------------
// Tensors

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* GgufFile::tensor_data(const GgufTensorInfo& t) const {
  // t may come from elsewhere; never hand out a pointer past the mapping.
  if (t.offset > size_ || t.size > size_ - t.offset)
    throw Error(path_ + ": tensor '" + t.name + "' data (" + std::to_string(t.size) + " bytes at byte " +
                std::to_string(t.offset) + ") lies outside the file");
  return data_ + t.offset;
}

}  // namespace pmoe
