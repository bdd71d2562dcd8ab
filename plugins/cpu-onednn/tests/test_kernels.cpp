// The plugin's vector kernels against plain references, under whichever kernel set is in use
// (ctest runs this once per set, capping it with PMOE_CPU_MAX_ISA).
#include "kernels.hpp"
#include "sparse_ffn.hpp"
#include "../../../tests/unit/quant_reference.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using namespace pmoe::cpu;

TEST_CASE("Q8_0 activation quantization is bit-identical to ggml's scalar rounding") {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 3.f);
  const int64_t n = 32 * 64;
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  std::fill(x.begin() + 64, x.begin() + 96, 0.f);  // an all-zero block: d = 0, all q = 0
  for (int j = 0; j < 32; ++j) x[size_t(96 + j)] = float(j - 16) * 0.5f;  // exact halves: ties to even
  x[200] = -1e30f, x[300] = 1e-30f;
  std::vector<BlockQ8_0> got(static_cast<size_t>(n / 32));
  quantize_row_q8_0(x.data(), got.data(), n);
  INFO("kernels " << isa_name(kernel_isa()));
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[size_t(b * 32 + j)]));
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    CHECK(got[size_t(b)].d == pmoe_fp32_to_fp16(amax / 127.f));
    for (int j = 0; j < 32; ++j)
      CHECK(int(got[size_t(b)].qs[j]) == int(std::nearbyint(x[size_t(b * 32 + j)] * id)));
  }
}

TEST_CASE("an unknown PMOE_CPU_MAX_ISA name is recognised as unknown") {
  CHECK(parse_isa("avx2") == Isa::avx2);
  CHECK(parse_isa("avx512_vbmi") == Isa::avx512_vbmi);
  CHECK_FALSE(parse_isa("avx512"));
  CHECK_FALSE(parse_isa(""));
}

TEST_CASE("Q8_1 keeps Q8_0's values and adds s = f16(d * sum q)") {
  std::vector<float> x(64);
  for (int j = 0; j < 64; ++j) x[size_t(j)] = float(j % 7) - 2.5f;
  std::vector<BlockQ8_0> a(2);
  std::vector<BlockQ8_1> b(2);
  quantize_row_q8_0(x.data(), a.data(), 64);
  quantize_row_q8_1(x.data(), b.data(), 64);
  for (int k = 0; k < 2; ++k) {
    CHECK(a[size_t(k)].d == b[size_t(k)].d);
    CHECK(std::memcmp(a[size_t(k)].qs, b[size_t(k)].qs, 32) == 0);
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += b[size_t(k)].qs[j];
    CHECK(b[size_t(k)].s == pmoe_fp32_to_fp16(3.5f / 127.f * float(sum)));  // amax 3.5
  }
}

TEST_CASE("Q8_K quantization: the kernel set in use gives the scalar bits on random rows") {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 2.f);
  std::vector<float> x(256 * 40);
  for (auto& v : x) v = nd(rng);
  for (int j = 0; j < 256; ++j) x[size_t(256 * 3 + j)] = float(j % 9 - 4) * 0.5f;  // ties and a repeated maximum
  std::vector<BlockQ8K> got(40), ref(40);
  quantize_row_q8_k(x.data(), got.data(), int64_t(x.size()));
  for (size_t b = 0; b < 40; ++b) {  // the scalar reference: ggml's quantize_row_q8_K_ref
    const float* xb = &x[b * 256];
    float amax = 0.f, mx = 0.f;
    for (int j = 0; j < 256; ++j)
      if (std::fabs(xb[j]) > amax) amax = std::fabs(xb[j]), mx = xb[j];
    const float is = -127.f / mx;
    for (int j = 0; j < 256; ++j) ref[b].qs[j] = int8_t(std::min(127.f, std::nearbyint(is * xb[j])));
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int j = 0; j < 16; ++j) s += ref[b].qs[16 * g + j];
      ref[b].bsums[g] = int16_t(s);
    }
    ref[b].d = 1.f / is;
    INFO("block " << b << " kernels " << isa_name(kernel_isa()));
    CHECK(std::memcmp(&ref[b], &got[b], sizeof(BlockQ8K)) == 0);
  }
}

