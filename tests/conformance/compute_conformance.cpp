// Compute conformance suite: checks any compute plugin library against compute.h, through the C
// ABI alone. Every op, for every weight type the runtime loads, over shapes with tails and odd
// sizes, against plain float64 references with these tolerances:
//
//   matmul      |y - ref| <= 2e-6 * sum_i |w_i x_i|; ref = dequantized weights times the
//               activations rounded as ggml rounds them for the weight type (Q8_0, Q8_1, Q8_K;
//               bf16 for BF16 weights; none for F32/F16), Q4_1/Q5_1 offsets times the
//               activation block's stored sum. A column of a batch equals the same row alone,
//               bit for bit (except where llama.cpp's repacked gemm sums Q4_K/Q2_K differently).
//   get_rows    exact (the dequantized row)           add, copy   exact
//   rms_norm    1e-5 absolute                         rope_neox   1e-4 absolute (float32 angles)
//   attention   1e-4 absolute
//   moe_expert  2e-3 * the sum of |down terms|, against a reference that rounds x and the ReGLU
//               output as the weight types ask (as matmul); the result never depends on the order
//               of experts or on their being executed together or one by one, and moe_combine
//               sums in rank order.
//   errors      a bad op is refused naming its index and kind; an unknown kind is NOT_SUPPORTED.
//   --f16-products=1 (a backend that multiplies 16-bit and quantized weights in f16, e.g. vulkan
//               with fp16: on): matmul 3e-3 for those weights (inputs and products rounded to
//               f16: 3 x 2^-11 per term) and moe_expert 1e-2 (gate's and up's errors both reach
//               the ReGLU output that down multiplies); F32 weights keep 2e-6.
//
//   compute_conformance --plugin=<lib.so> [--impl=<name>] [--option=key=value ...] [doctest options]
//   compute_conformance --impl=<name>      (library found through POCKETMOE_PLUGIN_PATH manifests)
// Environment equivalents: PMOE_COMPUTE_PLUGIN, PMOE_COMPUTE_IMPL, PMOE_COMPUTE_OPTIONS.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "plugin_library.hpp"
#include "quant_reference.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

namespace pmoe::conformance {
namespace {

SuiteArgs g_args;

/// One instance of the compute implementation; frees what it allocated.
class ComputeInstance {
 public:
  ComputeInstance(const PluginLibrary& lib, const OptionList& options) : vt_(lib.vtable<pmoe_compute_vtable>()) {
    const std::vector<pmoe_option> items = option_items(options);
    const pmoe_options o{items.data(), items.size()};
    pmoe_error err{};
    if (vt_.create(lib.host(), &o, &c_, &err) != PMOE_OK || !c_)
      throw CreateError(err.code, std::string("create failed: ") + err.message + " [" + pmoe_status_name(err.code) + "]");
  }
  ~ComputeInstance() {
    for (pmoe_buffer* b : bufs_) vt_.buffer_free(c_, b);
    vt_.destroy(c_);
  }
  ComputeInstance(const ComputeInstance&) = delete;
  ComputeInstance& operator=(const ComputeInstance&) = delete;

  pmoe_buffer* alloc(uint64_t size, uint32_t flags) {
    pmoe_buffer* b = nullptr;
    pmoe_error err{};
    if (vt_.buffer_alloc(c_, size, flags, &b, &err) != PMOE_OK || !b)
      throw std::runtime_error(std::string("buffer_alloc: ") + err.message);
    bufs_.push_back(b);
    return b;
  }
  void write(pmoe_buffer* b, uint64_t off, const void* src, uint64_t size) {
    pmoe_error err{};
    if (vt_.buffer_write(c_, b, off, src, size, &err) != PMOE_OK)
      throw std::runtime_error(std::string("buffer_write: ") + err.message);
  }
  void read(pmoe_buffer* b, uint64_t off, void* dst, uint64_t size) {
    sync();
    pmoe_error err{};
    if (vt_.buffer_read(c_, b, off, dst, size, &err) != PMOE_OK)
      throw std::runtime_error(std::string("buffer_read: ") + err.message);
  }
  /// execute then sync; the status of the first that fails, with its message in `msg`.
  pmoe_status run(const std::vector<pmoe_op>& ops, std::string* msg = nullptr) {
    pmoe_error err{};
    pmoe_status s = vt_.execute(c_, ops.data(), ops.size(), &err);
    if (s == PMOE_OK) s = vt_.sync(c_, &err);
    if (msg) *msg = err.message;
    return s;
  }
  void must_run(const std::vector<pmoe_op>& ops) {
    std::string msg;
    if (run(ops, &msg) != PMOE_OK) throw std::runtime_error("execute: " + msg);
  }
  void* host_ptr(pmoe_buffer* b) { return vt_.buffer_host_ptr(c_, b); }
  void sync() {
    pmoe_error err{};
    if (vt_.sync(c_, &err) != PMOE_OK) throw std::runtime_error(std::string("sync: ") + err.message);
  }

