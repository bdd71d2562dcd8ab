#include "kernels.hpp"

// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_* in inlined intrinsics, GCC bug
// 105593); the values are fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <immintrin.h>

#include <cmath>
#include <cstring>

namespace pmoe::cpu {

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
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
static float dot_bf16_scalar(const void* w, const void* x, int64_t n) {
  auto* a = static_cast<const uint16_t*>(w);
  auto* b = static_cast<const float*>(x);
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += pmoe_bf16_to_fp32(a[i]) * b[i];
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

PMOE_AVX2 static float dot_bf16_avx2(const void* w, const void* x, int64_t n) {
  auto* a = static_cast<const uint16_t*>(w);
  auto* b = static_cast<const float*>(x);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
    __m256 wa = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    acc = _mm256_fmadd_ps(wa, _mm256_loadu_ps(b + i), acc);
  }
  float s = hsum256(acc);
  for (; i < n; ++i) s += pmoe_bf16_to_fp32(a[i]) * b[i];
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

bool using_avx512_vnni() {
  static const bool ok = using_avx2() && __builtin_cpu_supports("avx512f") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512vnni");
  return ok;
}

bool using_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("f16c");
  return ok;
}

DotFn dot_kernel(uint32_t weight_type) {
  const bool v = using_avx2();
  switch (weight_type) {
    case PMOE_DTYPE_F32: return v ? dot_f32_avx2 : dot_f32_scalar;
    case PMOE_DTYPE_F16: return v ? dot_f16_avx2 : dot_f16_scalar;
    case PMOE_DTYPE_BF16: return v ? dot_bf16_avx2 : dot_bf16_scalar;
    case PMOE_DTYPE_Q8_0: return using_avx512_vnni() ? dot_q8_0_avx512 : v ? dot_q8_0_avx2 : dot_q8_0_scalar;
    case PMOE_DTYPE_Q4_0: return using_avx512_vnni() ? dot_q4_0_avx512 : v ? dot_q4_0_avx2 : dot_q4_0_scalar;
    default: return nullptr;
  }
}

}  // namespace pmoe::cpu
