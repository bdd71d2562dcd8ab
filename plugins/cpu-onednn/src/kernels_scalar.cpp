// Portable kernels: the reference the vector kernels are tested against bit for bit, what runs on
// a CPU without AVX2, and the vector sets' fallback for the rare shapes where llama.cpp sums a
// repacked type with vec_dot. Blocks are first unpacked into small integers (unpack.hpp), then
// summed in llama.cpp's order (docs/quant-types.md):
//   vec_dot  8 float lanes; lane l gets the integer sum of values 4l..4l+3 of every 32-value chunk
//            of a block (with its sub-block scale), via fma(d, sum, lane); then ggml's hsum8.
//   gemv     one float chain: fma(sum of the whole block or super-block, dw * dx, acc).
//   gemm     the same with the super-block cut in parts (Q4_K: 4 of 64 values, Q2_K: 2 of 128).
#include "kernels.hpp"
#include "unpack.hpp"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <type_traits>

namespace pmoe::cpu {

namespace {

float f16(uint16_t h) { return pmoe_fp16_to_fp32(h); }

// ---- float weights ------------------------------------------------------------------------------
// F32 as llama.cpp sums it. vec_dot (one token): 4 chains of 16 lanes over steps of 64, added
// pairwise and reduced, the n % 64 rest added in double. gemm (llamafile's tinyBLAS, batches, n a
// multiple of 16): one chain of 16 lanes, reduced. F16 and BF16 weights take the vec_dot order
// on their values converted to float (the same on every kernel set).
template <class W, class X>
float dot_floats(W w, X x, int64_t n, Order order) {
  if (order == Order::gemm) {
    float c[16] = {};
    for (int64_t i = 0; i < n; i += 16)
      for (int l = 0; l < 16; ++l) c[l] = std::fma(w(i + l), x(i + l), c[l]);
    return hsum16(c);
  }
  float c[4][16] = {};
  const int64_t np = n & ~int64_t(63);
  for (int64_t i = 0; i < np; i += 64)
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 16; ++l) c[j][l] = std::fma(w(i + 16 * j + l), x(i + 16 * j + l), c[j][l]);
  for (int l = 0; l < 16; ++l) c[0][l] = (c[0][l] + c[2][l]) + (c[1][l] + c[3][l]);
  double sum = hsum16(c[0]);
  for (int64_t i = np; i < n; ++i) sum += double(w(i) * x(i));
  return float(sum);
}
float dot_f32(const void* w, const void* x, int64_t n, Order order) {
  auto *a = static_cast<const float*>(w), *b = static_cast<const float*>(x);
  return dot_floats([a](int64_t i) { return a[i]; }, [b](int64_t i) { return b[i]; }, n, order);
}
float dot_f16(const void* w, const void* x, int64_t n, Order) {
  auto* a = static_cast<const uint16_t*>(w);
  auto* b = static_cast<const float*>(x);
  return dot_floats([a](int64_t i) { return f16(a[i]); }, [b](int64_t i) { return b[i]; }, n, Order::vec_dot);
}
float dot_bf16(const void* w, const void* x, int64_t n, Order) {  // x: bf16 too
  auto* a = static_cast<const uint16_t*>(w);
  auto* b = static_cast<const uint16_t*>(x);
  return dot_floats([a](int64_t i) { return pmoe_bf16_to_fp32(a[i]); }, [b](int64_t i) { return pmoe_bf16_to_fp32(b[i]); }, n,
                    Order::vec_dot);
}

/// Integer sum of v[i] * q[i] over i in [first, first + count).
int isum(const int8_t* v, const int8_t* q, int first, int count) {
  int s = 0;
  for (int i = first; i < first + count; ++i) s += int(v[i]) * int(q[i]);
  return s;
}

// ---- 32-value blocks ------------------------------------------------------------------------------
/// IQ4_NL's vec_dot (llama.cpp uses it only for tensors whose rows are not a multiple of 8): even
/// and odd blocks in two 8-lane accumulators, added before the final sum; a last odd block alone.
float dot_iq4nl_vec_dot(const BlockIQ4NL* a, const BlockQ8_0* b, int64_t nb) {
  float lanes[2][8] = {}, sum[8];
  int8_t v[32];
  int64_t k = 0;
  for (; k + 1 < nb; k += 2)
    for (int h = 0; h < 2; ++h) {
      const float d = unpack_block(a[k + h], v) * f16(b[k + h].d);
      for (int l = 0; l < 8; ++l) lanes[h][l] = std::fma(d, float(isum(v, b[k + h].qs, 4 * l, 4)), lanes[h][l]);
    }
  for (int l = 0; l < 8; ++l) sum[l] = lanes[0][l] + lanes[1][l];
  float s = hsum8(sum);
  if (k < nb) {
    const float d = unpack_block(a[k], v) * f16(b[k].d);  // fills v before isum reads it
    s = std::fma(d, float(isum(v, b[k].qs, 0, 32)), s);
  }
  return s;
}

template <class Block>
float dot_q8_0_act(const void* w, const void* x, int64_t n, Order order) {
  auto* a = static_cast<const Block*>(w);
  auto* b = static_cast<const BlockQ8_0*>(x);
  if constexpr (std::is_same_v<Block, BlockIQ4NL>)
    if (order == Order::vec_dot) return dot_iq4nl_vec_dot(a, b, n / 32);
  // only Q4_0 and IQ4_NL are ever repacked; gemv and gemm sum them the same way
  if (!std::is_same_v<Block, BlockQ4_0> && !std::is_same_v<Block, BlockIQ4NL>) order = Order::vec_dot;
  float lanes[8] = {}, chain = 0.f;
  int8_t v[32];
  for (int64_t k = 0; k < n / 32; ++k) {
    const float d = unpack_block(a[k], v) * f16(b[k].d);
    if (order != Order::vec_dot)
      chain = std::fma(float(isum(v, b[k].qs, 0, 32)), d, chain);
    else
      for (int l = 0; l < 8; ++l) lanes[l] = std::fma(d, float(isum(v, b[k].qs, 4 * l, 4)), lanes[l]);
  }
  return order != Order::vec_dot ? chain : hsum8(lanes);
}

template <class Block>
float dot_q8_1_act(const void* w, const void* x, int64_t n, Order) {
  auto* a = static_cast<const Block*>(w);
  auto* b = static_cast<const BlockQ8_1*>(x);
  float lanes[8] = {}, summs = 0.f;
  int8_t v[32];
  for (int64_t k = 0; k < n / 32; ++k) {
    const float d = unpack_block(a[k], v) * f16(b[k].d);
    for (int l = 0; l < 8; ++l) lanes[l] = std::fma(d, float(isum(v, b[k].qs, 4 * l, 4)), lanes[l]);
    summs = std::fma(f16(a[k].m), f16(b[k].s), summs);
  }
  return hsum8(lanes) + summs;
}

// ---- 256-value super-blocks ------------------------------------------------------------------------
/// sum over groups [g0, g1) of scale[g] * (v . q)_g, and of min[g] * bsum[g].
void group_sums(const SuperBlock& u, const BlockQ8K& b, int g0, int g1, int& main, int& mins) {
  main = mins = 0;
  for (int g = g0; g < g1; ++g) {
    main += int(u.scale[g]) * isum(u.v, b.qs, 16 * g, 16);
    mins += int(u.min[g]) * int(b.bsums[g]);
  }
}

template <class Block>
float dot_q8_k_act(const void* w, const void* x, int64_t n, Order order) {
  auto* a = static_cast<const Block*>(w);
  auto* b = static_cast<const BlockQ8K*>(x);
  constexpr bool q2k = std::is_same_v<Block, BlockQ2K>, q4k = std::is_same_v<Block, BlockQ4K>;
  constexpr bool q5k = std::is_same_v<Block, BlockQ5K>, q6k = std::is_same_v<Block, BlockQ6K>;
  if (!q2k && !q4k) order = Order::vec_dot;  // only Q4_K and Q2_K are ever repacked
  float lanes[8] = {}, mlanes[4] = {}, summs = 0.f, acc = 0.f, accmin = 0.f;
  SuperBlock u;
  for (int64_t k = 0; k < n / 256; ++k) {
    unpack_super(a[k], u);
    if (order != Order::vec_dot) {  // Q4_K, Q2_K as llama.cpp repacks them
      const int parts = order == Order::gemv ? 1 : q4k ? 4 : 2;
      for (int p = 0; p < parts; ++p) {
        int main, mins;
        group_sums(u, b[k], 16 * p / parts, 16 * (p + 1) / parts, main, mins);
        acc = std::fma(float(main), u.d * b[k].d, acc);
        accmin = std::fma(float(mins), u.dmin * b[k].d, accmin);
      }
      continue;
    }
    const float d = b[k].d * u.d, dmin = -b[k].d * u.dmin;
    if constexpr (q2k) {  // its vec_dot adds the mins first, lane l taking groups 2l and 2l + 1
      for (int l = 0; l < 8; ++l)
        lanes[l] = std::fma(dmin, float(u.min[2 * l] * b[k].bsums[2 * l] + u.min[2 * l + 1] * b[k].bsums[2 * l + 1]), lanes[l]);
    }
    for (int l = 0; l < 8; ++l) {
      int s = 0;
      for (int c = 0; c < 8; ++c) {
        int q = isum(u.v, b[k].qs, 32 * c + 4 * l, 4);
        if constexpr (q6k)  // ggml's values are unsigned (v + 32)
          for (int i = 0; i < 4; ++i) q += 32 * b[k].qs[32 * c + 4 * l + i];
        s += int(u.scale[2 * c + l / 4]) * q;
      }
      if constexpr (q6k)  // ... and 32 * scale * bsum comes off lane l, for groups 2l and 2l + 1
        s -= 32 * (u.scale[2 * l] * b[k].bsums[2 * l] + u.scale[2 * l + 1] * b[k].bsums[2 * l + 1]);
      lanes[l] = std::fma(d, float(s), lanes[l]);
    }
    if constexpr (q4k)  // 4 lanes, lane j taking sub-blocks 2j and 2j + 1
      for (int j = 0; j < 4; ++j) {
        int m = 0;
        for (int g = 4 * j; g < 4 * j + 4; ++g) m += int(u.min[g]) * int(b[k].bsums[g]);
        mlanes[j] = std::fma(dmin, float(m), mlanes[j]);
      }
    if constexpr (q5k) {
      int m = 0;
      for (int g = 0; g < 16; ++g) m += int(u.min[g]) * int(b[k].bsums[g]);
      summs += dmin * float(m);
    }
  }
  if (order != Order::vec_dot) return acc - accmin;
  if constexpr (q4k) return hsum8(lanes) + ((mlanes[0] + mlanes[2]) + (mlanes[1] + mlanes[3]));
  return hsum8(lanes) + summs;
}

template <float (*Dot)(const void*, const void*, int64_t, Order)>
void tile(const uint8_t* w, const uint8_t* x, uint64_t x_stride, int nc, int64_t n, Order order, float* out) {
  for (int c = 0; c < nc; ++c) out[c] = Dot(w, x + uint64_t(c) * x_stride, n, order);
}

}  // namespace