 private:
  const pmoe_compute_vtable& vt_;
  pmoe_compute* c_ = nullptr;
  std::vector<pmoe_buffer*> bufs_;
};

const PluginLibrary& library() {
  static const PluginLibrary lib(g_args.library, PMOE_KIND_COMPUTE, g_args.impl);
  return lib;
}

/// A fresh instance per case, random data, and buffers holding tensors.
struct Fixture {
  ComputeInstance be{library(), g_args.options};
  std::mt19937 rng{42};

  std::vector<float> randn(size_t n, float scale = 1.f) {
    std::normal_distribution<float> d(0.f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
  }
  /// Bytes in a fresh buffer, as a 2-D view (nullptr: uninitialized).
  pmoe_tensor upload(const void* data, size_t bytes, uint32_t dtype, int64_t ne0, int64_t ne1) {
    pmoe_buffer* b = be.alloc(bytes, PMOE_BUFFER_HOST_VISIBLE);
    if (data) be.write(b, 0, data, bytes);
    return pmoe_tensor_2d(b, 0, dtype, ne0, ne1);
  }
  pmoe_tensor f32(const std::vector<float>& v, int64_t ne0, int64_t ne1) {
    return upload(v.data(), v.size() * 4, PMOE_DTYPE_F32, ne0, ne1);
  }
  pmoe_tensor zeros(int64_t ne0, int64_t ne1) { return f32(std::vector<float>(size_t(ne0 * ne1)), ne0, ne1); }
  pmoe_tensor i32(const std::vector<int32_t>& v) {
    return upload(v.data(), v.size() * 4, PMOE_DTYPE_I32, int64_t(v.size()), 1);
  }
  std::vector<float> read(const pmoe_tensor& t, size_t n) {
    std::vector<float> v(n);
    be.read(t.buffer, t.offset, v.data(), n * 4);
    return v;
  }
  void run(const pmoe_op& op) { be.must_run({op}); }
};

pmoe_op op_of(pmoe_op_kind k, pmoe_tensor dst, std::initializer_list<pmoe_tensor> src) {
  pmoe_op op{};
  op.kind = k;
  op.dst = dst;
  for (auto& s : src) op.src[op.n_src++] = s;
  return op;
}

/// Random weights of `type` as bytes plus their exact dequantized values (quant_reference.hpp).
void make_weights(std::mt19937& rng, uint32_t type, int64_t in, int64_t out, std::vector<uint8_t>& bytes,
                  std::vector<float>& deq) {
  const uint64_t row = pmoe_dtype_row_bytes(type, uint64_t(in));
  const uint32_t be = pmoe_dtype_block_elems(type);
  deq.assign(size_t(in * out), 0.f);
  if (be > 1) {
    bytes = testref::random_blocks(rng, type, size_t(in / be * out));
    for (int64_t i = 0; i < in * out / be; ++i)
      testref::dequant_block(type, bytes.data() + uint64_t(i) * pmoe_dtype_block_bytes(type), deq.data() + i * be);
    return;
  }
  bytes.assign(row * uint64_t(out), 0);
  std::uniform_real_distribution<float> val(-1.f, 1.f);
  for (int64_t i = 0; i < in * out; ++i) {
    if (type == PMOE_DTYPE_F32) {
      const float v = val(rng) * 0.1f;
      std::memcpy(&bytes[size_t(i) * 4], &v, 4);
      deq[size_t(i)] = v;
    } else if (type == PMOE_DTYPE_F16) {
      const uint16_t h = pmoe_fp32_to_fp16(0.05f + 0.05f * std::fabs(val(rng))) | (val(rng) < 0 ? 0x8000 : 0);
      std::memcpy(&bytes[size_t(i) * 2], &h, 2);
      deq[size_t(i)] = pmoe_fp16_to_fp32(h);
    } else {  // BF16
      const uint16_t h = pmoe_fp32_to_bf16(val(rng) * 0.1f);
      std::memcpy(&bytes[size_t(i) * 2], &h, 2);
      deq[size_t(i)] = pmoe_bf16_to_fp32(h);
    }
  }
}

/// Q4_1/Q5_1 weights: each block's offset m (the product uses m * s of the activation block).
std::vector<double> block_offsets(uint32_t type, const std::vector<uint8_t>& bytes) {
  std::vector<double> m;
  if (type == PMOE_DTYPE_Q4_1 || type == PMOE_DTYPE_Q5_1)
    for (size_t i = 0; i < bytes.size(); i += pmoe_dtype_block_bytes(type)) m.push_back(testref::h(&bytes[i + 2]));
  return m;
}

/// Every weight type the runtime loads.
const std::vector<uint32_t> kAllTypes = {
    PMOE_DTYPE_F32,  PMOE_DTYPE_F16,  PMOE_DTYPE_BF16, PMOE_DTYPE_Q4_0, PMOE_DTYPE_Q4_1,   PMOE_DTYPE_Q5_0,
    PMOE_DTYPE_Q5_1, PMOE_DTYPE_Q8_0, PMOE_DTYPE_Q2_K, PMOE_DTYPE_Q3_K, PMOE_DTYPE_Q4_K,   PMOE_DTYPE_Q5_K,
    PMOE_DTYPE_Q6_K, PMOE_DTYPE_IQ4_NL, PMOE_DTYPE_IQ4_XS};

std::string name(uint32_t type) { return pmoe_dtype_name(type); }

/// Widths with tails: several 32-blocks past a 128 group, or one and three super-blocks.
std::vector<int64_t> widths(uint32_t type) {
  return pmoe_dtype_block_elems(type) == 256 ? std::vector<int64_t>{256, 768} : std::vector<int64_t>{32, 224, 256};
}

/// How a backend may round matmul inputs: as ggml's CPU backend does for the weight type (integer
/// dot products, llama.cpp's bits), or not at all (float products, e.g. a GPU). Both are correct;
/// the fixtures accept either (fixtures/README: `ref` or `exact`), and so does this suite.
const testref::ActRound kRoundings[] = {testref::ActRound::none, testref::ActRound::q8_0};
testref::ActRound rounding(testref::ActRound r, uint32_t type) {
  return r == testref::ActRound::none ? r : testref::act_round(type);
}

/// The reference product of row `row` of W (dequantized `wd`, `in` wide, block offsets `m`) and
/// the rounded activations `xr`: the offsets are taken apart only with Q8_1's block sums (xr.s),
/// which they multiply.
double ref_dot(const std::vector<float>& wd, const std::vector<double>& m, const testref::RoundedAct& xr, int64_t row,
               int64_t in) {
  const bool offsets = !m.empty() && !xr.s.empty();
  double y = 0;
  for (int64_t i = 0; i < in; ++i)
    y += (wd[size_t(row * in + i)] - (offsets ? m[size_t((row * in + i) / 32)] : 0.0)) * xr.x[size_t(i)];
  for (size_t b = 0; b < xr.s.size() && !m.empty(); ++b) y += m[size_t(row * in / 32) + b] * xr.s[b];
  return y;
}

/// Whether the backend under test declares f16 products (--f16-products=1).
bool f16_products() { return g_args.get("--f16-products=", "0") == "1"; }
double matmul_tolerance(uint32_t type) { return f16_products() && type != PMOE_DTYPE_F32 ? 3e-3 : 2e-6; }

/// The smallest error `f(how)` over the ways a backend may round (kRoundings).
template <class F>
double best_over_roundings(F f) {
  double best = 1e30;
  for (testref::ActRound how : kRoundings) best = std::min(best, f(how));
  return best;
}

/// Worst |y - ref| / sum|w x| of Y (out x T) against the reference product of W (dequantized
/// `wd`, offsets `m`) and X as rounded by `how`.
double matmul_error(testref::ActRound how, uint32_t type, const std::vector<float>& wd, const std::vector<double>& m,
                    const std::vector<float>& x, const std::vector<float>& y, int64_t in, int64_t out, int64_t T) {
  double worst = 0;
  for (int64_t t = 0; t < T; ++t) {
    const auto xr = testref::round_act(rounding(how, type), x.data() + t * in, size_t(in));
    for (int64_t o = 0; o < out; ++o) {
      double mag = 0;
      for (int64_t i = 0; i < in; ++i) mag += std::fabs(wd[size_t(o * in + i)] * xr.x[size_t(i)]);
      worst = std::max(worst, std::fabs(ref_dot(wd, m, xr, o, in) - y[size_t(t * out + o)]) / (mag + 1e-6));
    }
  }
  return worst;
}

/// matmul_error of the rounding that fits best (a backend may use either).
double worst_matmul_error(uint32_t type, const std::vector<float>& wd, const std::vector<double>& m,
                          const std::vector<float>& x, const std::vector<float>& y, int64_t in, int64_t out, int64_t T) {
  return best_over_roundings(
      [&](testref::ActRound how) { return matmul_error(how, type, wd, m, x, y, in, out, T); });
}

}  // namespace

TEST_CASE("buffers: aligned, host-visible when asked, written and read back exactly") {
  Fixture f;
  for (uint64_t size : {1ull, 4095ull, 4096ull, 100000ull}) {
    pmoe_buffer* b = f.be.alloc(size, PMOE_BUFFER_HOST_VISIBLE);
    void* p = f.be.host_ptr(b);
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(p) % 4096 == 0);
    std::vector<uint8_t> in(size), out(size);
    for (uint64_t i = 0; i < size; ++i) in[i] = uint8_t(i * 7 + 3);
    f.be.write(b, 0, in.data(), size);
    f.be.read(b, 0, out.data(), size);
    CHECK(in == out);
    if (size > 8) {  // at an offset
      f.be.write(b, 3, in.data(), 5);
      f.be.read(b, 3, out.data(), 5);
      CHECK(std::memcmp(in.data(), out.data(), 5) == 0);
    }
  }
}

/// One matmul of random `type` weights (in x out) by T random columns, run on the backend.
struct MatmulRun {
  std::vector<uint8_t> wb;
  std::vector<float> wd, x, y;
  pmoe_tensor W;
  MatmulRun(Fixture& f, uint32_t type, int64_t in, int64_t out, int64_t T) {
    make_weights(f.rng, type, in, out, wb, wd);
    x = f.randn(size_t(in * T));
    W = f.upload(wb.data(), wb.size(), type, in, out);
    const pmoe_tensor Y = f.upload(nullptr, size_t(out * T) * 4, PMOE_DTYPE_F32, out, T);
    f.run(op_of(PMOE_OP_MATMUL, Y, {W, f.f32(x, in, T)}));
    y = f.read(Y, size_t(out * T));
  }
};

TEST_CASE("matmul of every weight type matches a float64 reference, with tails and odd rows") {
  Fixture f;
  for (uint32_t type : kAllTypes)
    for (int64_t in : widths(type))
      for (int64_t out : {8, 37})
        for (int64_t T : {1, 2, 3, 4, 5, 9}) {
          const MatmulRun m(f, type, in, out, T);
          const double worst = worst_matmul_error(type, m.wd, block_offsets(type, m.wb), m.x, m.y, in, out, T);
          INFO(name(type) << " in " << in << " out " << out << " T " << T << ": worst relative error " << worst);
          CHECK(worst <= matmul_tolerance(type));
        }
}

TEST_CASE("matmul with i[0] = 1 adds to dst") {
  Fixture f;
  for (uint32_t type : {PMOE_DTYPE_F32, PMOE_DTYPE_Q8_0, PMOE_DTYPE_Q4_K}) {
    const int64_t in = 256, out = 12, T = 3;
    std::vector<uint8_t> wb;
    std::vector<float> wd;
    make_weights(f.rng, type, in, out, wb, wd);
    const auto x = f.randn(size_t(in * T)), base = f.randn(size_t(out * T));
    const pmoe_tensor W = f.upload(wb.data(), wb.size(), type, in, out), X = f.f32(x, in, T);
    const pmoe_tensor Y = f.upload(nullptr, size_t(out * T) * 4, PMOE_DTYPE_F32, out, T), Acc = f.f32(base, out, T);
    f.run(op_of(PMOE_OP_MATMUL, Y, {W, X}));
    pmoe_op acc = op_of(PMOE_OP_MATMUL, Acc, {W, X});
    acc.i[0] = 1;
    f.run(acc);
    const auto y = f.read(Y, size_t(out * T)), a = f.read(Acc, size_t(out * T));
    INFO(name(type));
    for (size_t i = 0; i < y.size(); ++i) CHECK(a[i] == base[i] + y[i]);
  }
}

TEST_CASE("products of one input submitted together: each as alone, and in order where one writes that input") {
  // (a backend may run a decode step's q, k and v as one parallel pass)
  Fixture f;
  const int64_t in = 256;
  const std::vector<float> x = f.randn(size_t(in));
  struct Product {
    uint32_t type;
    int64_t out;
    std::vector<uint8_t> wb;
    std::vector<float> wd;
    pmoe_tensor W;
  };
  std::vector<Product> ps{{PMOE_DTYPE_Q4_0, 40, {}, {}, {}}, {PMOE_DTYPE_Q4_0, 16, {}, {}, {}},
                          {PMOE_DTYPE_Q8_0, 24, {}, {}, {}}, {PMOE_DTYPE_Q4_K, 256, {}, {}, {}}};
  for (Product& p : ps) {
    make_weights(f.rng, p.type, in, p.out, p.wb, p.wd);
    p.W = f.upload(p.wb.data(), p.wb.size(), p.type, in, p.out);
  }
  // alone, one submission each
  std::vector<std::vector<float>> alone;
  const pmoe_tensor X = f.f32(x, in, 1);
  for (const Product& p : ps) {
    const pmoe_tensor Y = f.zeros(p.out, 1);
    f.run(op_of(PMOE_OP_MATMUL, Y, {p.W, X}));
    alone.push_back(f.read(Y, size_t(p.out)));
  }
  // together: the first three into their own outputs, then the square one writes the input (from
  // a copy of it), then the first again, which must read what the square one wrote
  std::vector<pmoe_tensor> Ys;
  std::vector<pmoe_op> ops;
  for (size_t k = 0; k < 3; ++k) {
    Ys.push_back(f.zeros(ps[k].out, 1));
    ops.push_back(op_of(PMOE_OP_MATMUL, Ys.back(), {ps[k].W, X}));
  }
  ops.push_back(op_of(PMOE_OP_MATMUL, X, {ps[3].W, f.f32(x, in, 1)}));
  const pmoe_tensor After = f.zeros(ps[0].out, 1);
  ops.push_back(op_of(PMOE_OP_MATMUL, After, {ps[0].W, X}));
  f.be.must_run(ops);
  for (size_t k = 0; k < 3; ++k) {
    INFO("product " << k);
    CHECK(std::memcmp(f.read(Ys[k], size_t(ps[k].out)).data(), alone[k].data(), alone[k].size() * 4) == 0);
  }
  const std::vector<float> x2 = f.read(X, size_t(in));
  CHECK(std::memcmp(x2.data(), alone[3].data(), x2.size() * 4) == 0);
  const pmoe_tensor Y2 = f.zeros(ps[0].out, 1);
  f.run(op_of(PMOE_OP_MATMUL, Y2, {ps[0].W, f.f32(x2, in, 1)}));
  CHECK(std::memcmp(f.read(After, size_t(ps[0].out)).data(), f.read(Y2, size_t(ps[0].out)).data(), size_t(ps[0].out) * 4) == 0);
}

TEST_CASE("batching never changes a bit: a column of a batch equals the same row alone") {
  Fixture f;
  const int64_t out = 24, in = 512, T = 7;  // 7 tokens: one full tile of 4 and a partial one
  for (uint32_t type : kAllTypes) {
    const MatmulRun m(f, type, in, out, T);
    for (int64_t t = 0; t < T; ++t) {
      // F32 and BF16 batches follow llama.cpp's tinyBLAS / oneDNN, whose sums run in another order;
      // for Q4_K and Q2_K llama.cpp's gemm (tokens 0..3 of 7 here) sums differently from its gemv
      if (type == PMOE_DTYPE_F32 || type == PMOE_DTYPE_BF16) continue;
      if ((type == PMOE_DTYPE_Q4_K || type == PMOE_DTYPE_Q2_K) && t < 4) continue;
      const pmoe_tensor Y1 = f.upload(nullptr, size_t(out) * 4, PMOE_DTYPE_F32, out, 1);
      f.run(op_of(PMOE_OP_MATMUL, Y1, {m.W, f.f32(std::vector<float>(m.x.begin() + t * in, m.x.begin() + (t + 1) * in), in, 1)}));
      INFO(name(type) << " token " << t);
      CHECK(std::memcmp(f.read(Y1, size_t(out)).data(), m.y.data() + t * out, size_t(out) * 4) == 0);
    }
  }
}

TEST_CASE("get_rows dequantizes every weight type exactly as ggml") {
  Fixture f;
  for (uint32_t type : kAllTypes)
    for (int64_t n : widths(type)) {
      const int64_t rows = 6;
      std::vector<uint8_t> wb;
      std::vector<float> wd;
      make_weights(f.rng, type, n, rows, wb, wd);
      const pmoe_tensor tab = f.upload(wb.data(), wb.size(), type, n, rows);
      const std::vector<int32_t> ids = {5, 0, 5, 3};
      const pmoe_tensor Y = f.upload(nullptr, size_t(n) * ids.size() * 4, PMOE_DTYPE_F32, n, int64_t(ids.size()));
      f.run(op_of(PMOE_OP_GET_ROWS, Y, {tab, f.i32(ids)}));
      const auto y = f.read(Y, size_t(n) * ids.size());
      INFO(name(type) << " n " << n);
      for (size_t r = 0; r < ids.size(); ++r)
        CHECK(std::memcmp(y.data() + r * size_t(n), &wd[size_t(ids[r]) * size_t(n)], size_t(n) * 4) == 0);
    }
}

TEST_CASE("rms_norm, add and copy match scalar references") {
  Fixture f;
  for (int64_t n : {64, 1536, 77})
    for (int64_t T : {1, 5}) {
      const auto x = f.randn(size_t(n * T)), g = f.randn(size_t(n)), b = f.randn(size_t(n * T));
      const pmoe_tensor X = f.f32(x, n, T), G = f.f32(g, n, 1), B = f.f32(b, n, T);
      const pmoe_tensor Y = f.upload(nullptr, size_t(n * T) * 4, PMOE_DTYPE_F32, n, T);
      pmoe_op norm = op_of(PMOE_OP_RMS_NORM, Y, {X, G});
      norm.f[0] = 1e-6f;
      f.run(norm);
      auto y = f.read(Y, size_t(n * T));
      INFO("n " << n << " T " << T);
      for (int64_t t = 0; t < T; ++t) {
        double ss = 0;
        for (int64_t i = 0; i < n; ++i) ss += double(x[size_t(t * n + i)]) * x[size_t(t * n + i)];
        const double s = 1.0 / std::sqrt(ss / double(n) + 1e-6);
        for (int64_t i = 0; i < n; ++i) CHECK(std::fabs(y[size_t(t * n + i)] - x[size_t(t * n + i)] * s * g[size_t(i)]) < 1e-5);
      }
      f.run(op_of(PMOE_OP_ADD, Y, {X, B}));
      y = f.read(Y, size_t(n * T));
      for (size_t i = 0; i < y.size(); ++i) CHECK(y[i] == x[i] + b[i]);
      // copy into rows 2.. of a larger tensor (a KV-cache row range)
      const pmoe_tensor Big = f.zeros(n, T + 3);
      f.run(op_of(PMOE_OP_COPY, pmoe_tensor_2d(Big.buffer, uint64_t(2 * n) * 4, PMOE_DTYPE_F32, n, T), {X}));
      const auto big = f.read(Big, size_t(n * (T + 3)));
      CHECK(std::memcmp(big.data() + 2 * n, x.data(), x.size() * 4) == 0);
      CHECK(big[size_t(2 * n - 1)] == 0.f);
      CHECK(big[size_t((T + 2) * n)] == 0.f);
    }
}

TEST_CASE("rope_neox rotates pairs i, i + n_rot/2 by float32 angles, partial rotation included") {
  Fixture f;
  const int64_t hd = 64, heads = 3;
  const std::vector<int32_t> pos = {0, 1, 2, 100, 4000, 31999};
  const int64_t T = int64_t(pos.size());
  for (int64_t n_rot : {hd, hd / 2}) {
    const auto q = f.randn(size_t(hd * heads * T));
    const pmoe_tensor Q = f.f32(q, hd * heads, T);
    pmoe_tensor Q3 = Q;
    Q3.ne[0] = hd, Q3.ne[1] = heads, Q3.ne[2] = T, Q3.nb[1] = hd * 4, Q3.nb[2] = Q.nb[1];
    pmoe_op rope = op_of(PMOE_OP_ROPE_NEOX, Q3, {f.i32(pos)});
    rope.i[0] = n_rot;
    rope.f[0] = 1.5e6f;
    f.run(rope);
    const auto qr = f.read(Q, q.size());
    INFO("n_rot " << n_rot);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const size_t base = size_t(t * hd * heads + h * hd);
        float theta = float(pos[size_t(t)]);  // float32 angles, as compute.h specifies
        const float theta_scale = std::pow(1.5e6f, -2.0f / float(n_rot));
        for (int64_t i = 0; i < n_rot / 2; ++i, theta *= theta_scale) {
          const double th = theta;
          const size_t a = base + size_t(i), c = a + size_t(n_rot / 2);
          CHECK(std::fabs(qr[a] - (q[a] * std::cos(th) - q[c] * std::sin(th))) < 1e-4);
          CHECK(std::fabs(qr[c] - (q[a] * std::sin(th) + q[c] * std::cos(th))) < 1e-4);
        }
        for (int64_t i = n_rot; i < hd; ++i) CHECK(qr[base + size_t(i)] == q[base + size_t(i)]);  // not rotated
      }
  }
}

