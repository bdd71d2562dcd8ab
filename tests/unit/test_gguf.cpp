// GGUF reader/writer: fixture facts, writer round trip, and a corruption corpus that must always
// end in pmoe::Error with a message saying where (never a crash or an out-of-bounds read).
#include <algorithm>
#include <doctest/doctest.h>

#include <pocketmoe/dtype.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "gguf/gguf.hpp"
#include "gguf/gguf_writer.hpp"
#include "model/model.hpp"

namespace fs = std::filesystem;
using namespace pmoe;

namespace {

using Bytes = std::vector<uint8_t>;

std::string fixture(const std::string& rel) { return std::string(PMOE_FIXTURES_DIR) + "/" + rel; }

fs::path tmp_dir() {
  const fs::path d = fs::path(PMOE_BUILD_DIR) / "test_gguf_tmp";
  fs::create_directories(d);
  return d;
}

Bytes read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE(f);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

// Deterministic tensor contents.
void pattern_fill(const std::string& name, uint8_t* dst, uint64_t size) {
  uint32_t h = 2166136261u;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  for (uint64_t i = 0; i < size; ++i) dst[i] = static_cast<uint8_t>((h >> (i % 4 * 8)) + i * 31);
}

template <class T>
void poke(Bytes& b, size_t at, T v) {
  REQUIRE(at + sizeof v <= b.size());
  std::memcpy(b.data() + at, &v, sizeof v);
}

template <class T>
T peek(const Bytes& b, size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

// Parses a copy in an exactly sized heap block, so ASan sees any read past the end, and touches
// everything the parsed file exposes while the bytes exist.
void parse_exact(const Bytes& b, size_t n, const std::string& name) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[n ? n : 1]);
  if (n) std::memcpy(copy.get(), b.data(), n);
  auto f = GgufFile::from_memory(copy.get(), n, name);
  for (const std::string& k : f->keys()) (void)f->value_summary(k);
  uint64_t sum = 0;
  for (const GgufTensorInfo& t : f->tensors()) {
    const uint8_t* p = f->tensor_data(t);
    if (t.size) sum += p[0] + p[t.size - 1];
  }
  (void)sum;
}

