#include "kernels.hpp"

// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_* in inlined intrinsics, GCC bug
// 105593); the values are fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <immintrin.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace pmoe::cpu {

static void quantize_row_q8_0_scalar(const float* x, BlockQ8_0* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    y[b].d = pmoe_fp32_to_fp16(d);
    for (int j = 0; j < 32; ++j) y[b].qs[j] = int8_t(std::nearbyint(xb[j] * id));
  }
}

// Same arithmetic as the scalar version, so the same bits: max is exact, and cvtps rounds to
// nearest even as nearbyint does in the default rounding mode.
__attribute__((target("avx2,fma,f16c"))) static void quantize_row_q8_0_avx2(const float* x, BlockQ8_0* y, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    __m256 v[4], m = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(xb + 8 * k);
      m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[k]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    y[b].d = pmoe_fp32_to_fp16(amax / 127.f);
    const __m256 s = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], s));
    // packs interleave 128-bit lanes; the final permute restores element order
    const __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
    const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs), p8);
  }
}

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  if (kernel_isa() >= Isa::avx2)
    quantize_row_q8_0_avx2(x, y, n);
  else
    quantize_row_q8_0_scalar(x, y, n);
}

void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n) {
  switch (type) {
    case PMOE_DTYPE_F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case PMOE_DTYPE_F16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = pmoe_fp16_to_fp32(s[i]);
      return;
    }
    case PMOE_DTYPE_BF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = pmoe_bf16_to_fp32(s[i]);
      return;
    }
    case PMOE_DTYPE_Q8_0: {
      auto* b = static_cast<const BlockQ8_0*>(src);
      for (int64_t k = 0; k < n / 32; ++k) {
        const float d = pmoe_fp16_to_fp32(b[k].d);
        for (int j = 0; j < 32; ++j) dst[k * 32 + j] = float(b[k].qs[j]) * d;
      }
      return;
    }
    case PMOE_DTYPE_Q4_0: {
      auto* b = static_cast<const BlockQ4_0*>(src);
      for (int64_t k = 0; k < n / 32; ++k) {
        const float d = pmoe_fp16_to_fp32(b[k].d);
        for (int j = 0; j < 16; ++j) {
          dst[k * 32 + j] = float((b[k].qs[j] & 0xf) - 8) * d;
          dst[k * 32 + j + 16] = float((b[k].qs[j] >> 4) - 8) * d;
        }
      }
      return;
    }
  }
}

// ---- scalar kernels -------------------------------------------------------------------------

static float dot_f32_scalar(const void* w, const void* x, int64_t n) {
  auto *a = static_cast<const float*>(w), *b = static_cast<const float*>(x);
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
static float dot_f16_scalar(const void* w, const void* x, int64_t n) {
  auto* a = static_cast<const uint16_t*>(w);
  auto* b = static_cast<const float*>(x);
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += pmoe_fp16_to_fp32(a[i]) * b[i];
  return s;
}
static float dot_bf16_scalar(const void* w, const void* x, int64_t n) {  // x: bf16 too
  auto* a = static_cast<const uint16_t*>(w);
  auto* b = static_cast<const uint16_t*>(x);
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += pmoe_bf16_to_fp32(a[i]) * pmoe_bf16_to_fp32(b[i]);
  return s;
}
static float dot_q8_0_scalar(const void* w, const void* x, int64_t n) {
  auto* a = static_cast<const BlockQ8_0*>(w);
  auto* b = static_cast<const BlockQ8_0*>(x);
  float s = 0.f;
  for (int64_t k = 0; k < n / 32; ++k) {
    int isum = 0;
    for (int j = 0; j < 32; ++j) isum += int(a[k].qs[j]) * int(b[k].qs[j]);
    s += float(isum) * (pmoe_fp16_to_fp32(a[k].d) * pmoe_fp16_to_fp32(b[k].d));
  }
  return s;
}
static float dot_q4_0_scalar(const void* w, const void* x, int64_t n) {
  auto* a = static_cast<const BlockQ4_0*>(w);
  auto* b = static_cast<const BlockQ8_0*>(x);
  float s = 0.f;
  for (int64_t k = 0; k < n / 32; ++k) {
    int isum = 0;
    for (int j = 0; j < 16; ++j) {
      isum += ((a[k].qs[j] & 0xf) - 8) * int(b[k].qs[j]);
      isum += ((a[k].qs[j] >> 4) - 8) * int(b[k].qs[j + 16]);
    }
    s += float(isum) * (pmoe_fp16_to_fp32(a[k].d) * pmoe_fp16_to_fp32(b[k].d));
  }
  return s;
}

// ---- AVX2 kernels ---------------------------------------------------------------------------

#define PMOE_AVX2 __attribute__((target("avx2,fma,f16c")))

PMOE_AVX2 static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

PMOE_AVX2 static float dot_f32_avx2(const void* w, const void* x, int64_t n) {
  auto *a = static_cast<const float*>(w), *b = static_cast<const float*>(x);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  float s = hsum256(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

PMOE_AVX2 static float dot_f16_avx2(const void* w, const void* x, int64_t n) {
  auto* a = static_cast<const uint16_t*>(w);
  auto* b = static_cast<const float*>(x);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 wa = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
    acc = _mm256_fmadd_ps(wa, _mm256_loadu_ps(b + i), acc);
  }
  float s = hsum256(acc);
  for (; i < n; ++i) s += pmoe_fp16_to_fp32(a[i]) * b[i];
  return s;
}

PMOE_AVX2 static inline __m256 bf16x8(const uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

PMOE_AVX2 static float dot_bf16_avx2(const void* w, const void* x, int64_t n) {  // x: bf16 too
  auto* a = static_cast<const uint16_t*>(w);
  auto* b = static_cast<const uint16_t*>(x);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(bf16x8(a + i), bf16x8(b + i), acc);
  float s = hsum256(acc);
  for (; i < n; ++i) s += pmoe_bf16_to_fp32(a[i]) * pmoe_bf16_to_fp32(b[i]);
  return s;
}

// Sum of signed int8 products of 32 pairs, as 8 int32 lanes (|w| times sign-adjusted x).
PMOE_AVX2 static inline __m256 mul_sum_i8(__m256i w, __m256i x) {
  const __m256i aw = _mm256_sign_epi8(w, w);
  const __m256i sx = _mm256_sign_epi8(x, w);
  const __m256i dot16 = _mm256_maddubs_epi16(aw, sx);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)));
}

