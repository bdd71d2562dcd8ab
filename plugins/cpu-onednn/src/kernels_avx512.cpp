// AVX-512 kernels for the K-quants and IQ4_XS (F, BW, VL, DQ and VNNI: Intel since Cascade Lake,
// AMD since Zen 4). The 32-value block types use the AVX2 kernels, which are memory-bound already.
//
// A super-block of 256 is decoded into four registers of 64 values in order plus the 16-bit scale
// of every lane; per column, vpmaddubsw forms pair products and vpdpwssd multiplies them by their
// sub-block scales while it accumulates. Int32 lane L of a register covers values 4(L % 8).. of
// 32-value chunk L / 8, so adding its two halves gives exactly ggml's 8 lanes, and the floats are
// then summed in llama.cpp's order (kernels_scalar.cpp), bit for bit as the other kernel sets.
#include "kernels.hpp"

#include <immintrin.h>

#include <cmath>
#include <cstring>

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")

namespace pmoe::cpu {
namespace {

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
/// 16-bit lanes 0..15 = a, 16..31 = b (per-lane shift counts for the two halves of a register).
inline __m512i halves16(short a, short b) { return _mm512_inserti64x4(_mm512_set1_epi16(a), _mm256_set1_epi16(b), 1); }
inline __m512i halves8(char a, char b) { return _mm512_inserti64x4(_mm512_set1_epi8(a), _mm256_set1_epi8(b), 1); }
inline float hsum(__m256 v) {  // ggml's hsum_float_8
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline __m256i fold(__m512i v) { return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)); }

struct SuperDec {
  __m512i q[4];       // values 64k..64k+63, unsigned (magnitudes where kSigned)
  __m512i sc[4];      // the scale of each 16-bit lane of chunk k's pair products
  __mmask64 neg[4];   // kSigned: the negative values
  __m256i mins;       // per-16 mins (x -= dmin * min)
  __m256i g16;        // Q6_K: the per-16 scales
  float d, dmin;
};

/// sc[k] from 16 scales `g` (16-bit): lane i of chunk k takes scale (4k + i / 8) * per16 / 16, i.e.
/// per16 = 16: one scale per 16 values; per16 = 8: g holds one scale per 32 values.
inline void set_scales(SuperDec& s, __m256i g, int per32) {
  alignas(64) static constexpr int16_t kLane16[32] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                     2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
  alignas(64) static constexpr int16_t kLane32[32] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                     1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  const __m512i lanes = load512(per32 ? kLane32 : kLane16);
  const __m512i gz = _mm512_castsi256_si512(g);
  for (int k = 0; k < 4; ++k)
    s.sc[k] = _mm512_permutexvar_epi16(_mm512_add_epi16(lanes, _mm512_set1_epi16(short(per32 ? 2 * k : 4 * k))), gz);
}

struct DQ2K {
  using Block = BlockQ2K;
  static constexpr uint32_t kType = PMOE_DTYPE_Q2_K;
  static constexpr bool kSigned = false;
  static constexpr int kOffset = 0;
  static void decode(const Block& b, SuperDec& s) {
    const __m512i m3 = _mm512_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m512i q = _mm512_broadcast_i64x4(load256(b.qs + 32 * h));
      s.q[2 * h] = _mm512_and_si512(_mm512_srlv_epi16(q, halves16(0, 2)), m3);
      s.q[2 * h + 1] = _mm512_and_si512(_mm512_srlv_epi16(q, halves16(4, 6)), m3);
    }
    const __m128i sm = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
    const __m128i m4 = _mm_set1_epi8(0xF);
    set_scales(s, _mm256_cvtepu8_epi16(_mm_and_si128(sm, m4)), 0);
    s.mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), m4));
    s.d = pmoe_fp16_to_fp32(b.d), s.dmin = pmoe_fp16_to_fp32(b.dmin);
  }
};

struct DQ3K {
  using Block = BlockQ3K;
  static constexpr uint32_t kType = PMOE_DTYPE_Q3_K;
  static constexpr bool kSigned = false;
  static constexpr int kOffset = 4;  // stored low2 + 4*hbit, the value is that - 4
  static void decode(const Block& b, SuperDec& s) {
    const __m512i m3 = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
    const __m512i hm = _mm512_broadcast_i64x4(load256(b.hmask));
    for (int h = 0; h < 2; ++h) {
      const __m512i q = _mm512_broadcast_i64x4(load256(b.qs + 32 * h));
      for (int p = 0; p < 2; ++p) {  // 32-value groups j = 2p (low half), 2p + 1 (high half)
        const __m512i low = _mm512_and_si512(_mm512_srlv_epi16(q, halves16(short(4 * p), short(4 * p + 2))), m3);
        const __mmask64 hb = _mm512_test_epi8_mask(hm, halves8(char(1 << (4 * h + 2 * p)), char(1 << (4 * h + 2 * p + 1))));
        s.q[2 * h + p] = _mm512_mask_add_epi8(low, hb, low, four);
      }
    }
    int8_t sc[16];
    q3k_scales(b.scales, sc);
    set_scales(s, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc))), 0);
    s.d = pmoe_fp16_to_fp32(b.d), s.dmin = 0.f;
  }
};