TileFn scalar_tile(uint32_t type) {
  switch (type) {
    case PMOE_DTYPE_F32: return tile<dot_f32>;
    case PMOE_DTYPE_F16: return tile<dot_f16>;
    case PMOE_DTYPE_BF16: return tile<dot_bf16>;
    case PMOE_DTYPE_Q4_0: return tile<dot_q8_0_act<BlockQ4_0>>;
    case PMOE_DTYPE_Q5_0: return tile<dot_q8_0_act<BlockQ5_0>>;
    case PMOE_DTYPE_Q8_0: return tile<dot_q8_0_act<BlockQ8_0>>;
    case PMOE_DTYPE_IQ4_NL: return tile<dot_q8_0_act<BlockIQ4NL>>;
    case PMOE_DTYPE_Q4_1: return tile<dot_q8_1_act<BlockQ4_1>>;
    case PMOE_DTYPE_Q5_1: return tile<dot_q8_1_act<BlockQ5_1>>;
    case PMOE_DTYPE_Q2_K: return tile<dot_q8_k_act<BlockQ2K>>;
    case PMOE_DTYPE_Q3_K: return tile<dot_q8_k_act<BlockQ3K>>;
    case PMOE_DTYPE_Q4_K: return tile<dot_q8_k_act<BlockQ4K>>;
    case PMOE_DTYPE_Q5_K: return tile<dot_q8_k_act<BlockQ5K>>;
    case PMOE_DTYPE_Q6_K: return tile<dot_q8_k_act<BlockQ6K>>;
    case PMOE_DTYPE_IQ4_XS: return tile<dot_q8_k_act<BlockIQ4XS>>;
    default: return nullptr;
  }
}