TEST_CASE("attention: causal, GQA, windows, one query and batches, odd key counts") {
  Fixture f;
  struct Shape {
    int64_t hd, heads, kvh, nkv;
    std::vector<int32_t> qpos;
  };
  for (const Shape& s : {Shape{16, 4, 2, 9, {4, 8}}, Shape{64, 6, 2, 37, {36}}, Shape{128, 2, 1, 41, {0, 17, 38, 39, 40}}})
    for (int64_t window : {0, 3, 16}) {
      const int64_t T = int64_t(s.qpos.size());
      const auto k = f.randn(size_t(s.hd * s.kvh * s.nkv)), v = f.randn(size_t(s.hd * s.kvh * s.nkv));
      const auto qq = f.randn(size_t(s.hd * s.heads * T));
      const pmoe_tensor O = f.upload(nullptr, size_t(s.hd * s.heads * T) * 4, PMOE_DTYPE_F32, s.hd * s.heads, T);
      pmoe_op a = op_of(PMOE_OP_ATTENTION, O,
                        {f.f32(qq, s.hd * s.heads, T), f.f32(k, s.hd * s.kvh, s.nkv), f.f32(v, s.hd * s.kvh, s.nkv), f.i32(s.qpos)});
      a.i[0] = s.heads, a.i[1] = s.kvh, a.i[2] = s.hd, a.i[3] = window;
      const double scale = 1.0 / std::sqrt(double(s.hd));
      a.f[0] = float(scale);
      f.run(a);
      const auto o = f.read(O, size_t(s.hd * s.heads * T));
      INFO("head_dim " << s.hd << " heads " << s.heads << "/" << s.kvh << " keys " << s.nkv << " window " << window);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < s.heads; ++h) {
          const int64_t p = s.qpos[size_t(t)], g = h / (s.heads / s.kvh);
          const int64_t j0 = window ? std::max<int64_t>(0, p - window + 1) : 0;
          std::vector<double> w;
          double mx = -1e30, sum = 0;
          for (int64_t j = j0; j <= p; ++j) {
            double d = 0;
            for (int64_t i = 0; i < s.hd; ++i)
              d += double(qq[size_t(t * s.hd * s.heads + h * s.hd + i)]) * k[size_t(j * s.hd * s.kvh + g * s.hd + i)];
            w.push_back(d * float(scale));
            mx = std::max(mx, w.back());
          }
          for (auto& x : w) sum += (x = std::exp(x - mx));
          for (int64_t i = 0; i < s.hd; ++i) {
            double ref = 0;
            for (int64_t j = j0; j <= p; ++j) ref += w[size_t(j - j0)] / sum * v[size_t(j * s.hd * s.kvh + g * s.hd + i)];
            CHECK(std::fabs(o[size_t(t * s.hd * s.heads + h * s.hd + i)] - ref) < 1e-4);
          }
        }
    }
}