TEST_CASE("Q8_K quantization matches hand-checked blocks: sign of the largest value, ties, zeros") {
  std::vector<float> x(768, 0.f);
  // block 0: the largest magnitude is negative (-127), so iscale = -127 / -127 = +1: q = round(x)
  x[0] = -127.f, x[1] = 50.f, x[2] = 0.5f, x[3] = -0.5f, x[4] = 1.5f, x[5] = 2.5f, x[17] = 127.f;
  // block 1: +4 first, -4 later: the first occurrence sets the sign (iscale = -127 / 4 = -31.75)
  x[256] = 4.f, x[257] = -4.f, x[258] = 2.f;
  // block 2: all zero
  std::vector<BlockQ8K> y(3);
  quantize_row_q8_k(x.data(), y.data(), 768);
  CHECK(y[0].d == 1.f);
  CHECK(y[0].qs[0] == -127);
  CHECK(y[0].qs[1] == 50);
  CHECK(y[0].qs[2] == 0);   //  0.5 rounds to even
  CHECK(y[0].qs[3] == 0);   // -0.5 rounds to even
  CHECK(y[0].qs[4] == 2);   //  1.5 rounds to even
  CHECK(y[0].qs[5] == 2);   //  2.5 rounds to even
  CHECK(y[0].qs[17] == 127);
  CHECK(y[0].bsums[0] == -127 + 50 + 2 + 2);
  CHECK(y[0].bsums[1] == 127);
  CHECK(y[1].d == 1.f / -31.75f);
  CHECK(y[1].qs[0] == -127);
  CHECK(y[1].qs[1] == 127);
  CHECK(y[1].qs[2] == -64);  // -63.5 rounds to even
  CHECK(y[2].d == 0.f);
  for (int j = 0; j < 256; ++j) CHECK(y[2].qs[j] == 0);
  for (int g = 0; g < 16; ++g) CHECK(y[2].bsums[g] == 0);
}

// Every kernel set must sum exactly like the scalar one (ctest runs this file once per set).
TEST_CASE("the kernel set in use gives the scalar kernels' bits for every type, order and column count") {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  const uint32_t types[] = {PMOE_DTYPE_F32,  PMOE_DTYPE_F16,  PMOE_DTYPE_BF16, PMOE_DTYPE_Q4_0, PMOE_DTYPE_Q4_1,
                            PMOE_DTYPE_Q5_0, PMOE_DTYPE_Q5_1, PMOE_DTYPE_Q8_0, PMOE_DTYPE_Q2_K, PMOE_DTYPE_Q3_K,
                            PMOE_DTYPE_Q4_K, PMOE_DTYPE_Q5_K, PMOE_DTYPE_Q6_K, PMOE_DTYPE_IQ4_NL, PMOE_DTYPE_IQ4_XS};
  for (uint32_t type : types)
    for (int64_t n : {768, 1024, 96}) {  // 1024: one more 64-chunk for F32's vec_dot; 96: odd blocks
      if (n % int64_t(pmoe_dtype_block_elems(type)) != 0) continue;
      const uint64_t row = pmoe_dtype_row_bytes(type, uint64_t(n));
      std::vector<uint8_t> w = pmoe::testref::random_blocks(rng, type, size_t(row / pmoe_dtype_block_bytes(type)));
      if (pmoe_dtype_block_elems(type) == 1)  // float weights: random values of the type
        for (int64_t i = 0; i < n; ++i) {
          const float v = nd(rng) * 0.1f;
          if (type == PMOE_DTYPE_F32) std::memcpy(&w[size_t(i) * 4], &v, 4);
          const uint16_t h = type == PMOE_DTYPE_F16 ? pmoe_fp32_to_fp16(v) : pmoe_fp32_to_bf16(v);
          if (type != PMOE_DTYPE_F32) std::memcpy(&w[size_t(i) * 2], &h, 2);
        }
      std::vector<float> x(size_t(n) * kTileCols);
      for (auto& v : x) v = nd(rng);
      // activations as each kernel set reads them
      auto prepared = [&](Order order, Isa isa, uint64_t& stride) {
        const uint64_t xb = prepared_row_bytes(type, n, order, isa);
        stride = xb ? xb : uint64_t(n) * 4;
        std::vector<uint8_t> xp(stride * kTileCols);
        for (int c = 0; c < kTileCols; ++c) {
          if (xb) prepare_row(type, order, x.data() + c * n, xp.data() + c * stride, n, isa);
          else std::memcpy(xp.data() + c * stride, x.data() + c * n, size_t(n) * 4);
        }
        return xp;
      };
      for (Order order : {Order::vec_dot, Order::gemv, Order::gemm})
        for (int nc = 1; nc <= kTileCols; ++nc) {
          float ref[kTileCols], got[kTileCols];
          uint64_t s_ref, s_got;
          const auto x_ref = prepared(order, Isa::scalar, s_ref), x_got = prepared(order, kernel_isa(), s_got);
          scalar_tile(type)(w.data(), x_ref.data(), s_ref, nc, n, order, ref);
          tile_kernel(type, order)(w.data(), x_got.data(), s_got, nc, n, order, got);
          INFO(std::string(isa_name(kernel_isa())) << " " << std::string(pmoe_dtype_name(type)) << " n " << n << " order " << int(order) << " nc " << nc);
          INFO("scalar " << ref[0] << " vs " << got[0]);
          CHECK(std::memcmp(ref, got, size_t(nc) * 4) == 0);
        }
    }
}