// Returns the error message, or "" if the bytes parsed fine.
std::string parse_error(const Bytes& b, size_t n, const std::string& name) {
  try {
    parse_exact(b, n, name);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The pmoe::Error message of fn(), or "" if it did not throw.
template <class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

bool message_ok(const std::string& msg, const std::string& name) {
  return msg.rfind(name + ": ", 0) == 0 &&
         (msg.find("byte ") != std::string::npos || msg.find("tensor '") != std::string::npos ||
          msg.find("key '") != std::string::npos);
}

// Must throw pmoe::Error whose message names the file, says where, and contains `expect`.
void expect_error(const Bytes& b, const std::string& name, const std::string& expect, const std::string& what) {
  INFO(what);
  const std::string msg = parse_error(b, b.size(), name);
  INFO("message: " << msg);
  CHECK(!msg.empty());
  CHECK(message_ok(msg, name));
  if (!expect.empty()) CHECK(msg.find(expect) != std::string::npos);
}

// Field positions of a valid file (a trusted walker, independent of the reader).
struct Layout {
  struct Kv {
    std::string key;
    size_t len_at, type_at, elem_at = 0, count_at = 0, value_at;
    GgufValueType type, elem = GgufValueType::UINT8;
  };
  struct Tensor {
    std::string name;
    size_t len_at, n_dims_at, ne_at, type_at, offset_at;
    uint32_t n_dims, type;
  };
  std::vector<Kv> kvs;
  std::vector<Tensor> tensors;
  size_t infos_end = 0;
};

Layout walk(const Bytes& b) {
  Layout l;
  size_t p = 24;
  auto fixed = [](GgufValueType t) -> size_t {
    switch (t) {
      case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
      case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
      case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
      default: return 4;
    }
  };
  auto str = [&](size_t& q) {
    const auto n = peek<uint64_t>(b, q);
    std::string s(reinterpret_cast<const char*>(b.data() + q + 8), n);
    q += 8 + n;
    return s;
  };
  const auto n_tensors = peek<uint64_t>(b, 8), n_kv = peek<uint64_t>(b, 16);
  for (uint64_t i = 0; i < n_kv; ++i) {
    Layout::Kv kv;
    kv.len_at = p;
    kv.key = str(p);
    kv.type_at = p;
    kv.type = static_cast<GgufValueType>(peek<uint32_t>(b, p));
    p += 4;
    uint64_t count = 1;
    GgufValueType vt = kv.type;
    if (kv.type == GgufValueType::ARRAY) {
      kv.elem_at = p;
      vt = kv.elem = static_cast<GgufValueType>(peek<uint32_t>(b, p));
      kv.count_at = p + 4;
      count = peek<uint64_t>(b, p + 4);
      p += 12;
    }
    kv.value_at = p;
    for (uint64_t j = 0; j < count; ++j) {
      if (vt == GgufValueType::STRING) str(p);
      else p += fixed(vt);
    }
    l.kvs.push_back(kv);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    Layout::Tensor t;
    t.len_at = p;
    t.name = str(p);
    t.n_dims_at = p;
    t.n_dims = peek<uint32_t>(b, p);
    t.ne_at = p + 4;
    p += 4 + 8 * t.n_dims;
    t.type_at = p;
    t.type = peek<uint32_t>(b, p);
    t.offset_at = p + 4;
    p += 12;
    l.tensors.push_back(t);
  }
  l.infos_end = p;
  return l;
}

// A small file with every kind of structure the corruption tests poke at.
Bytes small_file(const fs::path& path, uint32_t alignment = 32) {
  GgufWriter w;
  w.set_alignment(alignment);
  w.add_string("general.architecture", "smallthinker");
  w.add_u32("smallthinker.block_count", 2);
  w.add_string_array("tokenizer.ggml.tokens", {"a", "bc", ""});
  w.add_i32_array("tokenizer.ggml.token_type", {1, 1, 3});
  w.add_bool("dup.key.a", true);
  w.add_f32("dup.key.b", 1e-6f);
  w.add_string("general.alignmenX", "64");  // same length as general.alignment, for patching
  auto fill = [](std::string n) { return [n](uint8_t* d, uint64_t s) { pattern_fill(n, d, s); }; };
  w.add_tensor("t.a", PMOE_DTYPE_F32, {4, 2}, fill("t.a"));
  w.add_tensor("t.b", PMOE_DTYPE_Q8_0, {64, 2}, fill("t.b"));
  w.add_tensor("t.c", PMOE_DTYPE_Q4_0, {64}, fill("t.c"));  // 36 bytes: the file ends in padding
  w.write(path.string());
  return read_all(path);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("gguf: fixture models open and hold the documented layout") {
  const char* models[] = {"st-a-f32", "st-a-q8_0", "st-a-q4_0", "st-b-f32", "st-a-swa8-f32"};
  for (const char* m : models) {
    INFO(m);
    const std::string path = fixture(std::string("models/") + m + ".gguf");
    auto f = GgufFile::open(path);
    CHECK(f->path() == path);
    CHECK(f->version() == 3);
    CHECK(f->alignment() == 32);
    CHECK(f->data_offset() % 32 == 0);
    CHECK(f->file_size() == fs::file_size(path));
    CHECK(f->get_string("general.architecture") == "smallthinker");
    CHECK(f->get_u32("smallthinker.embedding_length") == 128);
    CHECK(f->get_u32("smallthinker.expert_count") == 8);
    CHECK(f->get_u32("smallthinker.expert_used_count") == 2);
    CHECK(f->get_u32("smallthinker.context_length") == 32768);
    CHECK(f->get_f32("smallthinker.attention.layer_norm_rms_epsilon") == doctest::Approx(1e-6).epsilon(1e-3));
    CHECK(f->get_string("tokenizer.ggml.model") == "gpt2");
    CHECK(f->get_string("tokenizer.ggml.pre") == "qwen2");
    CHECK(f->array_size("tokenizer.ggml.tokens") == 2048);
    CHECK(f->get_string_array("tokenizer.ggml.tokens").size() == 2048);
    CHECK(f->get_string_array("tokenizer.ggml.tokens")[2046] == "<|im_start|>");
    CHECK(f->get_i32_array("tokenizer.ggml.token_type").size() == 2048);
    CHECK(f->get_u32("tokenizer.ggml.bos_token_id") == 2045);
    CHECK(f->get_u32("tokenizer.ggml.eos_token_id") == 2045);
    CHECK(f->value_summary("tokenizer.ggml.tokens").find("... (2048 items)]") != std::string::npos);
    CHECK(f->find_tensor("output.weight") == nullptr);

    const bool a = std::string(m).rfind("st-a", 0) == 0;
    const uint32_t n_layer = a ? 6 : 4;
    CHECK(f->get_u32("smallthinker.block_count") == n_layer);
    CHECK(f->tensors().size() == 2 + 10 * n_layer);
    CHECK(f->has("smallthinker.attention.sliding_window") == a);
    if (a) CHECK(f->get_u32("smallthinker.attention.sliding_window") == (std::string(m) == "st-a-swa8-f32" ? 8u : 4096u));
    CHECK(f->get_u32("smallthinker.expert_gating_func") == (a ? 1u : 2u));

    const uint32_t type = std::string(m) == "st-a-q8_0"   ? PMOE_DTYPE_Q8_0
                          : std::string(m) == "st-a-q4_0" ? PMOE_DTYPE_Q4_0
                                                          : PMOE_DTYPE_F32;
    const GgufTensorInfo* emb = f->find_tensor("token_embd.weight");
    REQUIRE(emb);
    CHECK(emb->type == type);
    CHECK(emb->n_dims == 2);
    CHECK((emb->ne[0] == 128 && emb->ne[1] == 2048 && emb->ne[2] == 1 && emb->ne[3] == 1));
    CHECK(emb->size == pmoe_dtype_row_bytes(type, 128) * 2048);
    CHECK(f->tensors()[0].name == "token_embd.weight");
    const GgufTensorInfo* up = f->find_tensor("blk.0.ffn_up_exps.weight");
    REQUIRE(up);
    CHECK(up->type == type);
    CHECK(up->n_dims == 3);
    CHECK((up->ne[0] == 128 && up->ne[1] == 64 && up->ne[2] == 8 && up->ne[3] == 1));
    CHECK(up->n_elements() == 128 * 64 * 8);
    const GgufTensorInfo* down = f->find_tensor("blk.3.ffn_down_exps.weight");
    REQUIRE(down);
    CHECK((down->ne[0] == 64 && down->ne[1] == 128 && down->ne[2] == 8));
    CHECK(f->find_tensor("blk.1.ffn_gate_inp.weight")->type == PMOE_DTYPE_F32);
    CHECK(f->find_tensor("blk.1.attn_norm.weight")->type == PMOE_DTYPE_F32);
    CHECK(f->find_tensor("blk.1.attn_k.weight")->ne[1] == 64);

    for (const GgufTensorInfo& t : f->tensors()) {
      CHECK((t.offset - f->data_offset()) % 32 == 0);
      CHECK(t.offset + t.size <= f->file_size());
      CHECK(f->tensor_data(t) == f->base() + t.offset);
    }
  }
  // Norm weights of f32 models are plausible floats (data really is where the offset says).
  auto f = GgufFile::open(fixture("models/st-a-f32.gguf"));
  const GgufTensorInfo* norm = f->find_tensor("output_norm.weight");
  float v[128];
  std::memcpy(v, f->tensor_data(*norm), sizeof v);
  for (float x : v) CHECK(std::isfinite(x));
}

TEST_CASE("gguf: tokenizer vocab file") {
  auto f = GgufFile::open(fixture("tokenizer/ggml-vocab-qwen2.gguf"));
  CHECK(f->get_string("general.architecture") == "qwen2");
  CHECK(f->get_string("tokenizer.ggml.model") == "gpt2");
  CHECK(f->array_size("tokenizer.ggml.tokens") == 151936);
  CHECK(f->array_type_of("tokenizer.ggml.tokens") == GgufValueType::STRING);
  const auto tokens = f->get_string_view_array("tokenizer.ggml.tokens");
  REQUIRE(tokens.size() == 151936);
  CHECK(tokens[151643] == "<|endoftext|>");
  CHECK(tokens[151645] == "<|im_end|>");
  CHECK(f->get_string_array("tokenizer.ggml.merges").size() == 151387);
  CHECK(f->get_u32("tokenizer.ggml.bos_token_id") == 151643);
  CHECK(f->tensors().empty());
  CHECK(f->value_summary("tokenizer.ggml.tokens").find(", ... (151936 items)]") != std::string::npos);
}

TEST_CASE("gguf: rewriting a fixture with copy_key reproduces it byte for byte") {
  for (const char* m : {"st-a-q4_0", "st-b-f32"}) {
    INFO(m);
    const std::string path = fixture(std::string("models/") + m + ".gguf");
    auto f = GgufFile::open(path);
    GgufWriter w;
    for (const std::string& k : f->keys()) w.copy_key(*f, k);
    for (const GgufTensorInfo& t : f->tensors()) {
      std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
      const uint8_t* src = f->tensor_data(t);
      w.add_tensor(t.name, t.type, ne, [src](uint8_t* d, uint64_t s) { std::memcpy(d, src, s); });
    }
    const fs::path out = tmp_dir() / (std::string(m) + ".copy.gguf");
    uint64_t last_done = 0, last_total = 1;
    w.write(out.string(), [&](uint64_t d, uint64_t t) {
      CHECK(d >= last_done);
      last_done = d;
      last_total = t;
    });
    CHECK(last_done == last_total);
    CHECK(read_all(out) == read_all(path));
    CHECK(!fs::exists(out.string() + ".tmp"));
  }
}

TEST_CASE("gguf: writer round trip of every value type and every supported tensor type") {
  for (uint32_t alignment : {32u, 1u, 64u, 4096u}) {
    INFO("alignment " << alignment);
    GgufWriter w;
    w.set_alignment(alignment);
    w.add_u8("v.u8", 200);
    w.add_i8("v.i8", -100);
    w.add_u16("v.u16", 60000);
    w.add_i16("v.i16", -30000);
    w.add_u32("v.u32", 4000000000u);
    w.add_i32("v.i32", -2000000000);
    w.add_u64("v.u64", uint64_t{1} << 60);
    w.add_i64("v.i64", -(int64_t{1} << 60));
    w.add_f32("v.f32", 1.5f);
    w.add_f64("v.f64", -2.25e300);
    w.add_bool("v.true", true);
    w.add_bool("v.false", false);
    w.add_string("v.str", std::string("h\xc3\xa9llo\0x\n", 9));
    w.add_string("v.empty", "");
    w.add_string_array("a.str", {"x", "", "yz"});
    w.add_i32_array("a.i32", {1, -2, 3});
    w.add_f32_array("a.f32", {0.5f, -1.0f});
    const uint8_t u8s[] = {1, 2, 250};
    w.add_array("a.u8", GgufValueType::UINT8, u8s, 3);
    const uint64_t u64s[] = {7, uint64_t{1} << 40};
    w.add_array("a.u64", GgufValueType::UINT64, u64s, 2);
    const uint8_t bools[] = {1, 0};
    w.add_array("a.bool", GgufValueType::BOOL, bools, 2);
    const double f64s[] = {0.125, 3.0};
    w.add_array("a.f64", GgufValueType::FLOAT64, f64s, 2);
    w.add_i32_array("a.empty", {});
    w.add_i32_array("a.long", std::vector<int32_t>(20, 4));

    struct T {
      std::string name;
      uint32_t type;
      std::vector<int64_t> ne;
    };
    const std::vector<T> ts = {{"f32", PMOE_DTYPE_F32, {7, 3}},        {"f16", PMOE_DTYPE_F16, {5}},
                               {"bf16", PMOE_DTYPE_BF16, {4, 2, 3}},   {"q8_0", PMOE_DTYPE_Q8_0, {64, 3}},
                               {"q4_0", PMOE_DTYPE_Q4_0, {32, 2, 2, 2}}, {"empty", PMOE_DTYPE_Q8_0, {32, 0}},
                               {"q4_K", PMOE_DTYPE_Q4_K, {256, 3}},     {"q6_K", PMOE_DTYPE_Q6_K, {512, 1, 2}},
                               {"iq4_nl", PMOE_DTYPE_IQ4_NL, {64, 2}},  {"q5_1", PMOE_DTYPE_Q5_1, {96}},
                               {"last", PMOE_DTYPE_F32, {3}}};
    for (const T& t : ts)
      w.add_tensor(t.name, t.type, t.ne, [n = t.name](uint8_t* d, uint64_t s) { pattern_fill(n, d, s); });
    const fs::path out = tmp_dir() / ("roundtrip" + std::to_string(alignment) + ".gguf");
    uint64_t total = 0;
    w.write(out.string(), [&](uint64_t, uint64_t t) { total = t; });
    CHECK(total == fs::file_size(out));

    auto f = GgufFile::open(out.string());
    CHECK(f->version() == 3);
    CHECK(f->alignment() == alignment);
    CHECK(f->has("general.alignment") == (alignment != 32));
    if (alignment != 32) CHECK(f->get_u32("general.alignment") == alignment);
    CHECK(f->get_u32("v.u8") == 200);
    CHECK(f->type_of("v.u8") == GgufValueType::UINT8);
    CHECK(f->get_i64("v.i8") == -100);
    CHECK(f->get_u32("v.u16") == 60000);
    CHECK(f->get_i32("v.i16") == -30000);
    CHECK(f->get_u32("v.u32") == 4000000000u);
    CHECK(f->get_i32("v.i32") == -2000000000);
    CHECK(f->get_u64("v.u64") == uint64_t{1} << 60);
    CHECK(f->get_i64("v.i64") == -(int64_t{1} << 60));
    CHECK(f->get_f32("v.f32") == 1.5f);
    CHECK(f->get_f64("v.f64") == -2.25e300);
    CHECK(f->get_bool_opt("v.true") == true);
    CHECK(f->get_bool_opt("v.false") == false);
    CHECK(f->get_string("v.str") == std::string("h\xc3\xa9llo\0x\n", 9));
    CHECK(f->get_string("v.empty").empty());
    CHECK(f->get_string_array("a.str") == std::vector<std::string>{"x", "", "yz"});
    CHECK(f->get_i32_array("a.i32") == std::vector<int32_t>{1, -2, 3});
    CHECK(f->get_f32_array("a.f32") == std::vector<float>{0.5f, -1.0f});
    CHECK(f->get_i32_array("a.u8") == std::vector<int32_t>{1, 2, 250});
    CHECK(f->array_type_of("a.u64") == GgufValueType::UINT64);
    CHECK(f->array_size("a.bool") == 2);
    CHECK(f->get_f32_array("a.f64") == std::vector<float>{0.125f, 3.0f});
    CHECK(f->get_i32_array("a.empty").empty());
    CHECK(f->value_summary("v.f32") == "1.5");
    CHECK(f->value_summary("v.i8") == "-100");
    CHECK(f->value_summary("v.true") == "true");
    CHECK(f->value_summary("v.str") == "\"h\xc3\xa9llo\\x00x\\n\"");
    CHECK(f->value_summary("a.str") == "[\"x\", \"\", \"yz\"]");
    CHECK(f->value_summary("a.i32") == "[1, -2, 3]");
    CHECK(f->value_summary("a.empty") == "[]");
    CHECK(f->value_summary("a.long") == "[4, 4, 4, ... (20 items)]");
    CHECK(f->value_summary("a.u64") == "[7, 1099511627776]");

    std::vector<std::string> keys = f->keys();
    if (alignment != 32) {
      CHECK(keys.front() == "general.alignment");
      keys.erase(keys.begin());
    }
    CHECK(keys.size() == 23);
    CHECK(keys.front() == "v.u8");
    CHECK(keys.back() == "a.long");

    REQUIRE(f->tensors().size() == ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      const GgufTensorInfo& t = f->tensors()[i];
      INFO(t.name);
      CHECK(t.name == ts[i].name);
      CHECK(t.type == ts[i].type);
      CHECK(t.n_dims == ts[i].ne.size());
      uint64_t n = 1;
      for (size_t d = 0; d < 4; ++d) {
        const int64_t want = d < ts[i].ne.size() ? ts[i].ne[d] : 1;
        CHECK(t.ne[d] == want);
        n *= static_cast<uint64_t>(want);
      }
      CHECK(t.n_elements() == n);
      CHECK(t.size == pmoe_dtype_row_bytes(t.type, n));
      CHECK(t.offset % alignment == 0);
      CHECK(f->find_tensor(t.name) == &t);
      Bytes want(t.size);
      pattern_fill(t.name, want.data(), t.size);
      if (t.size) CHECK(std::memcmp(f->tensor_data(t), want.data(), t.size) == 0);
    }
    CHECK(f->data_offset() % alignment == 0);

    // copy_key of every entry (general.alignment included) reproduces the file exactly.
    GgufWriter w2;
    for (const std::string& k : f->keys()) w2.copy_key(*f, k);
    for (const GgufTensorInfo& t : f->tensors()) {
      const uint8_t* src = f->tensor_data(t);
      w2.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims),
                    [src](uint8_t* d, uint64_t s) { std::memcpy(d, src, s); });
    }
    const fs::path out2 = tmp_dir() / ("roundtrip" + std::to_string(alignment) + ".copy.gguf");
    w2.write(out2.string());
    CHECK(read_all(out2) == read_all(out));
  }
}

TEST_CASE("gguf: getters convert within range and reject the rest with the key in the message") {
  GgufWriter w;
  w.add_i32("neg", -1);
  w.add_u64("big", uint64_t{1} << 40);
  w.add_u8("small", 7);
  w.add_string("s", "x");
  w.add_f64("huge", 1e300);
  w.add_f64("d", 0.25);
  const uint64_t big[] = {1, uint64_t{1} << 33};
  w.add_array("a.big", GgufValueType::UINT64, big, 2);
  w.add_i32_array("a.i32", {1});
  const fs::path out = tmp_dir() / "getters.gguf";
  w.write(out.string());
  auto f = GgufFile::open(out.string());
  auto err = [](auto&& fn) { return error_of(fn); };
  const std::string p = out.string();
  CHECK(err([&] { f->get_u32("neg"); }) == p + ": metadata key 'neg': value -1 does not fit in u32");
  CHECK(f->get_i32("neg") == -1);
  CHECK(err([&] { f->get_u32("big"); }) == p + ": metadata key 'big': value 1099511627776 does not fit in u32");
  CHECK(f->get_u64("big") == uint64_t{1} << 40);
  CHECK(f->get_u32("small") == 7);
  CHECK(f->get_u64("small") == 7);
  CHECK(err([&] { f->get_u32("s"); }) == p + ": metadata key 's': has type string, expected an integer");
  CHECK(err([&] { f->get_u32("nope"); }) == p + ": metadata key 'nope': missing");
  CHECK(err([&] { f->get_u32_opt("s"); }).find("expected an integer") != std::string::npos);
  CHECK(!f->get_u32_opt("nope"));
  CHECK(!f->get_f32_opt("nope"));
  CHECK(!f->get_bool_opt("nope"));
  CHECK(!f->get_string_opt("nope"));
  CHECK(f->get_string_opt("s") == "x");
  CHECK(f->get_f32("d") == 0.25f);
  CHECK(err([&] { f->get_f32("huge"); }).find("metadata key 'huge': value 1e+300 does not fit in f32") !=
        std::string::npos);
  CHECK(err([&] { f->get_f32("small"); }).find("expected f32 or f64") != std::string::npos);
  CHECK(err([&] { f->get_bool_opt("small"); }).find("expected bool") != std::string::npos);
  CHECK(err([&] { f->get_string("small"); }).find("expected string") != std::string::npos);
  CHECK(err([&] { f->get_i32_array("a.big"); }).find("metadata key 'a.big': element 1 = 8589934592") !=
        std::string::npos);
  CHECK(err([&] { f->get_string_array("a.i32"); }) ==
        p + ": metadata key 'a.i32': has type array of i32, expected an array of strings");
  CHECK(err([&] { f->get_i32_array("s"); }).find("has type string, expected an array of integers") !=
        std::string::npos);
  CHECK(err([&] { f->type_of("nope"); }).find("missing") != std::string::npos);
  CHECK(err([&] { f->array_size("small"); }).find("expected an array") != std::string::npos);
}

TEST_CASE("gguf: writer rejects bad input and leaves no temporary file behind") {
  GgufWriter w;
  CHECK_THROWS_AS(w.set_alignment(0), Error);
  CHECK_THROWS_AS(w.set_alignment(48), Error);
  w.add_u32("k", 1);
  CHECK_THROWS_AS(w.add_u32("k", 2), Error);
  CHECK_THROWS_AS(w.add_u32("general.alignment", 64), Error);
  CHECK_THROWS_AS(w.add_tensor("q", PMOE_DTYPE_Q8_0, {33}, {}), Error);
  CHECK_THROWS_AS(w.add_tensor("q", PMOE_DTYPE_F32, {}, {}), Error);
  CHECK_THROWS_AS(w.add_tensor("q", PMOE_DTYPE_F32, {1, 1, 1, 1, 1}, {}), Error);
  CHECK_THROWS_AS(w.add_tensor("q", PMOE_DTYPE_F32, {-1}, {}), Error);
  CHECK_THROWS_AS(w.add_tensor("q", 16, {256}, {}), Error);
  w.add_tensor("t", PMOE_DTYPE_F32, {4}, [](uint8_t*, uint64_t) { throw std::runtime_error("fill failed"); });
  CHECK_THROWS_AS(w.add_tensor("t", PMOE_DTYPE_F32, {4}, {}), Error);
  const fs::path out = tmp_dir() / "failed.gguf";
  fs::remove(out);
  CHECK_THROWS_WITH(w.write(out.string()), "fill failed");
  CHECK(!fs::exists(out));
  CHECK(!fs::exists(out.string() + ".tmp"));
  CHECK_THROWS_AS(w.write((tmp_dir() / "no/such/dir/x.gguf").string()), Error);
}

// weights.load: read holds the file's bytes exactly as the mapping does, and the same metadata
TEST_CASE("gguf: a file read into memory holds the mapped bytes") {
  const std::string path = fixture("models/st-a-q4_0.gguf");
  const auto mapped = GgufFile::open(path, GgufLoad::map), read = GgufFile::open(path, GgufLoad::read);
  REQUIRE(read->file_size() == mapped->file_size());
  CHECK(read->base() != mapped->base());
  CHECK(std::memcmp(read->base(), mapped->base(), mapped->file_size()) == 0);
  CHECK(read->keys() == mapped->keys());
  CHECK(read->tensors().size() == mapped->tensors().size());
  const std::string missing = (tmp_dir() / "does-not-exist.gguf").string();
  CHECK(contains(error_of([&] { GgufFile::open(missing, GgufLoad::read); }), missing + ": cannot open"));
}

TEST_CASE("gguf: open errors name the file") {
  const std::string missing = (tmp_dir() / "does-not-exist.gguf").string();
  CHECK(contains(error_of([&] { GgufFile::open(missing); }), missing + ": cannot open"));
  CHECK(contains(error_of([&] { GgufFile::open(tmp_dir().string()); }), "not a regular file"));
  const fs::path empty = tmp_dir() / "empty.gguf";
  std::ofstream(empty).close();
  CHECK(contains(error_of([&] { GgufFile::open(empty.string()); }),
                 empty.string() + ": byte 0: file ends at byte 0 while 4 bytes were needed"));
}

TEST_CASE("gguf: unsupported tensor types are named with tensor and type") {
  for (auto [type, text] : std::vector<std::pair<uint32_t, std::string>>{
           {16, "has type iq2_xxs (id 16), which pocketmoe does not support; supported: f32, f16, q4_0, q4_1, q5_0, "
                "q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, iq4_nl, iq4_xs, bf16"},
           {34, "has type tq1_0 (id 34), which pocketmoe does not support"},
           {26, "has type i32 (id 26), which pocketmoe does not support"},
           {39, "has type mxfp4 (id 39)"},
           {4000, "has unknown type id 4000"}}) {
    GgufWriter w;
    w.add_tensor("token_embd.weight", PMOE_DTYPE_F32, {32}, {});
    w.add_raw_tensor("blk.0.ffn_up_exps.weight", type, {256, 2}, 288, {});
    const fs::path out = tmp_dir() / "unsupported.gguf";
    w.write(out.string());
    const std::string msg = error_of([&] { GgufFile::open(out.string()); });
    INFO(msg);
    CHECK(msg.rfind(out.string() + ": ", 0) == 0);
    CHECK(contains(msg, "tensor 'blk.0.ffn_up_exps.weight' " + text));
  }
}

TEST_CASE("model: PowerInfer's transposed ffn_down_exps is taken with its shape") {
  // st-a-f32 rewritten with every down tensor's shape {n_embd, n_ff, n_expert} (--transpose-down;
  // test_fixtures runs a file whose data are transposed too)
  auto f = GgufFile::open(fixture("models/st-a-f32.gguf"));
  GgufWriter w;
  for (const std::string& k : f->keys()) w.copy_key(*f, k);
  for (const GgufTensorInfo& t : f->tensors()) {
    std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
    const bool down = t.name.find("ffn_down_exps") != std::string::npos;
    if (down) std::swap(ne[0], ne[1]);
    const uint8_t* src = f->tensor_data(t);
    w.add_tensor(t.name, t.type, ne, [src](uint8_t* d, uint64_t s) { std::memcpy(d, src, s); });
  }
  const fs::path out = tmp_dir() / "transposed-down.gguf";
  w.write(out.string());
  const auto model = Model::load(out.string());
  const GgufTensorInfo& down = model->expert_tensor(0, ExpertMatrix::Down);
  CHECK(down.ne[0] == 128);
  CHECK(down.ne[1] == 64);
  CHECK(down.ne[2] == 8);
  CHECK(model->expert_matrix_bytes(0, ExpertMatrix::Down) == 128 * 64 * 4);
}

TEST_CASE("gguf: opening never modifies the file") {
  const fs::path copy = tmp_dir() / "untouched.gguf";
  fs::copy_file(fixture("models/st-a-q4_0.gguf"), copy, fs::copy_options::overwrite_existing);
  fs::permissions(copy, fs::perms::owner_read | fs::perms::owner_write);
  const Bytes before = read_all(copy);
  const auto mtime = fs::last_write_time(copy);
  for (GgufLoad how : {GgufLoad::map, GgufLoad::read}) {
    auto f = GgufFile::open(copy.string(), how);
    uint64_t sum = 0;
    for (const GgufTensorInfo& t : f->tensors())
      for (uint64_t i = 0; i < t.size; i += 64) sum += f->tensor_data(t)[i];
    for (const std::string& k : f->keys()) (void)f->value_summary(k);
    CHECK(sum > 0);
  }
  CHECK(fs::last_write_time(copy) == mtime);
  CHECK(read_all(copy) == before);
  // Read-only files (the fixtures themselves) open fine.
  fs::permissions(copy, fs::perms::owner_read);
  CHECK_NOTHROW(GgufFile::open(copy.string()));
  fs::permissions(copy, fs::perms::owner_read | fs::perms::owner_write);
}

TEST_CASE("gguf: corruption corpus on a small written file") {
  const fs::path path = tmp_dir() / "small.gguf";
  const Bytes good = small_file(path);
  const std::string name = "small.gguf";
  REQUIRE(parse_error(good, good.size(), name).empty());
  const Layout l = walk(good);
  REQUIRE(l.kvs.size() == 7);
  REQUIRE(l.tensors.size() == 3);
  auto f = GgufFile::from_memory(good.data(), good.size(), name);
  uint64_t data_end = 0;
  for (const GgufTensorInfo& t : f->tensors()) data_end = std::max(data_end, t.offset + t.size);
  REQUIRE(data_end < good.size());  // the file ends in padding

  SUBCASE("truncation at every byte") {
    for (size_t n = 0; n < good.size(); ++n) {
      INFO("truncated to " << n);
      const std::string msg = parse_error(good, n, name);
      if (n < data_end) {
        CHECK(!msg.empty());
        CHECK(message_ok(msg, name));
        CHECK(msg.find("file ends at byte " + std::to_string(n)) != std::string::npos);
      } else {
        CHECK(msg.empty());  // only the trailing padding is missing
      }
    }
  }

  auto with = [&](auto&& patch) {
    Bytes b = good;
    patch(b);
    return b;
  };
  SUBCASE("header") {
    for (size_t i = 0; i < 4; ++i)
      expect_error(with([&](Bytes& b) { b[i] ^= 0x20; }), name, "byte 0: not a GGUF file", "magic");
    for (uint32_t v : {0u, 1u, 4u, 0xFFFFFFFFu})
      expect_error(with([&](Bytes& b) { poke<uint32_t>(b, 4, v); }), name, "byte 4: unsupported GGUF version",
                   "version " + std::to_string(v));
    expect_error(with([&](Bytes& b) { poke<uint32_t>(b, 4, 0x03000000u); }), name, "big-endian", "big-endian");
    CHECK(parse_error(with([&](Bytes& b) { poke<uint32_t>(b, 4, 2); }), good.size(), name).empty());  // v2 layout
    for (uint64_t v : {~uint64_t{0}, uint64_t{1} << 40, uint64_t{1} << 63})
      expect_error(with([&](Bytes& b) { poke<uint64_t>(b, 8, v); }), name, "byte 8: file ends at byte " + std::to_string(good.size()) + ", too early for the", "n_tensors");
    for (uint64_t v : {~uint64_t{0}, uint64_t{1} << 40})
      expect_error(with([&](Bytes& b) { poke<uint64_t>(b, 16, v); }), name, "byte 16: file ends at byte " + std::to_string(good.size()) + ", too early for the", "n_kv");
    for (uint64_t v : {0, 1, 6, 8, 9, 100})
      expect_error(with([&](Bytes& b) { poke<uint64_t>(b, 16, v); }), name, "", "n_kv = " + std::to_string(v));
    for (uint64_t v : {4, 5, 6})
      expect_error(with([&](Bytes& b) { poke<uint64_t>(b, 8, v); }), name, "", "n_tensors = " + std::to_string(v));
  }

  SUBCASE("metadata entries") {
    for (const Layout::Kv& kv : l.kvs) {
      INFO(kv.key);
      const std::string at = "byte " + std::to_string(kv.len_at) + ": ";
      for (uint64_t v : {~uint64_t{0}, uint64_t{1} << 62, uint64_t{good.size()}})
        expect_error(with([&](Bytes& b) { poke<uint64_t>(b, kv.len_at, v); }), name, at + "file ends at byte",
                     "key length");
      expect_error(with([&](Bytes& b) { poke<uint64_t>(b, kv.len_at, 0); }), name, "", "empty key");
      for (uint32_t v : {13u, 100u, 0xFFFFFFFFu})
        expect_error(with([&](Bytes& b) { poke<uint32_t>(b, kv.type_at, v); }), name,
                     "byte " + std::to_string(kv.type_at) + ": metadata key '" + kv.key + "' has invalid value type",
                     "value type");
      if (kv.type == GgufValueType::ARRAY) {
        expect_error(with([&](Bytes& b) { poke<uint32_t>(b, kv.elem_at, 9); }), name, "nested arrays are not supported",
                     "nested");
        expect_error(with([&](Bytes& b) { poke<uint32_t>(b, kv.elem_at, 13); }), name, "invalid array element type",
                     "elem type");
        for (uint64_t v : {~uint64_t{0}, uint64_t{1} << 61, uint64_t{good.size()}})
          expect_error(with([&](Bytes& b) { poke<uint64_t>(b, kv.count_at, v); }), name,
                       "byte " + std::to_string(kv.count_at) + ": metadata key '" + kv.key + "' is an array of",
                       "count");
      }
      if (kv.type == GgufValueType::STRING || kv.elem == GgufValueType::STRING)
        expect_error(with([&](Bytes& b) { poke<uint64_t>(b, kv.value_at, ~uint64_t{0}); }), name,
                     "file ends at byte " + std::to_string(good.size()) + " while 18446744073709551615 bytes",
                     "string length");
      if (kv.type == GgufValueType::BOOL)
        expect_error(with([&](Bytes& b) { b[kv.value_at] = 2; }), name, "bool value 2", "bool");
      if (kv.type == GgufValueType::ARRAY) {
        // Turning an array into a scalar of its element type desynchronizes everything after it.
        expect_error(with([&](Bytes& b) { poke<uint32_t>(b, kv.type_at, 10); }), name, "", "array to u64");
      }
    }
    // Duplicate key: "dup.key.b" -> "dup.key.a".
    const Layout::Kv& b_kv = l.kvs[5];
    REQUIRE(b_kv.key == "dup.key.b");
    expect_error(with([&](Bytes& b) { b[b_kv.len_at + 8 + 8] = 'a'; }), name,
                 "byte " + std::to_string(b_kv.len_at) + ": duplicate metadata key 'dup.key.a'", "duplicate key");
    // A string general.alignment.
    const Layout::Kv& al = l.kvs[6];
    REQUIRE(al.key == "general.alignmenX");
    expect_error(with([&](Bytes& b) { b[al.len_at + 8 + 16] = 't'; }), name,
                 "metadata key 'general.alignment': has type string, expected an integer", "alignment type");
  }

  SUBCASE("alignment values") {
    const Bytes g64 = small_file(tmp_dir() / "small64.gguf", 64);
    const Layout l64 = walk(g64);
    REQUIRE(l64.kvs[0].key == "general.alignment");
    for (uint32_t v : {0u, 3u, 48u, 0x80000001u}) {
      Bytes b = g64;
      poke<uint32_t>(b, l64.kvs[0].value_at, v);
      expect_error(b, name, "metadata key 'general.alignment': value " + std::to_string(v) + " is not a power of two",
                   "alignment " + std::to_string(v));
    }
    Bytes b = g64;
    poke<uint32_t>(b, l64.kvs[0].value_at, 32);  // the data section may move: valid or not, no crash
    (void)parse_error(b, b.size(), name);
  }

  SUBCASE("tensor directory") {
    for (const Layout::Tensor& t : l.tensors) {
      INFO(t.name);
      const std::string tn = "tensor '" + t.name + "'";
      expect_error(with([&](Bytes& b) { poke<uint64_t>(b, t.len_at, ~uint64_t{0}); }), name,
                   "byte " + std::to_string(t.len_at) + ": file ends at byte", "name length");
      expect_error(with([&](Bytes& b) { poke<uint64_t>(b, t.len_at, 0); }), name, "has an empty name", "empty name");
      for (uint32_t v : {0u, 5u, 0xFFFFFFFFu})
        expect_error(with([&](Bytes& b) { poke<uint32_t>(b, t.n_dims_at, v); }), name,
                     "byte " + std::to_string(t.n_dims_at) + ": " + tn + " has n_dims " + std::to_string(v), "n_dims");
      expect_error(with([&](Bytes& b) { poke<int64_t>(b, t.ne_at, -32); }), name, tn + " has negative ne[0] = -32",
                   "negative ne");
      expect_error(with([&](Bytes& b) { poke<int64_t>(b, t.ne_at, INT64_MIN); }), name, "negative", "ne min");
      if (t.n_dims >= 2) {
        expect_error(with([&](Bytes& b) {
                       poke<int64_t>(b, t.ne_at, int64_t{1} << 40);
                       poke<int64_t>(b, t.ne_at + 8, int64_t{1} << 40);
                     }),
                     name, "whose element count overflows", "ne product");
        expect_error(with([&](Bytes& b) { poke<int64_t>(b, t.ne_at + 8, INT64_MAX); }), name, "overflows", "ne max");
      }
      expect_error(with([&](Bytes& b) { poke<int64_t>(b, t.ne_at, int64_t{1} << 50); }), name, tn, "huge ne[0]");
      if (t.type != PMOE_DTYPE_F32)
        expect_error(with([&](Bytes& b) { poke<int64_t>(b, t.ne_at, 33); }), name, "ne[0] = 33 is not a multiple of the",
                     "block size");
      expect_error(with([&](Bytes& b) { poke<uint32_t>(b, t.type_at, 18); }), name,
                   tn + " has type iq3_xxs (id 18), which pocketmoe does not support", "iq3_xxs");
      expect_error(with([&](Bytes& b) { poke<uint32_t>(b, t.type_at, 0xFFFFFFFF); }), name,
                   "byte " + std::to_string(t.type_at) + ": " + tn + " has unknown type id 4294967295", "type");
      const auto off = peek<uint64_t>(good, t.offset_at);
      expect_error(with([&](Bytes& b) { poke<uint64_t>(b, t.offset_at, off + 1); }), name,
                   "byte " + std::to_string(t.offset_at) + ": " + tn + " has data offset", "misaligned");
      for (uint64_t v : {~uint64_t{31}, uint64_t{1} << 62, uint64_t{good.size()} / 32 * 32})
        expect_error(with([&](Bytes& b) { poke<uint64_t>(b, t.offset_at, v); }), name,
                     tn + " data (", "offset out of file");
    }
    // Overlap: t.b at t.a's offset; t.c one block into t.b.
    expect_error(with([&](Bytes& b) { poke<uint64_t>(b, l.tensors[1].offset_at, peek<uint64_t>(b, l.tensors[0].offset_at)); }),
                 name, "overlaps tensor", "overlap a/b");
    expect_error(with([&](Bytes& b) { poke<uint64_t>(b, l.tensors[2].offset_at, peek<uint64_t>(b, l.tensors[1].offset_at) + 32); }),
                 name, "tensor 't.c'", "overlap b/c");
    // Duplicate name: "t.b" -> "t.a".
    expect_error(with([&](Bytes& b) { b[l.tensors[1].len_at + 8 + 2] = 'a'; }), name,
                 "byte " + std::to_string(l.tensors[1].len_at) + ": duplicate tensor name 't.a'", "duplicate tensor");
  }
}

TEST_CASE("gguf: corruption corpus on a fixture model") {
  const std::string name = "st-a-q4_0.gguf";
  const Bytes good = read_all(fixture("models/" + name));
  REQUIRE(parse_error(good, good.size(), name).empty());
  const Layout l = walk(good);
  auto f = GgufFile::from_memory(good.data(), good.size(), name);
  const uint64_t data_offset = f->data_offset();
  uint64_t data_end = 0;
  for (const GgufTensorInfo& t : f->tensors()) data_end = std::max(data_end, t.offset + t.size);

  // Truncation: every byte of the header and first entries, then a sample over the rest.
  std::mt19937_64 rng(1234);
  std::vector<size_t> cuts;
  for (size_t n = 0; n < 2048; ++n) cuts.push_back(n);
  for (int i = 0; i < 300; ++i) cuts.push_back(rng() % good.size());
  for (const Layout::Tensor& t : l.tensors) cuts.push_back(t.offset_at + 4);
  cuts.push_back(data_offset);
  cuts.push_back(data_end - 1);
  for (size_t n : cuts) {
    if (n >= data_end) continue;
    INFO("truncated to " << n);
    const std::string msg = parse_error(good, n, name);
    CHECK(message_ok(msg, name));
    CHECK(msg.find("file ends at byte " + std::to_string(n)) != std::string::npos);
  }

  // Every key length and tensor type field.
  for (const Layout::Kv& kv : l.kvs) {
    Bytes b = good;
    poke<uint64_t>(b, kv.len_at, ~uint64_t{0});
    expect_error(b, name, "byte " + std::to_string(kv.len_at) + ": file ends at byte", kv.key);
  }
  for (const Layout::Tensor& t : l.tensors) {
    Bytes b = good;
    poke<uint32_t>(b, t.type_at, 16);
    expect_error(b, name, "tensor '" + t.name + "' has type iq2_xxs (id 16)", t.name);
  }

  // Random damage to the header, metadata and tensor directory: either still a valid file
  // (e.g. a changed token string) or pmoe::Error saying where.
  int rejected = 0, accepted = 0;
  for (int trial = 0; trial < 1500; ++trial) {
    Bytes b = good;
    const int n_flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < n_flips; ++k) {
      // Half the trials hit the tensor directory, which is small but dense with structure.
      const size_t lo = trial % 2 ? l.kvs.back().value_at : 0;
      const size_t at = lo + rng() % (data_offset - lo);
      switch (rng() % 3) {
        case 0: b[at] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: b[at] = static_cast<uint8_t>(rng()); break;
        default: b[at] = 0xFF; break;
      }
    }
    INFO("trial " << trial);
    const std::string msg = parse_error(b, b.size(), name);
    if (msg.empty()) {
      ++accepted;
    } else {
      ++rejected;
      CHECK(message_ok(msg, name));
    }
  }
  CHECK(rejected > 500);
  MESSAGE("random damage: " << rejected << " rejected, " << accepted << " still valid");
}