void attend_scalar(const float* q, const float* k, int64_t ks, const float* v, int64_t vs, int64_t hd, int64_t j0, int64_t p,
                   float scale, bool batch, int64_t n_vec, float* out, const AttendScratch& sc) {
  const int64_t n16 = (p / 16 + 1) * 16, c0 = j0 / 16 * 16;  // the blocks of 16 keys that matter
  float* w = sc.w;
  for (int64_t j = c0; j < n16; ++j) w[j] = -INFINITY;
  float mx = -INFINITY;
  for (int64_t j = j0; j <= p; ++j) {
    w[j] = dot_f32(k + j * ks, q, hd, Order::vec_dot) * scale;
    mx = std::max(mx, w[j]);
  }
  double sum = 0.0;
  for (int64_t c = c0; c < n16; c += 16) {
    float x[16];
    for (int i = 0; i < 16; ++i) x[i] = w[c + i] - mx;
    expf16(x, &w[c]);
    sum += double(hsum16(&w[c]));
  }
  const float inv = float(1.0 / sum);
  for (int64_t j = j0; j <= p; ++j) w[j] *= inv;
  float* lanes = sc.lanes;
  if (batch) {  // tinyBLAS: lane j % 16 of a 16-lane chain per output, then reduced
    std::fill(lanes, lanes + 16 * hd, 0.f);
    for (int64_t j = j0; j <= p; ++j)
      for (int64_t i = 0; i < hd; ++i) lanes[j % 16 * hd + i] = std::fma(v[j * vs + i], w[j], lanes[j % 16 * hd + i]);
    for (int64_t i = 0; i < hd; ++i) {
      float a[16];
      for (int l = 0; l < 16; ++l) a[l] = lanes[l * hd + i];
      out[i] = hsum16(a);
    }
    return;
  }
  // vec_dot over n_vec keys: 4 chains of 16 lanes over steps of 64, then the rest in double
  const int64_t np = n_vec / 64 * 64;
  std::fill(lanes, lanes + 64 * hd, 0.f);
  for (int64_t j = j0; j <= p && j < np; ++j)
    for (int64_t i = 0; i < hd; ++i) lanes[j % 64 * hd + i] = std::fma(v[j * vs + i], w[j], lanes[j % 64 * hd + i]);
  for (int64_t i = 0; i < hd; ++i) {
    sc.wide[i] = 0.0;
    if (np) {  // chains c and c + 2 added, then 1 + 3, then both, then reduced
      float a[16];
      for (int l = 0; l < 16; ++l) {
        auto L = [&](int c) { return lanes[(16 * c + l) * hd + i]; };
        a[l] = (L(0) + L(2)) + (L(1) + L(3));
      }
      sc.wide[i] = hsum16(a);
    }
  }
  for (int64_t j = std::max(j0, np); j <= p; ++j)
    for (int64_t i = 0; i < hd; ++i) sc.wide[i] += double(v[j * vs + i] * w[j]);
  for (int64_t i = 0; i < hd; ++i) out[i] = float(sc.wide[i]);
}