// Two-row kernels must give each row the bits of the scalar one-row kernel.
TEST_CASE("two-row kernels give each row the scalar kernels' bits") {
  std::mt19937 rng(12);
  std::normal_distribution<float> nd(0.f, 1.f);
  int checked = 0;
  for (uint32_t type = 0; type < 40; ++type) {
    if (!pmoe_dtype_name(type)) continue;
    const Order order = sum_order(type, 2);
    const PairTileFn pair = pair_tile_kernel(type, order);
    if (!pair) continue;
    for (int64_t n : {32, 768}) {
      const uint64_t row = pmoe_dtype_row_bytes(type, uint64_t(n));
      const std::vector<uint8_t> w = pmoe::testref::random_blocks(rng, type, size_t(2 * row / pmoe_dtype_block_bytes(type)));
      std::vector<float> x(size_t(n) * kTileCols);
      for (auto& v : x) v = nd(rng);
      auto prepared = [&](Isa isa) {
        const uint64_t xb = prepared_row_bytes(type, n, order, isa);
        std::vector<uint8_t> xp(xb * kTileCols);
        for (int c = 0; c < kTileCols; ++c) prepare_row(type, order, x.data() + c * n, xp.data() + c * xb, n, isa);
        return xp;
      };
      const auto x_ref = prepared(Isa::scalar), x_got = prepared(kernel_isa());
      const uint64_t s_ref = x_ref.size() / kTileCols, s_got = x_got.size() / kTileCols;
      for (int nc = 1; nc <= kTileCols; ++nc) {
        float ref[2][kTileCols], got[2 * kTileCols];
        for (int r = 0; r < 2; ++r) scalar_tile(type)(w.data() + r * row, x_ref.data(), s_ref, nc, n, order, ref[r]);
        pair(w.data(), row, x_got.data(), s_got, nc, n, order, got);
        INFO(std::string(isa_name(kernel_isa())) << " " << std::string(pmoe_dtype_name(type)) << " n " << n << " nc " << nc << " order " << int(order));
        CHECK(std::memcmp(ref[0], got, size_t(nc) * 4) == 0);
        CHECK(std::memcmp(ref[1], got + kTileCols, size_t(nc) * 4) == 0);
        ++checked;
      }
    }
  }
  if (kernel_isa() >= Isa::avx512_vnni) CHECK(checked > 0);  // Q8_0 has one there
}