TEST_CASE("moe: every weight type; expert order never changes a bit; combine weights in rank order") {
  Fixture f;
  const int64_t D = 256, F = 256, T = 5, E = 3, K = 2;
  for (uint32_t type : kAllTypes) {
    const uint32_t down_type = type == PMOE_DTYPE_Q4_K ? uint32_t(PMOE_DTYPE_Q6_K) : type;  // a Q4_K_M-like mix too
    std::vector<std::vector<uint8_t>> wb(E * 3);
    std::vector<std::vector<float>> wd(E * 3);
    std::vector<pmoe_tensor> W(E * 3);
    for (int64_t e = 0; e < E; ++e)
      for (int m = 0; m < 3; ++m) {
        const bool down = m == 2;
        const uint32_t t = down ? down_type : type;
        const size_t i = size_t(e * 3 + m);
        make_weights(f.rng, t, down ? F : D, down ? D : F, wb[i], wd[i]);
        W[i] = f.upload(wb[i].data(), wb[i].size(), t, down ? F : D, down ? D : F);
      }
    const auto x = f.randn(size_t(D * T));
    const pmoe_tensor X = f.f32(x, D, T);
    // routes: token t uses experts (t % E) then ((t + 1) % E); rows grouped by expert
    std::vector<std::vector<int32_t>> tok(E);
    std::vector<int32_t> idx(size_t(T * K)), first(E);
    std::vector<float> w(size_t(T * K));
    int32_t row = 0;
    for (int64_t e = 0; e < E; ++e) {
      first[size_t(e)] = row;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < K; ++j)
          if ((t + j) % E == e) {
            tok[size_t(e)].push_back(int32_t(t));
            idx[size_t(t * K + j)] = row++;
            w[size_t(t * K + j)] = j == 0 ? 0.7f : 0.3f;
          }
    }
    auto run_order = [&](std::vector<int64_t> order, bool one_by_one) {
      const pmoe_tensor EY = f.upload(nullptr, size_t(D * row) * 4, PMOE_DTYPE_F32, D, row);
      const pmoe_tensor OUT = f.f32(x, D, T);  // combine adds to the residual
      std::vector<pmoe_op> ops;
      for (int64_t e : order) {
        ops.push_back(op_of(PMOE_OP_MOE_EXPERT,
                            pmoe_tensor_2d(EY.buffer, uint64_t(first[size_t(e)]) * D * 4, PMOE_DTYPE_F32, D, int64_t(tok[size_t(e)].size())),
                            {W[size_t(e * 3)], W[size_t(e * 3 + 1)], W[size_t(e * 3 + 2)], X, f.i32(tok[size_t(e)])}));
        if (one_by_one) f.be.must_run(ops), ops.clear();  // as the streamed path runs them
      }
      ops.push_back(op_of(PMOE_OP_MOE_COMBINE, OUT, {EY, f.upload(idx.data(), idx.size() * 4, PMOE_DTYPE_I32, K, T),
                                                     f.upload(w.data(), w.size() * 4, PMOE_DTYPE_F32, K, T)}));
      f.be.must_run(ops);
      return f.read(OUT, size_t(D * T));
    };
    INFO(name(type) << " (down " << name(down_type) << ")");
    const auto a = run_order({0, 1, 2}, false), b = run_order({2, 0, 1}, false), c = run_order({1, 2, 0}, true);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
    CHECK(std::memcmp(a.data(), c.data(), a.size() * 4) == 0);
    // against a float64 ReGLU reference whose activations are rounded as the backend rounds them
    // for each weight type (x for gate and up, the ReGLU output for down); the error is measured
    // against the sum of the magnitudes of the down projection's terms (a value near a rounding
    // boundary may still land on the other side)
    std::vector<std::vector<double>> m(E * 3);  // each weight's block offsets
    for (int64_t e = 0; e < E; ++e)
      for (int k = 0; k < 3; ++k) m[size_t(e * 3 + k)] = block_offsets(k == 2 ? down_type : type, wb[size_t(e * 3 + k)]);
    auto moe_error = [&](testref::ActRound how) {
      std::vector<double> ref(size_t(D * T), 0.0), mag(size_t(D * T), 0.0);
      for (int64_t t = 0; t < T; ++t) {
        const auto xr = testref::round_act(rounding(how, type), x.data() + t * D, size_t(D));
        for (int64_t j = 0; j < K; ++j) {
          const size_t gate = size_t((t + j) % E * 3), up = gate + 1, down = gate + 2;
          std::vector<float> act(static_cast<size_t>(F));
          for (int64_t r = 0; r < F; ++r)
            act[size_t(r)] = float(std::max(ref_dot(wd[gate], m[gate], xr, r, D), 0.0) * ref_dot(wd[up], m[up], xr, r, D));
          const auto ar = testref::round_act(rounding(how, down_type), act.data(), size_t(F));
          const double wj = j == 0 ? 0.7 : 0.3;
          for (int64_t i = 0; i < D; ++i) {
            ref[size_t(t * D + i)] += wj * ref_dot(wd[down], m[down], ar, i, F);
            for (int64_t r = 0; r < F; ++r) mag[size_t(t * D + i)] += wj * std::fabs(wd[down][size_t(i * F + r)] * act[size_t(r)]);
          }
        }
      }
      double worst = 0;
      for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(a[i] - (x[i] + ref[i])) / (1e-6 + mag[i]));
      return worst;
    };
    const double best = best_over_roundings(moe_error);
    INFO("worst error / sum of |terms| " << best);
    CHECK(best <= (f16_products() ? 1e-2 : 2e-3));
  }
}