PMOE_AVX2 static inline float f16(uint16_t h) { return _cvtsh_ss(h); }

PMOE_AVX2 static float dot_q8_0_avx2(const void* w, const void* x, int64_t n) {
  auto* a = static_cast<const BlockQ8_0*>(w);
  auto* b = static_cast<const BlockQ8_0*>(x);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t k = 0; k < n / 32; ++k) {
    const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[k].qs));
    const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[k].qs));
    const __m256 d = _mm256_set1_ps(f16(a[k].d) * f16(b[k].d));
    acc = _mm256_fmadd_ps(d, mul_sum_i8(qa, qb), acc);
  }
  return hsum256(acc);
}

PMOE_AVX2 static float dot_q4_0_avx2(const void* w, const void* x, int64_t n) {
  auto* a = static_cast<const BlockQ4_0*>(w);
  auto* b = static_cast<const BlockQ8_0*>(x);
  const __m256i lo_mask = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t k = 0; k < n / 32; ++k) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[k].qs));
    // low nibbles are elements 0..15, high nibbles elements 16..31
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    const __m256i qa = _mm256_sub_epi8(_mm256_and_si256(both, lo_mask), eight);
    const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[k].qs));
    const __m256 d = _mm256_set1_ps(f16(a[k].d) * f16(b[k].d));
    acc = _mm256_fmadd_ps(d, mul_sum_i8(qa, qb), acc);
  }
  return hsum256(acc);
}


// ---- AVX-512 VNNI kernels: two blocks per 512-bit register ------------------------------------
// vpdpbusd multiplies unsigned by signed bytes, so the weights are made unsigned: Q4_0 nibbles are
// 0..15 already (the -8 is taken out with the sum of x), Q8_0 weights are offset by 128.

#define PMOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

PMOE_AVX512 static inline __m512 scales2(float a, float b) {
  return _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a), _mm512_set1_ps(b));
}

PMOE_AVX512 static inline __m512i load_q8_pair(const BlockQ8_0* b) {
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs));
  const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

PMOE_AVX512 static inline __m256i q4_unpack(const BlockQ4_0& b) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0f));
}

PMOE_AVX512 static inline __m512 q4_pair(const BlockQ4_0* a, const BlockQ8_0* b, __m512i ones) {
  const __m512i qa = _mm512_inserti64x4(_mm512_castsi256_si512(q4_unpack(a[0])), q4_unpack(a[1]), 1);
  const __m512i qb = load_q8_pair(b);
  const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qa, qb);
  const __m512i sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, qb);
  const __m512i r = _mm512_sub_epi32(dot, _mm512_slli_epi32(sum, 3));  // sum (n - 8) x
  return _mm512_mul_ps(scales2(f16(a[0].d) * f16(b[0].d), f16(a[1].d) * f16(b[1].d)), _mm512_cvtepi32_ps(r));
}