// Sixteen-row kernels (decode's Q4_0/IQ4_NL/Q4_K gemv, per-row chains in SIMD lanes) must give each
// row the bits of the scalar one-row kernel, for rows anywhere (the sparse `up` picks rows).
TEST_CASE("sixteen-row kernels give each row the scalar kernels' bits, rows anywhere") {
  std::mt19937 rng(13);
  std::normal_distribution<float> nd(0.f, 1.f);
  int checked = 0;
  for (uint32_t type : {PMOE_DTYPE_Q4_0, PMOE_DTYPE_IQ4_NL, PMOE_DTYPE_Q4_K}) {
    const Rows16Fn rows16 = rows16_kernel(type, Order::gemv);
    if (!rows16) continue;
    const bool k_quant = type == PMOE_DTYPE_Q4_K;
    // Q4_0/IQ4_NL: 7 blocks are a group of 4 and 3 plain Q8_0 ones after it; 64: the extremes
    for (int64_t n : k_quant ? std::vector<int64_t>{256, 1536, 768} : std::vector<int64_t>{32 * 7, 1536, 64}) {
      const int64_t n_rows = 40;
      const uint64_t row = pmoe_dtype_row_bytes(type, uint64_t(n));
      std::vector<uint8_t> w = pmoe::testref::random_blocks(rng, type, size_t(n_rows * row / pmoe_dtype_block_bytes(type)));
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x) v = nd(rng);
      if (n == 64 && !k_quant) {  // extremes: every value the most negative (Q4_0 -8, IQ4_NL -127), x all alike
        for (size_t b = 0; b < w.size(); b += 18) std::fill(w.begin() + long(b) + 2, w.begin() + long(b) + 18, 0);
        std::fill(x.begin(), x.end(), 1.f);
      }
      std::vector<uint8_t> x_ref(prepared_row_bytes(type, n, Order::gemv, Isa::scalar)), x_got(prepared_row_bytes(type, n, Order::gemv));
      prepare_row(type, Order::gemv, x.data(), x_ref.data(), n, Isa::scalar);
      prepare_row(type, Order::gemv, x.data(), x_got.data(), n);
      for (bool scattered : {false, true}) {
        int32_t picked[16], off[16];
        for (int k = 0; k < 16; ++k) picked[k] = scattered ? 2 * k + int32_t(rng() % 2) + (k > 8 ? 7 : 0) : k;
        for (int k = 0; k < 16; ++k) off[k] = int32_t((picked[k] - picked[0]) * int64_t(row));
        float got[16];
        rows16(w.data() + uint64_t(picked[0]) * row, off, scattered ? off : nullptr, x_got.data(), n, got);
        for (int k = 0; k < 16; ++k) {
          float ref;
          scalar_tile(type)(w.data() + uint64_t(picked[k]) * row, x_ref.data(), 0, 1, n, Order::gemv, &ref);
          INFO(pmoe_dtype_name(type) << " n " << n << " row " << picked[k]);
          CHECK(std::memcmp(&ref, &got[k], 4) == 0);
        }
        ++checked;
      }
    }
  }
  if (kernel_isa() >= Isa::avx2) CHECK(checked == (kernel_isa() >= Isa::avx512_vnni ? 18 : 12));  // (Q4_K: AVX-512)
}

// Sixteen-row tile kernels (prefill: 16 rows against up to 4 activation rows) must give every
// (row, column) the scalar one-row kernel's bits, in gemv and gemm order, for rows anywhere.
TEST_CASE("sixteen-row tile kernels give each row and column the scalar kernels' bits") {
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.f, 1.f);
  int checked = 0;
  for (uint32_t type : {PMOE_DTYPE_Q4_0, PMOE_DTYPE_IQ4_NL})
    for (Order order : {Order::gemv, Order::gemm}) {
      const Rows16TileFn tile16 = rows16_tile_kernel(type, order);
      if (!tile16) continue;
      for (int64_t n : {32 * 7, 1536, 64}) {
        const uint64_t row = pmoe_dtype_row_bytes(type, uint64_t(n));
        std::vector<uint8_t> w = pmoe::testref::random_blocks(rng, type, size_t(40 * row / pmoe_dtype_block_bytes(type)));
        std::vector<float> x(static_cast<size_t>(4 * n));
        for (auto& v : x) v = nd(rng);
        if (n == 64) {  // extremes: every value the most negative, x all alike
          for (size_t b = 0; b < w.size(); b += 18) std::fill(w.begin() + long(b) + 2, w.begin() + long(b) + 18, 0);
          std::fill(x.begin(), x.end(), 1.f);
        }
        const uint64_t rs = prepared_row_bytes(type, n, order, Isa::scalar), rg = prepared_row_bytes(type, n, order);
        std::vector<uint8_t> x_ref(4 * rs), x_got(4 * rg);
        for (int c = 0; c < 4; ++c) {
          prepare_row(type, order, &x[size_t(c * n)], &x_ref[c * rs], n, Isa::scalar);
          prepare_row(type, order, &x[size_t(c * n)], &x_got[c * rg], n);
        }
        for (int nc = 1; nc <= 4; ++nc) {
          int32_t picked[16], off[16];
          for (int k = 0; k < 16; ++k) picked[k] = nc % 2 ? k : 2 * k + int32_t(rng() % 2);
          for (int k = 0; k < 16; ++k) off[k] = int32_t((picked[k] - picked[0]) * int64_t(row));
          float got[16 * 4];
          tile16(w.data() + uint64_t(picked[0]) * row, off, x_got.data(), rg, nc, n, got);
          for (int c = 0; c < nc; ++c)
            for (int k = 0; k < 16; ++k) {
              float ref;
              scalar_tile(type)(w.data() + uint64_t(picked[k]) * row, &x_ref[c * rs], 0, 1, n, order, &ref);
              INFO(pmoe_dtype_name(type) << " n " << n << " nc " << nc << " row " << picked[k] << " col " << c);
              CHECK(std::memcmp(&ref, &got[16 * c + k], 4) == 0);
            }
          ++checked;
        }
      }
    }
  if (kernel_isa() == Isa::avx2) CHECK(checked == 48);
}