TEST_CASE("bad ops are refused with a message naming the op; unknown kinds are NOT_SUPPORTED") {
  Fixture f;
  const pmoe_tensor X = f.f32(f.randn(64), 64, 1);
  pmoe_tensor big = X;
  big.ne[1] = 1000;  // a view past the end of its buffer
  std::string msg;
  CHECK(f.be.run({op_of(PMOE_OP_ADD, X, {X, X}), op_of(PMOE_OP_ADD, X, {X, big})}, &msg) != PMOE_OK);
  CHECK(msg.find("op 1 (add)") != std::string::npos);
  CHECK(f.be.run({op_of(pmoe_op_kind(999), X, {X})}, &msg) == PMOE_ERR_NOT_SUPPORTED);
  CHECK(msg.find("999") != std::string::npos);
  pmoe_tensor bad_type = X;
  bad_type.dtype = 77;  // no such dtype
  const pmoe_tensor Y = f.zeros(1, 1);
  CHECK(f.be.run({op_of(PMOE_OP_MATMUL, Y, {bad_type, X})}, &msg) != PMOE_OK);
  CHECK(msg.find("op 0 (matmul)") != std::string::npos);
}

}  // namespace pmoe::conformance

int main(int argc, char** argv) {
  using pmoe::conformance::g_args;
  if (!g_args.parse(argc, argv, PMOE_KIND_COMPUTE, {"--f16-products="})) return 2;
  std::cout << "compute conformance: " << g_args.library << (g_args.impl.empty() ? "" : " impl ") << g_args.impl;
  for (const auto& [k, v] : g_args.options) std::cout << " " << k << "=" << v;
  std::cout << "\n";
  // A backend this machine cannot run (no such device, e.g. no Vulkan driver) cannot be checked
  // here: say so and report "skipped" (77), never a silent pass.
  try {
    pmoe::conformance::ComputeInstance probe(pmoe::conformance::library(), g_args.options);
  } catch (const std::exception& e) {
    if (pmoe::conformance::skip_unavailable(e)) return 77;
    std::cerr << e.what() << "\n";
    return 1;
  }
  doctest::Context ctx;
  ctx.applyCommandLine(static_cast<int>(g_args.rest.size()), g_args.rest.data());
  return ctx.run();
}
