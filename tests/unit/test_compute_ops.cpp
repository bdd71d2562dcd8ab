// Every op of the compute ABI on the cpu-onednn plugin against plain scalar references, on random
// data. The same checks apply to any compute backend (set PMOE_COMPUTE_PLUGIN to test another).
#include <doctest/doctest.h>

#include "common/error.hpp"
#include "plugin/compute_backend.hpp"
#include "plugin/registry.hpp"
#include "quant_reference.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>

using namespace pmoe;

namespace {

struct Fixture {
  PluginRegistry reg;
  std::unique_ptr<ComputeBackend> be;
  std::mt19937 rng{42};
  std::vector<pmoe_buffer*> bufs;

  Fixture() {
    const char* name = std::getenv("PMOE_COMPUTE_PLUGIN");
    const std::string impl = name ? name : "cpu-onednn";
    const LoadedImpl li = reg.load(impl, PMOE_KIND_COMPUTE);
    be = std::make_unique<ComputeBackend>(static_cast<const pmoe_compute_vtable*>(li.vtable),
                                          reg.host(), ComputeBackend::OptionList{{"threads", "2"}}, impl);
  }
  ~Fixture() {
    for (auto* b : bufs) be->free(b);
  }
  std::vector<float> randn(size_t n, float scale = 1.f) {
    std::normal_distribution<float> d(0.f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
  }
  // Upload bytes into a fresh buffer and return a 2-D view.
  pmoe_tensor upload(const void* data, size_t bytes, uint32_t dtype, int64_t ne0, int64_t ne1) {
    pmoe_buffer* b = be->alloc(bytes, PMOE_BUFFER_HOST_VISIBLE);
    bufs.push_back(b);
    if (data) be->write(b, 0, data, bytes);
    return pmoe_tensor_2d(b, 0, dtype, ne0, ne1);
  }
  pmoe_tensor f32(const std::vector<float>& v, int64_t ne0, int64_t ne1) {
    return upload(v.data(), v.size() * 4, PMOE_DTYPE_F32, ne0, ne1);
  }
  pmoe_tensor i32(const std::vector<int32_t>& v) {
    return upload(v.data(), v.size() * 4, PMOE_DTYPE_I32, int64_t(v.size()), 1);
  }
  std::vector<float> read(const pmoe_tensor& t, size_t n) {
    std::vector<float> v(n);
    be->sync();
    be->read(t.buffer, t.offset, v.data(), n * 4);
    return v;
  }
  void run(pmoe_op op) { be->execute({&op, 1}); }
};

pmoe_op op_of(pmoe_op_kind k, pmoe_tensor dst, std::initializer_list<pmoe_tensor> src) {
  pmoe_op op{};
  op.kind = k;
  op.dst = dst;
  for (auto& s : src) op.src[op.n_src++] = s;
  return op;
}

// Random weights of `type` as bytes plus their exact dequantized values (quant_reference.hpp).
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

// Q4_1/Q5_1 weights: each block's offset m (the product uses m * s of the activation block).
std::vector<double> block_offsets(uint32_t type, const std::vector<uint8_t>& bytes) {
  std::vector<double> m;
  if (type == PMOE_DTYPE_Q4_1 || type == PMOE_DTYPE_Q5_1)
    for (size_t i = 0; i < bytes.size(); i += pmoe_dtype_block_bytes(type)) m.push_back(testref::h(&bytes[i + 2]));
  return m;
}

const std::vector<uint32_t> kAllTypes = {
    PMOE_DTYPE_F32,  PMOE_DTYPE_F16,  PMOE_DTYPE_BF16, PMOE_DTYPE_Q4_0, PMOE_DTYPE_Q4_1,   PMOE_DTYPE_Q5_0,
    PMOE_DTYPE_Q5_1, PMOE_DTYPE_Q8_0, PMOE_DTYPE_Q2_K, PMOE_DTYPE_Q3_K, PMOE_DTYPE_Q4_K,   PMOE_DTYPE_Q5_K,
    PMOE_DTYPE_Q6_K, PMOE_DTYPE_IQ4_NL, PMOE_DTYPE_IQ4_XS};

}  // namespace

TEST_CASE("matmul of every weight type matches a float64 reference") {
  Fixture f;
  const int64_t out = 40;
  // 224 = one 128-wide group plus three 32-blocks: kernels that work on several blocks per step
  // must get their tails right too. K-quants: one and three super-blocks.
  for (uint32_t type : kAllTypes)
    for (int64_t in : pmoe_dtype_block_elems(type) == 256 ? std::vector<int64_t>{256, 768} : std::vector<int64_t>{256, 224, 64})
      for (int64_t T : {1, 3, 6}) {
        std::vector<uint8_t> wb;
        std::vector<float> wd;
        make_weights(f.rng, type, in, out, wb, wd);
        const std::vector<double> m = block_offsets(type, wb);
        const auto x = f.randn(size_t(in * T));
        const pmoe_tensor W = f.upload(wb.data(), wb.size(), type, in, out);
        const pmoe_tensor X = f.f32(x, in, T);
        const pmoe_tensor Y = f.upload(nullptr, size_t(out * T) * 4, PMOE_DTYPE_F32, out, T);
        f.run(op_of(PMOE_OP_MATMUL, Y, {W, X}));
        const auto y = f.read(Y, size_t(out * T));
        // The product of the dequantized weights with x rounded as ggml rounds it for this type
        // (unrounded for F32/F16 weights), up to f32 rounding. For Q4_1/Q5_1 the offset term uses
        // the activation block's stored s, as ggml's kernels do.
        double worst = 0;
        for (int64_t t = 0; t < T; ++t) {
          const auto xr = testref::round_act(testref::act_round(type), x.data() + t * in, size_t(in));
          for (int64_t o = 0; o < out; ++o) {
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < in; ++i) {
              const double mi = m.empty() ? 0.0 : m[size_t((o * in + i) / 32)];
              ref += (wd[size_t(o * in + i)] - mi) * xr.x[size_t(i)];
              mag += std::fabs(wd[size_t(o * in + i)] * xr.x[size_t(i)]);
            }
            for (size_t b = 0; b < xr.s.size() && !m.empty(); ++b) ref += m[size_t(o * in / 32) + b] * xr.s[b];
            worst = std::max(worst, std::fabs(ref - y[size_t(t * out + o)]) / (mag + 1e-6));
          }
        }
        INFO("type " << std::string(pmoe_dtype_name(type)) << " in " << in << " T " << T << " worst relative error " << worst);
        CHECK(worst <= 2e-6);
      }
}