TEST_CASE("ggml's exp for the softmax: exact at 0, zero below -104, and within 2 ulp of expf") {
  float x[16], y[16];
  for (int i = 0; i < 16; ++i) x[i] = -0.7f * float(i);
  x[15] = -INFINITY, x[14] = -200.f;
  expf16(x, y);
  CHECK(y[0] == 1.f);
  CHECK(y[15] == 0.f);
  CHECK(y[14] == 0.f);
  for (int i = 1; i < 14; ++i) CHECK(std::fabs(y[i] - std::exp(x[i])) <= 2.5e-7f * std::exp(x[i]));
}

TEST_CASE("attention: the kernel set in use gives the scalar kernel's bits") {
  // one query head against keys j0..p: short and long contexts, a sliding window (j0 > 0), keys
  // past a multiple of 64 (vec_dot's tail in double), batch (tinyBLAS) and single-query order, the
  // AVX-512 kernel's head sizes (64, 128, 256) and others; a cache that ends at p (n_vec capped):
  // with a window past the last multiple of 64 no key is in the lanes, all in the tail
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  const AttendFn fn = attend_kernel();
  for (auto [hd, j0, p, batch, capped] :
       {std::tuple{128, 0, 0, false, false}, {128, 0, 37, false, false}, {128, 0, 200, false, false},
        {64, 0, 130, true, false}, {128, 70, 300, false, false}, {128, 5, 63, true, false}, {80, 0, 140, false, false},
        {128, 0, 700, false, false}, {8, 3, 90, true, false}, {64, 0, 200, false, false}, {64, 3, 40, false, false},
        {256, 0, 200, false, false}, {256, 70, 300, false, false}, {128, 200, 210, false, true},
        {128, 0, 150, false, true}}) {
    CAPTURE(hd);
    CAPTURE(j0);
    CAPTURE(p);
    CAPTURE(batch);
    CAPTURE(capped);
    const int64_t n_kv = capped ? p + 1 : p + 40, ks = 2 * hd, n_vec = std::min<int64_t>(n_kv, (p / 32 + 1) * 32);
    std::vector<float> q(static_cast<size_t>(hd)), k(static_cast<size_t>(n_kv * ks)), v(static_cast<size_t>(n_kv * ks));
    for (auto* t : {&q, &k, &v})
      for (float& x : *t) x = nd(rng);
    std::vector<float> ref(static_cast<size_t>(hd)), out(static_cast<size_t>(hd), -1.f);
    auto run = [&](AttendFn f, float* dst) {
      // scratch starts dirty (the backend keeps it across calls)
      std::vector<float> w(size_t(p + 17), NAN), lanes(size_t(64 * hd), 7.f);
      std::vector<double> wide(static_cast<size_t>(hd), NAN);
      f(q.data(), k.data() + hd, ks, v.data() + hd, ks, hd, j0, p, 0.125f, batch, n_vec, dst,
        AttendScratch{w.data(), lanes.data(), wide.data()});
    };
    run(attend_scalar, ref.data());
    run(fn, out.data());
    CHECK(std::memcmp(ref.data(), out.data(), ref.size() * 4) == 0);
  }
}