PMOE_AVX512 static float dot_q4_0_avx512(const void* w, const void* x, int64_t n) {
  auto* a = static_cast<const BlockQ4_0*>(w);
  auto* b = static_cast<const BlockQ8_0*>(x);
  const int64_t nb = n / 32;
  const __m512i ones = _mm512_set1_epi8(1);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();  // two chains for ILP
  int64_t k = 0;
  for (; k + 4 <= nb; k += 4) {
    acc0 = _mm512_add_ps(acc0, q4_pair(a + k, b + k, ones));
    acc1 = _mm512_add_ps(acc1, q4_pair(a + k + 2, b + k + 2, ones));
  }
  for (; k + 2 <= nb; k += 2) acc0 = _mm512_add_ps(acc0, q4_pair(a + k, b + k, ones));
  float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  if (k < nb) s += dot_q4_0_avx2(a + k, b + k, 32);
  return s;
}

PMOE_AVX512 static float dot_q8_0_avx512(const void* w, const void* x, int64_t n) {
  auto* a = static_cast<const BlockQ8_0*>(w);
  auto* b = static_cast<const BlockQ8_0*>(x);
  const int64_t nb = n / 32;
  const __m512i ones = _mm512_set1_epi8(1), off = _mm512_set1_epi8(char(0x80));
  __m512 acc = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 2 <= nb; k += 2) {
    const __m512i qa = _mm512_xor_si512(load_q8_pair(a + k), off);  // w + 128 as unsigned
    const __m512i qb = load_q8_pair(b + k);
    const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qa, qb);
    const __m512i sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, qb);
    const __m512i r = _mm512_sub_epi32(dot, _mm512_slli_epi32(sum, 7));  // sum (w + 128) x - 128 x
    const __m512 d = scales2(f16(a[k].d) * f16(b[k].d), f16(a[k + 1].d) * f16(b[k + 1].d));
    acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(r), acc);
  }
  float s = _mm512_reduce_add_ps(acc);
  if (k < nb) s += dot_q8_0_avx2(a + k, b + k, 32);
  return s;
}

// ---- AVX-512 VBMI Q4_0 kernel: four blocks per step, straight from the GGUF layout -------------
// One 64-byte load plus 8 more bytes cover 4 blocks (72 bytes); vpermt2b gathers their 64 nibble
// bytes and vpermw their 4 scales, so no scalar work is left in the loop. The activations come
// as GroupQ8x4 (prepare_row), which already holds the -8 correction and the expanded scales.

#define PMOE_AVX512_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))

namespace {
struct Q4x4Indices {
  __m512i qs;  // byte i of the 64 nibble bytes: block i/16, byte i%16 (bit 6 picks the 2nd source)
  __m512i d;   // word 4k..4k+3: scale of block k
};
PMOE_AVX512_VBMI Q4x4Indices q4x4_indices() {
  alignas(64) uint8_t qs[64];
  alignas(64) uint16_t d[32] = {};
  for (int i = 0; i < 64; ++i) qs[i] = uint8_t(18 * (i / 16) + 2 + i % 16);
  for (int i = 0; i < 16; ++i) d[i] = uint16_t(9 * (i / 4));
  return {_mm512_load_si512(qs), _mm512_load_si512(d)};
}
}  // namespace

PMOE_AVX512_VBMI static inline __m512 q4x4_step(const uint8_t* w, const GroupQ8x4& x, const Q4x4Indices& ix, __m512 acc) {
  const __m512i w0 = _mm512_loadu_si512(w);
  const __m512i w1 = _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + 64)));
  const __m512i q = _mm512_permutex2var_epi8(w0, ix.qs, w1);
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  __m512i isum = _mm512_loadu_si512(x.corr);
  isum = _mm512_dpbusd_epi32(isum, _mm512_and_si512(q, m4), _mm512_loadu_si512(x.lo));
  isum = _mm512_dpbusd_epi32(isum, _mm512_and_si512(_mm512_srli_epi16(q, 4), m4), _mm512_loadu_si512(x.hi));
  const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(ix.d, w0)));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, _mm512_loadu_ps(x.d)), acc);
}

PMOE_AVX512_VBMI static float dot_q4_0_vbmi(const void* w, const void* x, int64_t n) {
  static const Q4x4Indices ix = q4x4_indices();
  auto* a = static_cast<const uint8_t*>(w);
  auto* g = static_cast<const GroupQ8x4*>(x);
  const int64_t nb = n / 32, ng = nb / 4;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();  // two chains for ILP
  int64_t i = 0;
  for (; i + 2 <= ng; i += 2) {
    acc0 = q4x4_step(a + i * 72, g[i], ix, acc0);
    acc1 = q4x4_step(a + i * 72 + 72, g[i + 1], ix, acc1);
  }
  if (i < ng) acc0 = q4x4_step(a + i * 72, g[i], ix, acc0);
  float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  if (nb % 4)  // the last blocks follow the groups as plain Q8_0 blocks
    s += dot_q4_0_avx2(a + ng * 72, g + ng, (nb % 4) * 32);
  return s;
}