TEST_CASE("model: a flipped bit in a count key is an error naming the key, never an allocation") {
  // st-a-f32 with one bit of one count set high (2^20 and 2^30): each must end in pmoe::Error
  // naming a key or tensor before anything is sized by the count (fuzz_gguf found head_count_kv
  // = 0 dividing by zero; a flipped block_count used to allocate per layer first).
  const Bytes good = read_all(fixture("models/st-a-f32.gguf"));
  const Layout l = walk(good);
  const char* counts[] = {"block_count", "expert_count", "expert_used_count", "attention.head_count",
                          "attention.head_count_kv", "embedding_length", "expert_feed_forward_length",
                          "attention.key_length", "attention.value_length", "rope.dimension_count"};
  int checked = 0;
  for (const Layout::Kv& kv : l.kvs) {
    const bool count = std::any_of(std::begin(counts), std::end(counts),
                                   [&](const char* c) { return kv.key == std::string("smallthinker.") + c; });
    if (!count || kv.type != GgufValueType::UINT32) continue;
    for (uint32_t value : {1u << 20, 1u << 30, 0u}) {
      Bytes b = good;
      poke<uint32_t>(b, kv.value_at, value);
      const fs::path out = tmp_dir() / "flipped-count.gguf";
      std::ofstream(out, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
      INFO(kv.key << " = " << value);
      std::string msg;
      try {
        Model::load(out.string());
      } catch (const pmoe::Error& e) {
        msg = e.what();
      }  // anything else (std::bad_alloc, a crash) fails the test case
      CHECK(!msg.empty());
      CHECK((contains(msg, "smallthinker.") || contains(msg, "tensor '")));
      ++checked;
    }
  }
  CHECK(checked >= 18);
}