namespace {
/// The value (0..15) and the byte in the neuron-major columns of row r, neuron n: each column is
/// n_out / 2 bytes, groups of 128 rows 64 bytes, byte p(i) of row i < 64 of its group (low
/// nibble) and of row 64 + i (high one), p(q) = 2 q for q < 32, 2 (q - 32) + 1 above.
int column_value(const uint8_t* cols, int64_t n_out, int64_t n, int64_t r) {
  const int64_t g = r / 128 * 128, i = r % 128, q = i % 64;
  const int64_t p = q < 32 ? 2 * q : 2 * (q - 32) + 1;
  const uint8_t byte = cols[n * (n_out / 2) + g / 2 + p];
  return i < 64 ? byte & 15 : byte >> 4;
}

/// Every sparse down kernel of `type` this CPU runs, against the kernel set's dense gemv: memcmp,
/// all rows and row ranges alone (which write no other rows).
void check_sparse_down(uint32_t type, const std::vector<uint8_t>& dense_w, const std::vector<uint8_t>& major,
                       int64_t n_out, int64_t n_in, const std::vector<float>& a, const std::vector<int32_t>& active) {
  std::vector<uint8_t> xq(prepared_row_bytes(type, n_in, Order::gemv));
  prepare_row(type, Order::gemv, a.data(), xq.data(), n_in);
  std::vector<float> dense(static_cast<size_t>(n_out));
  const TileFn tile = tile_kernel(type, Order::gemv);
  const uint64_t row_bytes = pmoe_dtype_row_bytes(type, n_in);
  for (int64_t i = 0; i < n_out; ++i) tile(&dense_w[uint64_t(i) * row_bytes], xq.data(), 0, 1, n_in, Order::gemv, &dense[size_t(i)]);
  std::vector<uint8_t> act(sparse_act_bytes(type, n_in));
  prepare_sparse_act(type, a.data(), act.data(), n_in);
  std::vector<std::pair<const char*, SparseDownFn>> kernels;
  if (type == PMOE_DTYPE_Q4_0) {
    kernels.emplace_back("scalar", sparse_down_scalar);
    if (kernel_isa() >= Isa::avx2) kernels.emplace_back("avx2", sparse_down_avx2);
    if (kernel_isa() >= Isa::avx512_vnni) kernels.emplace_back("avx512", sparse_down_avx512);
  } else {
    kernels.emplace_back("scalar", sparse_down_q4k_scalar);
    if (kernel_isa() >= Isa::avx2) kernels.emplace_back("avx2", sparse_down_q4k_avx2);
    if (kernel_isa() >= Isa::avx512_vnni) kernels.emplace_back("avx512", sparse_down_q4k_avx512);
  }
  for (auto [name, fn] : kernels) {
    const std::string kernel = name;
    CAPTURE(kernel);
    std::vector<float> y(size_t(n_out), -1.f);
    fn(major.data(), n_out, n_in, act.data(), active.data(), int64_t(active.size()), 0, n_out, y.data());
    CHECK(std::memcmp(y.data(), dense.data(), y.size() * 4) == 0);
    for (auto [i0, i1] : {std::pair{n_out - 128, n_out}, {n_out > 256 ? 128 : 0, n_out > 256 ? n_out - 128 : 128}}) {
      CAPTURE(i0);
      std::vector<float> part(size_t(n_out), -1.f);
      fn(major.data(), n_out, n_in, act.data(), active.data(), int64_t(active.size()), i0, i1, part.data());
      CHECK(std::memcmp(part.data() + i0, dense.data() + i0, size_t(i1 - i0) * 4) == 0);
      int64_t outside = 0;
      for (int64_t i = 0; i < n_out; ++i) outside += (i < i0 || i >= i1) && part[size_t(i)] != -1.f;
      CHECK(outside == 0);
    }
  }
  CHECK(bool(sparse_down_kernel(type)));
}

/// The blocks `w` as bytes, and re-laid neuron-major.
template <class Block>
std::pair<std::vector<uint8_t>, std::vector<uint8_t>> dense_and_major(uint32_t type, const std::vector<Block>& w,
                                                                      int64_t n_out, int64_t n_in) {
  std::vector<uint8_t> dense(w.size() * sizeof(Block)), major(dense.size());
  std::memcpy(dense.data(), w.data(), dense.size());
  relayout_neuron_major(type, dense.data(), major.data(), n_out, n_in);
  return {dense, major};
}

/// Activations a = relu(g) * u with about `sparsity` zeros, neurons [dead0, dead1) all zero, the
/// first active one's |q_a| = 127; and the list of active neurons. Sparsity < 0: every neuron
/// active at -1 (q_a = -127 everywhere: the 16-bit sums' extremes against weights 0 or 15).
std::vector<float> sparse_activations(std::mt19937& rng, int64_t n_in, double sparsity, int64_t dead0, int64_t dead1,
                                      std::vector<int32_t>& active) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::bernoulli_distribution on(std::min(1.0, 1.0 - sparsity));
  std::vector<float> a(static_cast<size_t>(n_in));
  active.clear();
  for (int64_t o = 0; o < n_in; ++o) {
    const bool live = on(rng) && !(o >= dead0 && o < dead1);
    a[size_t(o)] = !live ? 0.f : sparsity < 0 ? -1.f : std::fabs(nd(rng)) * nd(rng);
    if (live) active.push_back(int32_t(o));
  }
  if (!active.empty() && sparsity >= 0) a[size_t(active[0])] = 40.f;
  return a;
}
}  // namespace