TEST_CASE("batching never changes a bit: a column of a batch equals the same row alone") {
  Fixture f;
  const int64_t out = 24, in = 512, T = 7;  // 7 tokens: one full tile and a partial one
  for (uint32_t type : kAllTypes) {
    std::vector<uint8_t> wb;
    std::vector<float> wd;
    make_weights(f.rng, type, in, out, wb, wd);
    const auto x = f.randn(size_t(in * T));
    const pmoe_tensor W = f.upload(wb.data(), wb.size(), type, in, out);
    const pmoe_tensor Y = f.upload(nullptr, size_t(out * T) * 4, PMOE_DTYPE_F32, out, T);
    f.run(op_of(PMOE_OP_MATMUL, Y, {W, f.f32(x, in, T)}));
    const auto batch = f.read(Y, size_t(out * T));
    for (int64_t t = 0; t < T; ++t) {
      const pmoe_tensor Y1 = f.upload(nullptr, size_t(out) * 4, PMOE_DTYPE_F32, out, 1);
      f.run(op_of(PMOE_OP_MATMUL, Y1, {W, f.f32(std::vector<float>(x.begin() + t * in, x.begin() + (t + 1) * in), in, 1)}));
      const auto one = f.read(Y1, size_t(out));
      INFO("type " << std::string(pmoe_dtype_name(type)) << " token " << t);
      // F32 (and BF16) batches may go through oneDNN, whose order of summation differs; for
      // Q4_K and Q2_K llama.cpp's gemm (tokens 0..3 of 7 here) sums differently from its gemv
      if (type == PMOE_DTYPE_F32 || type == PMOE_DTYPE_BF16) continue;
      if ((type == PMOE_DTYPE_Q4_K || type == PMOE_DTYPE_Q2_K) && t < 4) continue;
      CHECK(std::memcmp(one.data(), batch.data() + t * out, size_t(out) * 4) == 0);
    }
  }
}