Order sum_order(uint32_t type, int64_t rows) {
  if (type == PMOE_DTYPE_F32) return Order::vec_dot;  // batches: the caller asks for gemm
  const bool repacked = type == PMOE_DTYPE_Q4_0 || type == PMOE_DTYPE_IQ4_NL || type == PMOE_DTYPE_Q4_K ||
                        type == PMOE_DTYPE_Q2_K;
  return repacked && rows % 8 == 0 ? Order::gemv : Order::vec_dot;
}

namespace {
template <class Block>
void dequant_blocks(const void* src, float* dst, int64_t n) {
  auto* b = static_cast<const Block*>(src);
  int8_t v[32];
  for (int64_t k = 0; k < n / 32; ++k) {
    const float d = unpack_block(b[k], v);
    float m = 0.f;
    if constexpr (requires { b[k].m; }) m = f16(b[k].m);
    for (int j = 0; j < 32; ++j) dst[k * 32 + j] = float(v[j]) * d + m;
  }
}
template <class Block>
void dequant_super(const void* src, float* dst, int64_t n) {
  auto* b = static_cast<const Block*>(src);
  SuperBlock u;
  for (int64_t k = 0; k < n / 256; ++k) {
    unpack_super(b[k], u);
    for (int g = 0; g < 16; ++g) {
      // as GGML: (d * scale) * v - dmin * min
      const float dl = u.d * float(u.scale[g]), ml = u.dmin * float(u.min[g]);
      for (int j = 0; j < 16; ++j) dst[k * 256 + g * 16 + j] = dl * float(u.v[g * 16 + j]) - ml;
    }
  }
}
}  // namespace