/// Q4_K/Q5_K: 8 scales per 32 values, and the mins repeated per 16 values (for the bsums).
template <class Block>
inline void q45k_scales(const Block& b, SuperDec& s) {
  alignas(16) uint8_t sm[16];
  q4k_scales_mins(b.scales, sm);
  const __m256i all = _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(sm)));
  set_scales(s, all, 1);
  s.mins = _mm256_permutexvar_epi16(_mm256_setr_epi16(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15), all);
  s.d = pmoe_fp16_to_fp32(b.d), s.dmin = pmoe_fp16_to_fp32(b.dmin);
}

struct DQ4K {
  using Block = BlockQ4K;
  static constexpr uint32_t kType = PMOE_DTYPE_Q4_K;
  static constexpr bool kSigned = false;
  static constexpr int kOffset = 0;
  static void decode(const Block& b, SuperDec& s) {
    const __m512i m4 = _mm512_set1_epi8(0xF), shift = halves16(0, 4);
    for (int k = 0; k < 4; ++k)  // 32 bytes: low nibbles are values 0..31, high ones 32..63
      s.q[k] = _mm512_and_si512(_mm512_srlv_epi16(_mm512_broadcast_i64x4(load256(b.qs + 32 * k)), shift), m4);
    q45k_scales(b, s);
  }
};

struct DQ5K {
  using Block = BlockQ5K;
  static constexpr uint32_t kType = PMOE_DTYPE_Q5_K;
  static constexpr bool kSigned = false;
  static constexpr int kOffset = 0;
  static void decode(const Block& b, SuperDec& s) {
    const __m512i m4 = _mm512_set1_epi8(0xF), shift = halves16(0, 4), sixteen = _mm512_set1_epi8(16);
    const __m512i qh = _mm512_broadcast_i64x4(load256(b.qh));
    for (int k = 0; k < 4; ++k) {
      const __m512i q = _mm512_and_si512(_mm512_srlv_epi16(_mm512_broadcast_i64x4(load256(b.qs + 32 * k)), shift), m4);
      const __mmask64 hb = _mm512_test_epi8_mask(qh, halves8(char(1 << (2 * k)), char(1 << (2 * k + 1))));
      s.q[k] = _mm512_mask_add_epi8(q, hb, q, sixteen);
    }
    q45k_scales(b, s);
  }
};

struct DQ6K {
  using Block = BlockQ6K;
  static constexpr uint32_t kType = PMOE_DTYPE_Q6_K;
  static constexpr bool kSigned = false;
  static constexpr int kOffset = 32;  // stored 0..63, the value is that - 32
  static void decode(const Block& b, SuperDec& s) {
    const __m512i m4 = _mm512_set1_epi8(0xF), m3 = _mm512_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = load512(b.ql + 64 * h);  // low nibbles: values 0..63, high: 64..127
      const __m512i qh = _mm512_broadcast_i64x4(load256(b.qh + 32 * h));
      auto high = [&](short a, short c) {
        return _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, halves16(a, c)), m3), 4);
      };
      s.q[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4), high(0, 2));
      s.q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), high(4, 6));
    }
    s.g16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
    set_scales(s, s.g16, 0);
    s.d = pmoe_fp16_to_fp32(b.d), s.dmin = 0.f;
  }
};

struct DIQ4XS {
  using Block = BlockIQ4XS;
  static constexpr uint32_t kType = PMOE_DTYPE_IQ4_XS;
  static constexpr bool kSigned = true;
  static constexpr int kOffset = 0;
  static void decode(const Block& b, SuperDec& s) {
    const __m512i table = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values)));
    // 128-bit lanes: bytes 0..15 (low, high nibbles), then bytes 16..31 (low, high)
    const __m512i spread = _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3);
    const __m512i shift = _mm512_broadcast_i64x4(_mm256_set_m128i(_mm_set1_epi16(4), _mm_set1_epi16(0)));
    for (int k = 0; k < 4; ++k) {
      const __m512i raw = _mm512_permutexvar_epi64(spread, _mm512_castsi256_si512(load256(b.qs + 32 * k)));
      const __m512i v = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srlv_epi16(raw, shift), _mm512_set1_epi8(0xF)));
      s.neg[k] = _mm512_movepi8_mask(v);
      s.q[k] = _mm512_abs_epi8(v);
    }
    alignas(16) int16_t g[8];
    for (int j = 0; j < 8; ++j) g[j] = int16_t(iq4xs_scale(b, j));
    set_scales(s, _mm256_castsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(g))), 1);
    s.d = pmoe_fp16_to_fp32(b.d), s.dmin = 0.f;
  }
};

