#include "gguf/gguf_writer.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include <pocketmoe/dtype.h>

#include "common/error.hpp"
#include "common/interrupt.hpp"

namespace pmoe {

namespace {

// resize + memcpy rather than vector::insert, which trips GCC 12's -Wstringop-overflow at -O3.
void put_bytes(std::vector<uint8_t>& b, const void* p, size_t n) {
  if (n == 0) return;
  const size_t old = b.size();
  b.resize(old + n);
  std::memcpy(b.data() + old, p, n);
}

template <class T>
void put(std::vector<uint8_t>& b, T v) {
  put_bytes(b, &v, sizeof v);
}

void put_string(std::vector<uint8_t>& b, std::string_view s) {
  put<uint64_t>(b, s.size());
  put_bytes(b, s.data(), s.size());
}

void put_type(std::vector<uint8_t>& b, GgufValueType t) { put(b, static_cast<uint32_t>(t)); }

template <class T>
std::vector<uint8_t> scalar(GgufValueType t, T v) {
  std::vector<uint8_t> b;
  put_type(b, t);
  put(b, v);
  return b;
}

uint64_t pad_to(uint64_t n, uint64_t a) { return (a - n % a) % a; }

// Closes and removes the temporary file unless released.
struct TmpFile {
  std::FILE* f = nullptr;
  std::string path;
  ~TmpFile() {
    if (f) {
      std::fclose(f);
      std::remove(path.c_str());
    }
  }
};

}  // namespace

void GgufWriter::set_alignment(uint32_t a) {
  if (a == 0 || (a & (a - 1)) != 0) throw Error("GgufWriter: alignment " + std::to_string(a) + " is not a power of two");
  alignment_ = a;
}

void GgufWriter::add_kv(std::string key, std::vector<uint8_t> value) {
  if (key.empty()) throw Error("GgufWriter: empty metadata key");
  if (key == "general.alignment") throw Error("GgufWriter: use set_alignment() for 'general.alignment'");
  if (!keys_.insert(key).second) throw Error("GgufWriter: duplicate metadata key '" + key + "'");
  kvs_.push_back({std::move(key), std::move(value)});
}

void GgufWriter::add_u8(std::string key, uint8_t v) { add_kv(std::move(key), scalar(GgufValueType::UINT8, v)); }
void GgufWriter::add_i8(std::string key, int8_t v) { add_kv(std::move(key), scalar(GgufValueType::INT8, v)); }
void GgufWriter::add_u16(std::string key, uint16_t v) { add_kv(std::move(key), scalar(GgufValueType::UINT16, v)); }
void GgufWriter::add_i16(std::string key, int16_t v) { add_kv(std::move(key), scalar(GgufValueType::INT16, v)); }
void GgufWriter::add_u32(std::string key, uint32_t v) { add_kv(std::move(key), scalar(GgufValueType::UINT32, v)); }
void GgufWriter::add_i32(std::string key, int32_t v) { add_kv(std::move(key), scalar(GgufValueType::INT32, v)); }
void GgufWriter::add_u64(std::string key, uint64_t v) { add_kv(std::move(key), scalar(GgufValueType::UINT64, v)); }
void GgufWriter::add_i64(std::string key, int64_t v) { add_kv(std::move(key), scalar(GgufValueType::INT64, v)); }
void GgufWriter::add_f32(std::string key, float v) { add_kv(std::move(key), scalar(GgufValueType::FLOAT32, v)); }
void GgufWriter::add_f64(std::string key, double v) { add_kv(std::move(key), scalar(GgufValueType::FLOAT64, v)); }
void GgufWriter::add_bool(std::string key, bool v) {
  add_kv(std::move(key), scalar(GgufValueType::BOOL, static_cast<uint8_t>(v ? 1 : 0)));
}

void GgufWriter::add_string(std::string key, std::string v) {
  std::vector<uint8_t> b;
  put_type(b, GgufValueType::STRING);
  put_string(b, v);
  add_kv(std::move(key), std::move(b));
}

void GgufWriter::add_string_array(std::string key, std::vector<std::string> v) {
  std::vector<uint8_t> b;
  put_type(b, GgufValueType::ARRAY);
  put_type(b, GgufValueType::STRING);
  put<uint64_t>(b, v.size());
  for (const std::string& s : v) put_string(b, s);
  add_kv(std::move(key), std::move(b));
}

void GgufWriter::add_array(std::string key, GgufValueType elem, const void* data, uint64_t count) {
  uint64_t es = 0;
  switch (elem) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: es = 1; break;
    case GgufValueType::UINT16: case GgufValueType::INT16: es = 2; break;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: es = 4; break;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: es = 8; break;
    default: throw Error("GgufWriter: key '" + key + "': add_array needs a fixed-size element type");
  }
  std::vector<uint8_t> b;
  put_type(b, GgufValueType::ARRAY);
  put_type(b, elem);
  put<uint64_t>(b, count);
  put_bytes(b, data, count * es);
  add_kv(std::move(key), std::move(b));
}