void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n) {
  switch (type) {
    case PMOE_DTYPE_F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case PMOE_DTYPE_F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16(static_cast<const uint16_t*>(src)[i]);
      return;
    case PMOE_DTYPE_BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = pmoe_bf16_to_fp32(static_cast<const uint16_t*>(src)[i]);
      return;
    case PMOE_DTYPE_Q4_0: return dequant_blocks<BlockQ4_0>(src, dst, n);
    case PMOE_DTYPE_Q4_1: return dequant_blocks<BlockQ4_1>(src, dst, n);
    case PMOE_DTYPE_Q5_0: return dequant_blocks<BlockQ5_0>(src, dst, n);
    case PMOE_DTYPE_Q5_1: return dequant_blocks<BlockQ5_1>(src, dst, n);
    case PMOE_DTYPE_Q8_0: return dequant_blocks<BlockQ8_0>(src, dst, n);
    case PMOE_DTYPE_IQ4_NL: return dequant_blocks<BlockIQ4NL>(src, dst, n);
    case PMOE_DTYPE_Q2_K: return dequant_super<BlockQ2K>(src, dst, n);
    case PMOE_DTYPE_Q3_K: return dequant_super<BlockQ3K>(src, dst, n);
    case PMOE_DTYPE_Q4_K: return dequant_super<BlockQ4K>(src, dst, n);
    case PMOE_DTYPE_Q5_K: return dequant_super<BlockQ5K>(src, dst, n);
    case PMOE_DTYPE_Q6_K: return dequant_super<BlockQ6K>(src, dst, n);
    case PMOE_DTYPE_IQ4_XS: return dequant_super<BlockIQ4XS>(src, dst, n);
  }
}

}  // namespace pmoe::cpu