template <class Dec, int NC>
void super_tile(const uint8_t* w, const uint8_t* x, uint64_t xs, int64_t n, Order order, float* out) {
  constexpr bool kChain = Dec::kType == PMOE_DTYPE_Q4_K || Dec::kType == PMOE_DTYPE_Q2_K;
  constexpr bool kMins = Dec::kType == PMOE_DTYPE_Q5_K;  // lanes + one float sum of the mins
  if (kChain && order == Order::vec_dot)  // a rare shape with its own order
    return scalar_tile(Dec::kType)(w, x, xs, NC, n, order, out);
  // chain: parts of a super-block with their own fma (gemm: Q4_K 4 of 64 values, Q2_K 2 of 128)
  const int parts = order == Order::gemm ? (Dec::kType == PMOE_DTYPE_Q4_K ? 4 : 2) : 1;
  const auto* a = reinterpret_cast<const typename Dec::Block*>(w);
  __m256 acc[NC];
  float summs[NC], chain[NC], chain_min[NC];
  for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps(), summs[c] = chain[c] = chain_min[c] = 0.f;
  SuperDec s;
  for (int64_t k = 0; k < n / 256; ++k) {
    Dec::decode(a[k], s);
    for (int c = 0; c < NC; ++c) {
      const BlockQ8K& b = reinterpret_cast<const BlockQ8K*>(x + uint64_t(c) * xs)[k];
      __m512i sum = _mm512_setzero_si512(), part[4];
      for (int j = 0; j < 4; ++j) {
        __m512i xq = load512(b.qs + 64 * j);
        if constexpr (Dec::kSigned) xq = _mm512_mask_sub_epi8(xq, s.neg[j], _mm512_setzero_si512(), xq);
        __m512i p16 = _mm512_maddubs_epi16(s.q[j], xq);
        if constexpr (Dec::kOffset == 4)  // Q3_K, as ggml: the offset comes off each pair
          p16 = _mm512_sub_epi16(p16, _mm512_maddubs_epi16(_mm512_set1_epi8(Dec::kOffset), xq));
        sum = _mm512_dpwssd_epi32(sum, p16, s.sc[j]);
        if (kChain && (j + 1) % (4 / parts) == 0) part[(j * parts) / 4] = sum, sum = _mm512_setzero_si512();
      }
      const __m256i bsums = load256(b.bsums);
      if constexpr (kChain) {
        alignas(32) int32_t m[8];  // lane j: groups 2j, 2j + 1
        _mm256_store_si256(reinterpret_cast<__m256i*>(m), _mm256_madd_epi16(bsums, s.mins));
        for (int p = 0; p < parts; ++p) {
          int mins = 0;
          for (int l = 8 * p / parts; l < 8 * (p + 1) / parts; ++l) mins += m[l];
          chain[c] = std::fma(float(_mm512_reduce_add_epi32(part[p])), s.d * b.d, chain[c]);
          chain_min[c] = std::fma(float(mins), s.dmin * b.d, chain_min[c]);
        }
        continue;
      }
      __m256i sum8 = fold(sum);
      if constexpr (Dec::kOffset == 32)  // Q6_K, as ggml: 32 * scale * bsum off lane j (groups 2j, 2j + 1)
        sum8 = _mm256_sub_epi32(sum8, _mm256_slli_epi32(_mm256_madd_epi16(bsums, s.g16), 5));
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(b.d * s.d), _mm256_cvtepi32_ps(sum8), acc[c]);
      if constexpr (kMins) {
        const __m256i m = _mm256_madd_epi16(bsums, s.mins);
        summs[c] += -b.d * s.dmin * float(_mm512_reduce_add_epi32(_mm512_castsi256_si512(m)));
      }
    }
  }
  for (int c = 0; c < NC; ++c) out[c] = kChain ? chain[c] - chain_min[c] : hsum(acc[c]) + summs[c];
}

template <class Dec>
struct Super {
  template <int NC>
  struct K {
    static constexpr FixedTileFn run = super_tile<Dec, NC>;
  };
};

}  // namespace

TileFn avx512_tile(uint32_t type) {
  switch (type) {
    case PMOE_DTYPE_Q2_K: return by_cols<Super<DQ2K>::K>;
    case PMOE_DTYPE_Q3_K: return by_cols<Super<DQ3K>::K>;
    case PMOE_DTYPE_Q4_K: return by_cols<Super<DQ4K>::K>;
    case PMOE_DTYPE_Q5_K: return by_cols<Super<DQ5K>::K>;
    case PMOE_DTYPE_Q6_K: return by_cols<Super<DQ6K>::K>;
    case PMOE_DTYPE_IQ4_XS: return by_cols<Super<DIQ4XS>::K>;
    default: return nullptr;  // the AVX2 kernels
  }
}

}  // namespace pmoe::cpu