/// The activation layout of dot_q4_0_vbmi: ng groups, then the nb % 4 last blocks as BlockQ8_0.
static void prepare_q8x4(const float* x, uint8_t* dst, int64_t n) {
  const int64_t nb = n / 32, ng = nb / 4;
  auto* g = reinterpret_cast<GroupQ8x4*>(dst);
  for (int64_t i = 0; i < ng; ++i) {
    BlockQ8_0 b[4];
    quantize_row_q8_0(x + i * 128, b, 128);
    for (int k = 0; k < 4; ++k) {
      int32_t sum = 0;
      for (int j = 0; j < 32; ++j) sum += b[k].qs[j];
      std::memcpy(g[i].lo + 16 * k, b[k].qs, 16);
      std::memcpy(g[i].hi + 16 * k, b[k].qs + 16, 16);
      for (int l = 0; l < 4; ++l) {
        g[i].corr[4 * k + l] = l == 0 ? -8 * sum : 0;
        g[i].d[4 * k + l] = pmoe_fp16_to_fp32(b[k].d);
      }
    }
  }
  quantize_row_q8_0(x + ng * 128, reinterpret_cast<BlockQ8_0*>(g + ng), (nb % 4) * 32);
}

static bool q4_0_uses_vbmi() { return kernel_isa() == Isa::avx512_vbmi; }

uint64_t prepared_row_bytes(uint32_t weight_type, int64_t n) {
  if (weight_type == PMOE_DTYPE_Q4_0 && q4_0_uses_vbmi())  // rows stay 64-byte multiples: aligned groups
    return (uint64_t(n / 128) * sizeof(GroupQ8x4) + uint64_t(n % 128 / 32) * sizeof(BlockQ8_0) + 63) / 64 * 64;
  if (weight_type == PMOE_DTYPE_Q4_0 || weight_type == PMOE_DTYPE_Q8_0)
    return pmoe_dtype_row_bytes(PMOE_DTYPE_Q8_0, uint64_t(n));
  if (weight_type == PMOE_DTYPE_BF16) return uint64_t(n) * 2;
  return 0;
}

void prepare_row(uint32_t weight_type, const float* x, uint8_t* dst, int64_t n) {
  if (weight_type == PMOE_DTYPE_BF16) {
    auto* d = reinterpret_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = pmoe_fp32_to_bf16(x[i]);
  } else if (weight_type == PMOE_DTYPE_Q4_0 && q4_0_uses_vbmi())
    prepare_q8x4(x, dst, n);
  else
    quantize_row_q8_0(x, reinterpret_cast<BlockQ8_0*>(dst), n);
}

static Isa detect_isa() {
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")))
    return Isa::scalar;
  if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")))
    return Isa::avx2;
  if (!__builtin_cpu_supports("avx512vbmi")) return Isa::avx512_vnni;
  return Isa::avx512_vbmi;
}

const char* isa_name(Isa isa) {
  static const char* const names[] = {"scalar", "avx2", "avx512_vnni", "avx512_vbmi"};
  return names[int(isa)];
}

std::optional<Isa> parse_isa(std::string_view name) {
  for (Isa i : {Isa::scalar, Isa::avx2, Isa::avx512_vnni, Isa::avx512_vbmi})
    if (name == isa_name(i)) return i;
  return std::nullopt;
}

Isa kernel_isa() {
  static const Isa isa = [] {
    const Isa cpu = detect_isa();
    const char* cap = std::getenv("PMOE_CPU_MAX_ISA");
    const std::optional<Isa> c = cap ? parse_isa(cap) : std::nullopt;
    return c && *c < cpu ? *c : cpu;
  }();
  return isa;
}

DotFn dot_kernel(uint32_t weight_type) {
  const Isa isa = kernel_isa();
  const bool v = isa >= Isa::avx2, vnni = isa >= Isa::avx512_vnni;
  switch (weight_type) {
    case PMOE_DTYPE_F32: return v ? dot_f32_avx2 : dot_f32_scalar;
    case PMOE_DTYPE_F16: return v ? dot_f16_avx2 : dot_f16_scalar;
    case PMOE_DTYPE_BF16: return v ? dot_bf16_avx2 : dot_bf16_scalar;
    case PMOE_DTYPE_Q8_0: return vnni ? dot_q8_0_avx512 : v ? dot_q8_0_avx2 : dot_q8_0_scalar;
    case PMOE_DTYPE_Q4_0: return q4_0_uses_vbmi() ? dot_q4_0_vbmi : vnni ? dot_q4_0_avx512 : v ? dot_q4_0_avx2 : dot_q4_0_scalar;
    default: return nullptr;
  }
}

}  // namespace pmoe::cpu