TEST_CASE("get_rows dequantizes every weight type exactly as ggml") {
  Fixture f;
  const int64_t n = 512, rows = 6;
  for (uint32_t type : kAllTypes) {
    std::vector<uint8_t> wb;
    std::vector<float> wd;
    make_weights(f.rng, type, n, rows, wb, wd);
    const pmoe_tensor tab = f.upload(wb.data(), wb.size(), type, n, rows);
    const pmoe_tensor Y = f.upload(nullptr, size_t(n * 3) * 4, PMOE_DTYPE_F32, n, 3);
    f.run(op_of(PMOE_OP_GET_ROWS, Y, {tab, f.i32({5, 0, 5})}));
    const auto y = f.read(Y, size_t(n * 3));
    INFO("type " << std::string(pmoe_dtype_name(type)));
    CHECK(std::memcmp(y.data(), &wd[size_t(5 * n)], size_t(n) * 4) == 0);
    CHECK(std::memcmp(y.data() + n, &wd[0], size_t(n) * 4) == 0);
  }
}

TEST_CASE("rms_norm, add, get_rows, rope and attention match scalar references") {
  Fixture f;
  const int64_t n = 64, T = 5;
  const auto x = f.randn(size_t(n * T)), g = f.randn(size_t(n)), b = f.randn(size_t(n * T));
  const pmoe_tensor X = f.f32(x, n, T), G = f.f32(g, n, 1), B = f.f32(b, n, T);
  const pmoe_tensor Y = f.upload(nullptr, size_t(n * T) * 4, PMOE_DTYPE_F32, n, T);
  pmoe_op norm = op_of(PMOE_OP_RMS_NORM, Y, {X, G});
  norm.f[0] = 1e-6f;
  f.run(norm);
  auto y = f.read(Y, size_t(n * T));
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(x[size_t(t * n + i)]) * x[size_t(t * n + i)];
    const double s = 1.0 / std::sqrt(ss / double(n) + 1e-6);
    for (int64_t i = 0; i < n; ++i) CHECK(std::fabs(y[size_t(t * n + i)] - x[size_t(t * n + i)] * s * g[size_t(i)]) < 1e-5);
  }
  f.run(op_of(PMOE_OP_ADD, Y, {X, B}));
  y = f.read(Y, size_t(n * T));
  for (size_t i = 0; i < y.size(); ++i) CHECK(y[i] == x[i] + b[i]);

  // get_rows from a Q8_0 table
  std::vector<uint8_t> wb;
  std::vector<float> wd;
  make_weights(f.rng, PMOE_DTYPE_Q8_0, n, 10, wb, wd);
  const pmoe_tensor tab = f.upload(wb.data(), wb.size(), PMOE_DTYPE_Q8_0, n, 10);
  f.run(op_of(PMOE_OP_GET_ROWS, pmoe_tensor_2d(Y.buffer, 0, PMOE_DTYPE_F32, n, 3), {tab, f.i32({7, 0, 7})}));
  y = f.read(Y, size_t(n * 3));
  for (int64_t i = 0; i < n; ++i) {
    CHECK(y[size_t(i)] == wd[size_t(7 * n + i)]);
    CHECK(y[size_t(n + i)] == wd[size_t(i)]);
  }

  // NEOX rope: dims i and i + d/2 rotate by pos * base^(-2i/d)
  const int64_t hd = 16, heads = 4;
  const auto q = f.randn(size_t(hd * heads * T));
  pmoe_tensor Q = f.f32(q, hd * heads, T);
  pmoe_tensor Q3 = Q;
  Q3.ne[0] = hd, Q3.ne[1] = heads, Q3.ne[2] = T, Q3.nb[1] = hd * 4, Q3.nb[2] = Q.nb[1];
  const std::vector<int32_t> pos = {0, 1, 2, 100, 4000};
  pmoe_op rope = op_of(PMOE_OP_ROPE_NEOX, Q3, {f.i32(pos)});
  rope.i[0] = hd;
  rope.f[0] = 10000.f;
  f.run(rope);
  auto qr = f.read(Q, q.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double th = pos[size_t(t)] * std::pow(10000.0, -2.0 * double(i) / double(hd));
        const size_t a = size_t(t * hd * heads + h * hd + i), c = a + size_t(hd / 2);
        CHECK(std::fabs(qr[a] - (q[a] * std::cos(th) - q[c] * std::sin(th))) < 2e-3);
        CHECK(std::fabs(qr[c] - (q[a] * std::sin(th) + q[c] * std::cos(th))) < 2e-3);
      }

  // attention: GQA 4 q heads on 2 kv heads, 9 keys, window 3
  const int64_t nkv = 9, kvh = 2;
  const auto k = f.randn(size_t(hd * kvh * nkv)), v = f.randn(size_t(hd * kvh * nkv)), qq = f.randn(size_t(hd * heads * 2));
  const std::vector<int32_t> qpos = {4, 8};
  for (int64_t window : {0, 3}) {
    const pmoe_tensor O = f.upload(nullptr, size_t(hd * heads * 2) * 4, PMOE_DTYPE_F32, hd * heads, 2);
    pmoe_op a = op_of(PMOE_OP_ATTENTION, O, {f.f32(qq, hd * heads, 2), f.f32(k, hd * kvh, nkv), f.f32(v, hd * kvh, nkv), f.i32(qpos)});
    a.i[0] = heads, a.i[1] = kvh, a.i[2] = hd, a.i[3] = window;
    a.f[0] = 0.25f;
    f.run(a);
    const auto o = f.read(O, size_t(hd * heads * 2));
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t p = qpos[size_t(t)], g = h / (heads / kvh);
        const int64_t j0 = window ? std::max<int64_t>(0, p - window + 1) : 0;
        std::vector<double> w;
        double mx = -1e30, sum = 0;
        for (int64_t j = j0; j <= p; ++j) {
          double s = 0;
          for (int64_t i = 0; i < hd; ++i) s += double(qq[size_t(t * hd * heads + h * hd + i)]) * k[size_t(j * hd * kvh + g * hd + i)];
          w.push_back(s * 0.25);
          mx = std::max(mx, s * 0.25);
        }
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (int64_t i = 0; i < hd; ++i) {
          double ref = 0;
          for (int64_t j = j0; j <= p; ++j) ref += w[size_t(j - j0)] / sum * v[size_t(j * hd * kvh + g * hd + i)];
          CHECK(std::fabs(o[size_t(t * hd * heads + h * hd + i)] - ref) < 1e-4);
        }
      }
  }
}