void GgufWriter::add_i32_array(std::string key, std::vector<int32_t> v) {
  add_array(std::move(key), GgufValueType::INT32, v.data(), v.size());
}

void GgufWriter::add_f32_array(std::string key, std::vector<float> v) {
  add_array(std::move(key), GgufValueType::FLOAT32, v.data(), v.size());
}

void GgufWriter::copy_key(const GgufFile& from, std::string_view key) {
  if (key == "general.alignment") return set_alignment(from.get_u32(key));  // so "copy every key" just works
  const auto raw = from.raw_value(key);
  add_kv(std::string(key), std::vector<uint8_t>(raw.begin(), raw.end()));
}

void GgufWriter::add_raw(std::string key, std::vector<uint8_t> typed_value) {
  add_kv(std::move(key), std::move(typed_value));
}

void GgufWriter::add_tensor(std::string name, uint32_t type, std::vector<int64_t> ne, Fill fill) {
  const std::string where = "GgufWriter: tensor '" + name + "': ";
  if (ne.empty() || ne.size() > 4) throw Error(where + "needs 1..4 dimensions, got " + std::to_string(ne.size()));
  const uint32_t be = pmoe_dtype_block_elems(type);
  if (be == 0) throw Error(where + "unknown type id " + std::to_string(type));
  uint64_t n = 1;
  for (int64_t d : ne)
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n) ||
        n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(where + "invalid shape");
  if (ne[0] % be != 0)
    throw Error(where + "ne[0] = " + std::to_string(ne[0]) + " is not a multiple of the block size " + std::to_string(be));
  uint64_t size = 0;
  if (__builtin_mul_overflow(n / be, uint64_t{pmoe_dtype_block_bytes(type)}, &size))
    throw Error(where + "byte size overflows");
  add_raw_tensor(std::move(name), type, std::move(ne), size, std::move(fill));
}

void GgufWriter::add_raw_tensor(std::string name, uint32_t type, std::vector<int64_t> ne, uint64_t size, Fill fill) {
  if (name.empty()) throw Error("GgufWriter: empty tensor name");
  if (!names_.insert(name).second) throw Error("GgufWriter: duplicate tensor name '" + name + "'");
  tensors_.push_back({std::move(name), type, std::move(ne), size, std::move(fill)});
}

void GgufWriter::write(const std::string& path, Progress progress) const {
  // Header, metadata and tensor directory are built in memory; they are small.
  std::vector<uint8_t> head;
  put_bytes(head, "GGUF", 4);
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kvs_.size() + (alignment_ != 32 ? 1 : 0));
  if (alignment_ != 32) {
    put_string(head, "general.alignment");
    put_type(head, GgufValueType::UINT32);
    put<uint32_t>(head, alignment_);
  }
  for (const Kv& kv : kvs_) {
    put_string(head, kv.key);
    put_bytes(head, kv.value.data(), kv.value.size());
  }
  uint64_t data_size = 0, max_size = 0;
  for (const Tensor& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) put<int64_t>(head, d);
    put<uint32_t>(head, t.type);
    put<uint64_t>(head, data_size);
    data_size += t.size + pad_to(t.size, alignment_);
    max_size = std::max(max_size, t.size);
  }
  head.resize(head.size() + pad_to(head.size(), alignment_), 0);
  const uint64_t total = head.size() + data_size;

  TmpFile tmp;
  tmp.path = path + ".tmp";
  tmp.f = std::fopen(tmp.path.c_str(), "wb");
  if (!tmp.f) throw Error(tmp.path + ": cannot create: " + std::strerror(errno));
  auto put_bytes = [&](const uint8_t* p, uint64_t n) {
    if (n && std::fwrite(p, 1, n, tmp.f) != n) throw Error(tmp.path + ": write failed: " + std::strerror(errno));
  };
  put_bytes(head.data(), head.size());
  uint64_t done = head.size();
  if (progress) progress(done, total);

  std::vector<uint8_t> buf;
  buf.reserve(max_size + alignment_);
  for (const Tensor& t : tensors_) {
    throw_if_interrupted();  // TmpFile removes the partial file
    const uint64_t padded = t.size + pad_to(t.size, alignment_);
    buf.assign(padded, 0);
    if (t.fill) t.fill(buf.data(), t.size);
    put_bytes(buf.data(), padded);
    done += padded;
    if (progress) progress(done, total);
  }
  if (std::fflush(tmp.f) != 0 || std::ferror(tmp.f)) throw Error(tmp.path + ": write failed: " + std::strerror(errno));
  std::FILE* f = tmp.f;
  tmp.f = nullptr;
  if (std::fclose(f) != 0) {
    const int e = errno;
    std::remove(tmp.path.c_str());
    throw Error(tmp.path + ": close failed: " + std::strerror(e));
  }
  if (std::rename(tmp.path.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.path.c_str());
    throw Error(path + ": cannot rename " + tmp.path + " to it: " + std::strerror(e));
  }
}

}  // namespace pmoe