TEST_CASE("sparse ReGLU's lists: active neurons of any token, relu(g) * u with inactive ones +0") {
  // gates of every kind (positive, negative, +-0, NaN, +-inf) at lengths around the 16-lane steps;
  // the `up` values of inactive neurons are infinities, whose products must not reach g
  std::mt19937 rng(12);
  std::normal_distribution<float> nd(0.f, 1.f);
  const float specials[] = {0.f, -0.f, NAN, INFINITY, -INFINITY, 1e-40f, -1e-40f};
  for (int64_t n_ff : {1, 15, 16, 17, 33, 768, 770}) {
    for (int64_t R : {1, 2, 4}) {
      CAPTURE(n_ff);
      CAPTURE(R);
      std::vector<float> gate(size_t(R * n_ff)), up(gate.size());
      for (size_t i = 0; i < gate.size(); ++i) {
        gate[i] = rng() % 5 == 0 ? specials[rng() % 7] : nd(rng);
        up[i] = !(gate[i] <= 0.f) ? nd(rng) : INFINITY;
      }
      std::vector<int32_t> any, list(size_t(n_ff) + 16, -1);
      for (int64_t o = 0; o < n_ff; ++o) {
        bool on = false;
        for (int64_t t = 0; t < R; ++t) on |= !(gate[size_t(t * n_ff + o)] <= 0.f);
        if (on) any.push_back(int32_t(o));
      }
      REQUIRE(active_neurons(gate.data(), R, n_ff, n_ff, list.data()) == int64_t(any.size()));
      CHECK(std::equal(any.begin(), any.end(), list.begin()));
      for (int64_t t = 0; t < R; ++t) {
        float* g = &gate[size_t(t * n_ff)];
        std::vector<float> want(g, g + n_ff);
        std::vector<int32_t> on;
        for (int64_t o = 0; o < n_ff; ++o) {
          if (!(g[o] <= 0.f)) on.push_back(int32_t(o));
          want[size_t(o)] = !(g[o] <= 0.f) ? g[o] * up[size_t(t * n_ff + o)] : 0.f;
        }
        REQUIRE(reglu_listed(g, &up[size_t(t * n_ff)], n_ff, list.data()) == int64_t(on.size()));
        CHECK(std::equal(on.begin(), on.end(), list.begin()));
        CHECK(std::memcmp(want.data(), g, size_t(n_ff) * 4) == 0);
      }
    }
  }
}

TEST_CASE("sparse down over the active neurons, neuron-major Q4_0, gives the dense gemv's bits") {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> byte(0, 255);
  // (2304 rows: more than one kernel pass of 2048, as the 21B's 2560)
  for (auto [n_out, n_in, sparsity] : {std::tuple{128, 32, 0.6}, {384, 768, 0.6}, {128, 256, 0.0}, {256, 256, 0.95},
                                       {128, 96, 1.0}, {2304, 64, 0.6}, {256, 128, -1.0}}) {
    CAPTURE(n_out);
    CAPTURE(n_in);
    CAPTURE(sparsity);
    const int64_t nb = n_in / 32;
    std::vector<BlockQ4_0> w(size_t(n_out * nb));
    for (auto& blk : w) {
      blk.d = pmoe_fp32_to_fp16(nd(rng) * 0.01f);
      for (auto& q : blk.qs) q = uint8_t(byte(rng));
    }
    w[0].qs[0] = 0xF0, w[1].qs[3] = 0x0F;  // the extreme values 0 and 15
    if (sparsity < 0)  // every row's first block all 0, its second all 15
      for (int64_t r = 0; r < n_out; ++r) std::fill_n(w[size_t(r * nb)].qs, 16, 0x00), std::fill_n(w[size_t(r * nb + 1)].qs, 16, 0xFF);
    std::vector<int32_t> active;
    const std::vector<float> a = sparse_activations(rng, n_in, sparsity, 32, 64, active);  // one whole block inactive
    REQUIRE(neuron_major_supported(PMOE_DTYPE_Q4_0, n_out, n_in));
    const auto [dense_w, major] = dense_and_major(PMOE_DTYPE_Q4_0, w, n_out, n_in);
    // the layout, byte by byte, as sparse_ffn.hpp states it
    const uint8_t* cols = major.data() + nb * n_out * 2;
    int64_t wrong = 0;
    for (int64_t r = 0; r < n_out; ++r)
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ4_0& blk = w[size_t(r * nb + b)];
        uint16_t d;
        std::memcpy(&d, major.data() + (b * n_out + r) * 2, 2);
        wrong += d != blk.d;
        for (int64_t k = 0; k < 32; ++k)
          wrong += column_value(cols, n_out, 32 * b + k, r) != (k < 16 ? blk.qs[k] & 15 : blk.qs[k - 16] >> 4);
      }
    CHECK(wrong == 0);
    check_sparse_down(PMOE_DTYPE_Q4_0, dense_w, major, n_out, n_in, a, active);
  }
  CHECK_FALSE(neuron_major_supported(PMOE_DTYPE_Q4_0, 192, 64));  // rows not a multiple of 128
  CHECK_FALSE(neuron_major_supported(PMOE_DTYPE_Q8_0, 64, 64));
}