TEST_CASE("moe: expert order never changes a bit; combine weights in rank order") {
  Fixture f;
  const int64_t D = 64, F = 32, T = 3, E = 3, K = 2;
  std::vector<std::vector<uint8_t>> wb(E * 3);
  std::vector<std::vector<float>> wd(E * 3);
  std::vector<pmoe_tensor> W(E * 3);
  for (int64_t e = 0; e < E; ++e)
    for (int m = 0; m < 3; ++m) {
      const bool down = m == 2;
      make_weights(f.rng, PMOE_DTYPE_Q4_0, down ? F : D, down ? D : F, wb[size_t(e * 3 + m)], wd[size_t(e * 3 + m)]);
      W[size_t(e * 3 + m)] = f.upload(wb[size_t(e * 3 + m)].data(), wb[size_t(e * 3 + m)].size(), PMOE_DTYPE_Q4_0, down ? F : D, down ? D : F);
    }
  const auto x = f.randn(size_t(D * T));
  const pmoe_tensor X = f.f32(x, D, T);
  // routes: token t uses experts (t % E) then ((t + 1) % E); rows grouped by expert
  std::vector<std::vector<int32_t>> tok(E);
  std::vector<int32_t> idx(size_t(T * K));
  std::vector<float> w(size_t(T * K));
  int32_t row = 0;
  std::vector<int32_t> first(E);
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
  auto run_order = [&](std::vector<int64_t> order) {
    const pmoe_tensor EY = f.upload(nullptr, size_t(D * row) * 4, PMOE_DTYPE_F32, D, row);
    const pmoe_tensor OUT = f.f32(x, D, T);  // combine adds to the residual
    std::vector<pmoe_op> ops;
    for (int64_t e : order)
      ops.push_back(op_of(PMOE_OP_MOE_EXPERT,
                          pmoe_tensor_2d(EY.buffer, uint64_t(first[size_t(e)]) * D * 4, PMOE_DTYPE_F32, D, int64_t(tok[size_t(e)].size())),
                          {W[size_t(e * 3)], W[size_t(e * 3 + 1)], W[size_t(e * 3 + 2)], X, f.i32(tok[size_t(e)])}));
    ops.push_back(op_of(PMOE_OP_MOE_COMBINE, OUT, {EY, f.upload(idx.data(), idx.size() * 4, PMOE_DTYPE_I32, K, T), f.upload(w.data(), w.size() * 4, PMOE_DTYPE_F32, K, T)}));
    f.be->execute(ops);
    return f.read(OUT, size_t(D * T));
  };
  const auto a = run_order({0, 1, 2}), b = run_order({2, 0, 1});
  CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
  // against a float64 ReGLU reference (activations are Q8_0-rounded inside: loose tolerance)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < K; ++j) {
        const int64_t e = (t + j) % E;
        const auto &g = wd[size_t(e * 3)], &u = wd[size_t(e * 3 + 1)], &dn = wd[size_t(e * 3 + 2)];
        double y = 0;
        for (int64_t r = 0; r < F; ++r) {
          double gv = 0, uv = 0;
          for (int64_t c = 0; c < D; ++c) gv += g[size_t(r * D + c)] * x[size_t(t * D + c)], uv += u[size_t(r * D + c)] * x[size_t(t * D + c)];
          y += dn[size_t(i * F + r)] * std::max(gv, 0.0) * uv;
        }
        acc += (j == 0 ? 0.7 : 0.3) * y;
      }
      CHECK(std::fabs(a[size_t(t * D + i)] - (x[size_t(t * D + i)] + acc)) < 2e-3 + 0.03 * std::fabs(acc));
    }
}

TEST_CASE("bad ops are refused with a message naming the op") {
  Fixture f;
  const pmoe_tensor X = f.f32(f.randn(64), 64, 1);
  pmoe_tensor big = X;
  big.ne[1] = 1000;  // view past the end of its buffer
  pmoe_op op = op_of(PMOE_OP_ADD, X, {X, big});
  CHECK_THROWS_WITH_AS(f.run(op), doctest::Contains("op 0 (add)"), Error);
  pmoe_op unknown = op_of(pmoe_op_kind(999), X, {X});
  CHECK_THROWS_WITH_AS(f.run(unknown), doctest::Contains("unknown op kind 999"), Error);
}