TEST_CASE("sparse down over the active neurons, neuron-major Q4_K, gives the dense gemv's bits") {
  // (the backend uses it where the AVX2 or AVX-512 kernels run; the layout and the scalar kernel
  // are checked everywhere)
  CHECK(neuron_major_supported(PMOE_DTYPE_Q4_K, 128, 256) == (kernel_isa() >= Isa::avx2));
  std::mt19937 rng(12);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> byte(0, 255);
  // whole sub-blocks and a whole super-block inactive; 2304 rows: two kernel passes
  for (auto [n_out, n_in, sparsity, dead0, dead1] :
       {std::tuple{128, 256, 0.6, 32, 64}, {384, 768, 0.6, 256, 512}, {128, 512, 0.0, 0, 0}, {256, 256, 0.95, 0, 0},
        {128, 256, 1.0, 0, 0}, {2304, 256, 0.6, 96, 160}, {2304, 512, 0.6, 0, 32}, {256, 256, -1.0, 0, 0}}) {
    CAPTURE(n_out);
    CAPTURE(n_in);
    CAPTURE(sparsity);
    const int64_t nk = n_in / 256;
    std::vector<BlockQ4K> w(size_t(n_out * nk));
    for (auto& blk : w) {
      blk.d = pmoe_fp32_to_fp16(std::fabs(nd(rng)) * 0.01f);
      blk.dmin = pmoe_fp32_to_fp16(std::fabs(nd(rng)) * 0.01f);
      for (auto& s : blk.scales) s = uint8_t(byte(rng));
      for (auto& q : blk.qs) q = uint8_t(byte(rng));
    }
    w[0].qs[0] = 0xF0, w[1].qs[3] = 0x0F, w[2].scales[0] = 0xFF, w[2].scales[8] = 0xFF;  // extreme values and scales
    if (sparsity < 0)  // every row's sub-block 0 all 0, sub-block 1 all 15 (the low and high nibbles of qs[0..31])
      for (int64_t r = 0; r < n_out; ++r)
        for (int i = 0; i < 32; ++i) w[size_t(r * nk)].qs[i] = 0xF0;
    std::vector<int32_t> active;
    const std::vector<float> a = sparse_activations(rng, n_in, sparsity, dead0, dead1, active);
    const auto [dense_w, major] = dense_and_major(PMOE_DTYPE_Q4_K, w, n_out, n_in);
    // the layout, byte by byte, as sparse_ffn.hpp states it
    const uint8_t* cols = major.data() + nk * n_out * 16;
    int64_t wrong = 0;
    for (int64_t r = 0; r < n_out; ++r)
      for (int64_t k = 0; k < nk; ++k) {
        const BlockQ4K& blk = w[size_t(r * nk + k)];
        const uint8_t* h = major.data() + (k * (n_out / 128) + r / 128) * 2048;
        const int64_t i = r % 128;
        wrong += std::memcmp(h + 2 * i, &blk.d, 2) != 0;
        wrong += std::memcmp(h + 256 + 2 * i, &blk.dmin, 2) != 0;
        for (int f = 0; f < 12; ++f) wrong += h[512 + 128 * f + i] != blk.scales[f];
        for (int64_t v = 0; v < 256; ++v) {  // value v: byte 32 (v / 64) + v % 32, high nibble for v % 64 >= 32
          const uint8_t q = blk.qs[32 * (v / 64) + v % 32];
          wrong += column_value(cols, n_out, 256 * k + v, r) != (v % 64 < 32 ? q & 15 : q >> 4);
        }
      }
    CHECK(wrong == 0);
    check_sparse_down(PMOE_DTYPE_Q4_K, dense_w, major, n_out, n_in, a, active);
  }
  CHECK_FALSE(neuron_major_supported(PMOE_DTYPE_Q4_K, 128, 128));  // neurons not a multiple of 256
  CHECK_FALSE(bool(sparse_down_kernel(PMOE_DTYPE_Q8_0)));
}
