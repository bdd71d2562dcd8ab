// AVX-512 kernels for the K-quants, IQ4_XS, repacked Q4_0/IQ4_NL and Q8_0 (F, BW, VL, DQ and VNNI:
// Intel since Cascade Lake, AMD since Zen 4), one decode query's attention and sparse ReGLU's
// lists. The other 32-value block types use the AVX2 kernels.
//
// A super-block of 256 is decoded into four registers of 64 values in order plus the 16-bit scale
// of every lane; per column, vpmaddubsw forms pair products and vpdpwssd multiplies them by their
// sub-block scales while it accumulates. Int32 lane L of a register covers values 4(L % 8).. of
// 32-value chunk L / 8, so adding its two halves gives exactly ggml's 8 lanes, and the floats are
// then summed in llama.cpp's order (kernels_scalar.cpp), bit for bit as the other kernel sets.
#include "kernels.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#include "scale_regs.hpp"  // (after the target pragma: compiled for this file's kernels)

namespace pmoe::cpu {
namespace {

inline float f16(uint16_t h) { return _cvtsh_ss(h); }  // F16C: exact, like pmoe_fp16_to_fp32
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
/// Sums of integer lanes, by a tree of in-lane unpacks and 128-bit shuffles. pair32: in each
/// 128-bit lane, (a0+a2, b0+b2, a1+a3, b1+b3); pair64 of two such: (a, b, c, d) summed over the
/// lane's 4 values of each; pair128: 128-bit lanes (a0+a1, a2+a3, b0+b1, b2+b3).
inline __m512i pair32(__m512i a, __m512i b) { return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b)); }
inline __m512i pair64(__m512i a, __m512i b) { return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b)); }
inline __m512i pair128(__m512i a, __m512i b) {
  return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, 0x88), _mm512_shuffle_i32x4(a, b, 0xDD));
}
inline __m256i fold(__m512i v) { return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)); }

// ---- repacked Q4_0 / IQ4_NL: four 32-value blocks at a time --------------------------------------
/// 16 bytes from each of 4 blocks `stride` bytes apart.
inline __m512i gather16x4(const uint8_t* p, int stride) {
  __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + stride)), 1);
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * stride)), 2);
  return _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 3 * stride)), 3);
}
/// The f16 scales of 4 blocks 18 bytes apart, each repeated in its 4 float lanes.
inline __m512 scales4(const uint8_t* p) {
  auto rep = [&](int b) {
    uint16_t h;
    std::memcpy(&h, p + 18 * b, 2);
    return int64_t(uint64_t(h) * 0x0001000100010001ull);
  };
  return _mm512_cvtph_ps(_mm256_setr_epi64x(rep(0), rep(1), rep(2), rep(3)));
}

/// One Q4_0/IQ4_NL block (`wq`) after the groups, against a plain Q8_0 one, chained onto `acc`.
template <bool kIQ4>
float chain_plain_block(const uint8_t* wq, const BlockQ8_0& xb, float acc) {
  int isum = 0;
  for (int j = 0; j < 16; ++j) {
    const int lo = wq[2 + j] & 0xF, hi = wq[2 + j] >> 4;
    isum += (kIQ4 ? kIQ4Values[lo] : lo - 8) * xb.qs[j] + (kIQ4 ? kIQ4Values[hi] : hi - 8) * xb.qs[j + 16];
  }
  uint16_t h;
  std::memcpy(&h, wq, 2);
  return std::fma(float(isum), f16(h) * f16(xb.d), acc);
}

/// llama.cpp's repacked gemv/gemm for Q4_0 and IQ4_NL: one float chain per output,
/// fma(block sum, dw * dx, acc). Weights are read four blocks at a time in their nibble order
/// against GroupQ8x4 activations, so a block's integer sum lands in its own 4 lanes; the columns'
/// chains then run side by side, lane c of one 4-float vector. NR rows (`w_row` bytes apart) share
/// each activation load, and their independent chains hide each other's fma latency.
template <bool kIQ4, int NC, int NR>
void q4_chain_rows(const uint8_t* w, uint64_t w_row, const uint8_t* x, uint64_t xs, int64_t n, float* out) {
  const int64_t nb = n / 32, ng = nb / 4;
  const __m512i m4 = _mm512_set1_epi8(0xF), zero = _mm512_setzero_si512();
  const __m512i table = _mm512_add_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values))),
                                        _mm512_set1_epi8(char(0x80)));
  __m128 acc[NR];
  for (int r = 0; r < NR; ++r) acc[r] = _mm_setzero_ps();
  for (int64_t i = 0; i < ng; ++i) {
    __m512i xlo[NC], xhi[NC], corr[NC];
    __m512 dx[4];
    for (int c = 0; c < 4; ++c) {
      if (c >= NC) {
        dx[c] = _mm512_setzero_ps();
        continue;
      }
      const GroupQ8x4& g = reinterpret_cast<const GroupQ8x4*>(x + uint64_t(c) * xs)[i];
      xlo[c] = load512(g.lo), xhi[c] = load512(g.hi), dx[c] = _mm512_loadu_ps(g.d);
      corr[c] = load512(g.sum);  // -8 * sum(x): Q4_0's offset 8; IQ4_NL's 128 is 16 times that
      if constexpr (kIQ4) corr[c] = _mm512_slli_epi32(corr[c], 4);
    }
    const __m512 dxc = _mm512_mask_blend_ps(0xCCCC, _mm512_mask_blend_ps(0xAAAA, dx[0], dx[1]),
                                            _mm512_mask_blend_ps(0xAAAA, dx[2], dx[3]));  // lane 4b + c
    for (int r = 0; r < NR; ++r) {
      const uint8_t* wb = w + uint64_t(r) * w_row + i * 72;
      if constexpr (NC == 1) {  // one token: the weights stream from memory; ask for them early
        _mm_prefetch(reinterpret_cast<const char*>(wb) + 2048, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(wb) + 2048 + 64, _MM_HINT_T0);
      }
      const __m512i q = gather16x4(wb + 2, 18);
      __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      if constexpr (kIQ4) lo = _mm512_shuffle_epi8(table, lo), hi = _mm512_shuffle_epi8(table, hi);  // value + 128
      __m512i isum[4];
      for (int c = 0; c < 4; ++c)
        isum[c] = c < NC ? _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(corr[c % NC], lo, xlo[c % NC]), hi, xhi[c % NC]) : zero;
      // lane 4b + c: column c's block b (the sum of its 4 lanes)
      const __m512 F = _mm512_cvtepi32_ps(pair64(pair32(isum[0], isum[1]), pair32(isum[2], isum[3])));
      const __m512 D = _mm512_mul_ps(scales4(wb), dxc);
      acc[r] = _mm_fmadd_ps(_mm512_castps512_ps128(F), _mm512_castps512_ps128(D), acc[r]);
      acc[r] = _mm_fmadd_ps(_mm512_extractf32x4_ps(F, 1), _mm512_extractf32x4_ps(D, 1), acc[r]);
      acc[r] = _mm_fmadd_ps(_mm512_extractf32x4_ps(F, 2), _mm512_extractf32x4_ps(D, 2), acc[r]);
      acc[r] = _mm_fmadd_ps(_mm512_extractf32x4_ps(F, 3), _mm512_extractf32x4_ps(D, 3), acc[r]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    alignas(16) float res[4];
    _mm_store_ps(res, acc[r]);
    const uint8_t* wr = w + uint64_t(r) * w_row;
    for (int64_t k = ng * 4; k < nb; ++k)  // the last blocks follow the groups as plain Q8_0
      for (int c = 0; c < NC; ++c) {
        const auto* xb = reinterpret_cast<const BlockQ8_0*>(x + uint64_t(c) * xs + uint64_t(ng) * sizeof(GroupQ8x4)) + (k - ng * 4);
        res[c] = chain_plain_block<kIQ4>(wr + k * 18, *xb, res[c]);
      }
    for (int c = 0; c < NC; ++c) out[r * kTileCols + c] = res[c];
  }
}

// ---- Q8_0: two weight rows per pass --------------------------------------------------------------
/// ggml's Q8_0 vec_dot (a block's 8 integer lanes, then acc = fma(dw * dx, lanes, acc)) for two
/// weight rows at once, row r in half r of each register, so that each activation block is loaded
/// once for both. Activations are BlockQ8U (q + 128); a block's dot starts from -128 times the
/// weights' 4-value sums, which leaves exactly ggml's integer lanes.
template <int NC>
void q8_0_pair(const uint8_t* w, uint64_t w_row, const uint8_t* x, uint64_t xs, int64_t n, float* out) {
  const auto* a0 = reinterpret_cast<const BlockQ8_0*>(w);
  const auto* a1 = reinterpret_cast<const BlockQ8_0*>(w + w_row);
  const __m512i k128 = _mm512_set1_epi8(char(0x80)), zero = _mm512_setzero_si512();
  __m512 acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < n / 32; ++k) {
    if constexpr (NC == 1)  // one token: the weights stream from memory; ask for them early
      if (k % 2 == 0) {       // (two streams: twice the distance of one-row kernels measured best)
        _mm_prefetch(reinterpret_cast<const char*>(a0 + k) + 4096, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(a1 + k) + 4096, _MM_HINT_T0);
      }
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(load256(a0[k].qs)), load256(a1[k].qs), 1);
    const __m512i base = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k128, q));
    const __m512 dw = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(a0[k].d)), _mm256_set1_ps(_cvtsh_ss(a1[k].d)), 1);
    for (int c = 0; c < NC; ++c) {
      const BlockQ8U& b = reinterpret_cast<const BlockQ8U*>(x + uint64_t(c) * xs)[k];
      const __m512i lanes = _mm512_dpbusd_epi32(base, _mm512_broadcast_i64x4(load256(b.qs)), q);
      acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(b.d)), _mm512_cvtepi32_ps(lanes), acc[c]);
    }
  }
  for (int c = 0; c < NC; ++c) {
    out[c] = hsum(_mm512_castps512_ps256(acc[c]));
    out[kTileCols + c] = hsum(_mm512_extractf32x8_ps(acc[c], 1));
  }
}

void q8_0_pair_tile(const uint8_t* w, uint64_t w_row, const uint8_t* x, uint64_t xs, int nc, int64_t n, Order,
                    float* out) {
  with_cols(nc, [&](auto c) { q8_0_pair<c>(w, w_row, x, xs, n, out); });
}
/// One row (a matrix's odd last row): the same row in both halves.
void q8_0_tile(const uint8_t* w, const uint8_t* x, uint64_t xs, int nc, int64_t n, Order order, float* out) {
  float both[2 * kTileCols];
  q8_0_pair_tile(w, 0, x, xs, nc, n, order, both);
  std::memcpy(out, both, sizeof(float) * size_t(nc));
}

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
    s.d = f16(b.d), s.dmin = f16(b.dmin);
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
    set_scales(s, _mm256_cvtepi8_epi16(q3k_scales16(b.scales)), 0);
    s.d = f16(b.d), s.dmin = 0.f;
  }
};

/// Q4_K/Q5_K: 8 scales per 32 values, and the mins repeated per 16 values (for the bsums).
/// q4k_scales_mins in registers: 8 scales then 8 mins as 16-bit lanes.
inline __m256i q4k_scales_mins16(const uint8_t* sp) {
  uint32_t u[3];
  std::memcpy(u, sp, 12);
  const __m128i v = _mm_setr_epi32(int(u[0]), int(u[1]), int(u[2]), 0);
  const __m128i k1 = _mm_set1_epi32(0x3f3f3f3f), k2 = _mm_set1_epi32(0x0f0f0f0f), k3 = _mm_set1_epi32(0x03030303);
  const __m128i a = _mm_and_si128(v, k1);  // words 0, 1: scales 0..3, mins 0..3
  const __m128i hi = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(v, 0xAA), _mm_setr_epi32(0, 4, 0, 0)), k2);
  const __m128i top = _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(v, 6), k3), 4);  // words 0, 1
  const __m128i b = _mm_or_si128(hi, top);  // scales 4..7, mins 4..7
  return _mm256_cvtepu8_epi16(_mm_unpacklo_epi32(a, b));
}

template <class Block>
inline void q45k_scales(const Block& b, SuperDec& s) {
  const __m256i all = q4k_scales_mins16(b.scales);
  set_scales(s, all, 1);
  s.mins = _mm256_permutexvar_epi16(_mm256_setr_epi16(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15), all);
  s.d = f16(b.d), s.dmin = f16(b.dmin);
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
    s.d = f16(b.d), s.dmin = 0.f;
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
    set_scales(s, _mm256_castsi128_si256(iq4xs_scales8(b)), 1);
    s.d = f16(b.d), s.dmin = 0.f;
  }
};

/// Lane 4p + c: the sum of the 16 lanes of v[p][c] (integers, so exact in any order), by the tree
/// above (hadd costs three times as many shuffles).
template <int NC>
inline __m512i part_sums(const __m512i (&v)[4][NC]) {
  const __m512i z = _mm512_setzero_si512();
  __m512i u[4];
  for (int p = 0; p < 4; ++p)  // 128-bit lane i of u[p]: columns 0..3, summed over lanes 4i..4i+3
    u[p] = pair64(pair32(v[p][0], NC > 1 ? v[p][NC > 1 ? 1 : 0] : z),
                  pair32(NC > 2 ? v[p][NC > 2 ? 2 : 0] : z, NC > 3 ? v[p][NC > 3 ? 3 : 0] : z));
  return pair128(pair128(u[0], u[1]), pair128(u[2], u[3]));
}
/// Lane 4p + c: column c's mins of part p, the sum of lanes (8 / parts) p.. of m[c] (parts 2 or 4).
template <int NC>
inline __m512i part_mins(const __m256i* m, int parts) {
  alignas(64) static constexpr int32_t kIdx4[16] = {0, 8, 16, 24, 2, 10, 18, 26, 4, 12, 20, 28, 6, 14, 22, 30};
  alignas(64) static constexpr int32_t kIdx2[16] = {0, 8, 16, 24, 4, 12, 20, 28, 0, 0, 0, 0, 0, 0, 0, 0};
  const __m256i z = _mm256_setzero_si256();
  __m512i lo = _mm512_inserti64x4(_mm512_castsi256_si512(m[0]), NC > 1 ? m[NC > 1 ? 1 : 0] : z, 1);
  __m512i hi = _mm512_inserti64x4(_mm512_castsi256_si512(NC > 2 ? m[NC > 2 ? 2 : 0] : z), NC > 3 ? m[NC > 3 ? 3 : 0] : z, 1);
  lo = _mm512_add_epi32(lo, _mm512_shuffle_epi32(lo, _MM_PERM_CDAB));  // pairs
  hi = _mm512_add_epi32(hi, _mm512_shuffle_epi32(hi, _MM_PERM_CDAB));
  if (parts == 2) {  // quads
    lo = _mm512_add_epi32(lo, _mm512_shuffle_epi32(lo, _MM_PERM_BADC));
    hi = _mm512_add_epi32(hi, _mm512_shuffle_epi32(hi, _MM_PERM_BADC));
  }
  return _mm512_permutex2var_epi32(lo, load512(parts == 4 ? kIdx4 : kIdx2), hi);
}

/// Lane c of a 4-float vector gathered from column c's super-block (pad 0).
template <int NC>
inline __m128 column_d(const uint8_t* x, uint64_t xs, int64_t k) {
  auto d = [&](int c) { return c < NC ? reinterpret_cast<const BlockQ8K*>(x + uint64_t(c) * xs)[k].d : 0.f; };
  return _mm_setr_ps(d(0), d(1), d(2), d(3));
}

template <class Dec, int NC>
void super_tile(const uint8_t* w, const uint8_t* x, uint64_t xs, int64_t n, Order order, float* out) {
  constexpr bool kChain = Dec::kType == PMOE_DTYPE_Q4_K || Dec::kType == PMOE_DTYPE_Q2_K;
  constexpr bool kMins = Dec::kType == PMOE_DTYPE_Q5_K;  // lanes + one float sum of the mins
  // chain: parts of a super-block with their own fma (gemm: Q4_K 4 of 64 values, Q2_K 2 of 128),
  // the columns' chains side by side in one vector
  const int parts = order == Order::gemm ? (Dec::kType == PMOE_DTYPE_Q4_K ? 4 : 2) : 1;
  const auto* a = reinterpret_cast<const typename Dec::Block*>(w);
  __m256 acc[NC];
  float summs[NC];
  __m128 chain = _mm_setzero_ps(), chain_min = _mm_setzero_ps();
  for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps(), summs[c] = 0.f;
  SuperDec s;
  for (int64_t k = 0; k < n / 256; ++k) {
    if constexpr (NC == 1) {  // one token: the weights stream from memory; ask for them early
      const char* ahead = reinterpret_cast<const char*>(a + k) + 2048;
      for (size_t off = 0; off < sizeof(typename Dec::Block); off += 64) _mm_prefetch(ahead + off, _MM_HINT_T0);
    }
    Dec::decode(a[k], s);
    __m512i part[4][NC];
    __m256i mins[NC];
    for (int c = 0; c < NC; ++c) {
      const BlockQ8K& b = reinterpret_cast<const BlockQ8K*>(x + uint64_t(c) * xs)[k];
      __m512i sum = _mm512_setzero_si512();
      for (int j = 0; j < 4; ++j) {
        __m512i xq = load512(b.qs + 64 * j);
        if constexpr (Dec::kSigned) xq = _mm512_mask_sub_epi8(xq, s.neg[j], _mm512_setzero_si512(), xq);
        __m512i p16 = _mm512_maddubs_epi16(s.q[j], xq);
        if constexpr (Dec::kOffset == 4)  // Q3_K, as ggml: the offset comes off each pair
          p16 = _mm512_sub_epi16(p16, _mm512_maddubs_epi16(_mm512_set1_epi8(Dec::kOffset), xq));
        sum = _mm512_dpwssd_epi32(sum, p16, s.sc[j]);
        if (kChain && (j + 1) % (4 / parts) == 0) part[(j * parts) / 4][c] = sum, sum = _mm512_setzero_si512();
      }
      const __m256i bsums = load256(b.bsums);
      if constexpr (kChain) {
        mins[c] = _mm256_madd_epi16(bsums, s.mins);  // lane j: groups 2j, 2j + 1
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
    if constexpr (kChain && NC == 1) {
      if (parts == 1) {  // one token, gemv: both sums reduced in one register, both chains in one fma
        __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(fold(part[0][0])), mins[0], 1);
        both = _mm512_add_epi32(both, _mm512_shuffle_epi32(both, _MM_PERM_BADC));
        both = _mm512_add_epi32(both, _mm512_shuffle_epi32(both, _MM_PERM_CDAB));
        both = _mm512_add_epi32(both, _mm512_shuffle_i32x4(both, both, _MM_SHUFFLE(2, 3, 0, 1)));
        const __m128i im = _mm512_castsi512_si128(_mm512_permutexvar_epi32(_mm512_setr_epi32(0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), both));
        const float dx = reinterpret_cast<const BlockQ8K*>(x)[k].d;
        const __m128 scale = _mm_mul_ps(_mm_setr_ps(s.d, s.dmin, 0.f, 0.f), _mm_set1_ps(dx));
        chain = _mm_fmadd_ps(_mm_cvtepi32_ps(im), scale, chain);  // lane 0: the sum, lane 1: the mins
        continue;
      }
    }
    if constexpr (kChain) {
      const __m128 dx = column_d<NC>(x, xs, k);
      const __m128 dw = _mm_mul_ps(_mm_set1_ps(s.d), dx), dm = _mm_mul_ps(_mm_set1_ps(s.dmin), dx);
      if (parts == 1) {  // each column's sum and mins in the halves of one register, all reduced at once
        const __m512i z = _mm512_setzero_si512();
        __m512i v[4];
        for (int c = 0; c < 4; ++c)
          v[c] = c < NC ? _mm512_inserti64x4(_mm512_castsi256_si512(fold(part[0][c < NC ? c : 0])), mins[c < NC ? c : 0], 1) : z;
        __m512i u = pair64(pair32(v[0], v[1]), pair32(v[2], v[3]));
        u = _mm512_add_epi32(u, _mm512_shuffle_i32x4(u, u, _MM_SHUFFLE(2, 3, 0, 1)));  // lane 0: sums, 2: mins
        chain = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm512_castsi512_si128(u)), dw, chain);
        chain_min = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm512_extracti32x4_epi32(u, 2)), dm, chain_min);
        continue;
      }
      for (int p = parts; p < 4; ++p)
        for (int c = 0; c < NC; ++c) part[p][c] = _mm512_setzero_si512();
      const __m512 S = _mm512_cvtepi32_ps(part_sums<NC>(part)), M = _mm512_cvtepi32_ps(part_mins<NC>(mins, parts));
      const __m128 sp[4] = {_mm512_castps512_ps128(S), _mm512_extractf32x4_ps(S, 1), _mm512_extractf32x4_ps(S, 2),
                            _mm512_extractf32x4_ps(S, 3)};
      const __m128 mp[4] = {_mm512_castps512_ps128(M), _mm512_extractf32x4_ps(M, 1), _mm512_extractf32x4_ps(M, 2),
                            _mm512_extractf32x4_ps(M, 3)};
      for (int p = 0; p < parts; ++p) {  // lane c: column c's part p
        chain = _mm_fmadd_ps(sp[p], dw, chain);
        chain_min = _mm_fmadd_ps(mp[p], dm, chain_min);
      }
    }
  }
  alignas(16) float r[4];
  _mm_store_ps(r, _mm_sub_ps(chain, chain_min));
  if (kChain && NC == 1 && parts == 1) r[0] = _mm_cvtss_f32(chain) - _mm_cvtss_f32(_mm_movehdup_ps(chain));
  for (int c = 0; c < NC; ++c) out[c] = kChain ? r[c] : hsum(acc[c]) + summs[c];
}

/// The f16 scales of a group of four 18-byte blocks (Q4_0, IQ4_NL) of 16 rows, rows in lanes:
/// half bb % 2 of out[bb / 2] is block bb's. One 64-byte load per row holds its four scales (words
/// 0, 9, 18, 27); a tree of two-source word permutes gathers them (a vpgatherdd per block cost
/// half the kernel's time on Zen 4).
inline void q4_group_scales16(const uint8_t* const rows[16], int64_t group, __m512i out[2]) {
  static const struct Idx {
    __m512i l1, l2, l3, l4[2];
    Idx() {
      alignas(64) int16_t a[32] = {}, b[32] = {}, c[32] = {}, d[2][32] = {};
      for (int j = 0; j < 8; ++j) a[j] = int16_t(9 * (j / 2) + 32 * (j % 2));  // [2 bb + row]
      for (int j = 0; j < 16; ++j) b[j] = int16_t(j % 4 < 2 ? 2 * (j / 4) + j % 4 : 32 + 2 * (j / 4) + j % 4 - 2);
      for (int j = 0; j < 32; ++j) c[j] = int16_t(j % 8 < 4 ? 4 * (j / 8) + j % 8 : 32 + 4 * (j / 8) + j % 8 - 4);
      for (int h = 0; h < 2; ++h)
        for (int j = 0; j < 32; ++j) {
          const int bb = 2 * h + j / 16, o = j % 16;
          d[h][j] = int16_t(o < 8 ? 8 * bb + o : 32 + 8 * bb + o - 8);
        }
      l1 = _mm512_load_si512(a), l2 = _mm512_load_si512(b), l3 = _mm512_load_si512(c);
      l4[0] = _mm512_load_si512(d[0]), l4[1] = _mm512_load_si512(d[1]);
    }
  } idx;
  __m512i p[8], q[4], s[2];
  for (int r = 0; r < 8; ++r)
    p[r] = _mm512_permutex2var_epi16(_mm512_loadu_si512(rows[2 * r] + group * 72), idx.l1,
                                     _mm512_loadu_si512(rows[2 * r + 1] + group * 72));
  for (int r = 0; r < 4; ++r) q[r] = _mm512_permutex2var_epi16(p[2 * r], idx.l2, p[2 * r + 1]);
  for (int r = 0; r < 2; ++r) s[r] = _mm512_permutex2var_epi16(q[2 * r], idx.l3, q[2 * r + 1]);
  for (int h = 0; h < 2; ++h) out[h] = _mm512_permutex2var_epi16(s[0], idx.l4[h], s[1]);
}

/// One token against 16 rows of Q4_0/IQ4_NL in gemv order, as llama.cpp's repacked gemv keeps its
/// chains: lane r of one float vector is row r's chain, fma(block sum, dw * dx, acc), so no block
/// is reduced horizontally. Register q holds block b of rows q, q + 4, q + 8, q + 12 (one per
/// 128-bit lane); after the 4-lane sums (pair32, pair64) lane 4k + q is row 4k + q. Rows at byte
/// offsets `off` from `w` (any rows: decode's sparse `up` passes its active ones); `next_off`, if
/// not null, the rows the caller multiplies next, to prefetch.
template <bool kIQ4>
void q4_gemv16(const uint8_t* w, const int32_t* off, const int32_t* next_off, const uint8_t* x, int64_t n, float* out) {
  const int64_t nb = n / 32, ng = nb / 4;
  const __m512i m4 = _mm512_set1_epi8(0xF), zero = _mm512_setzero_si512();
  const __m512i table = _mm512_add_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values))),
                                        _mm512_set1_epi8(char(0x80)));
  const uint8_t* rows[16];
  for (int r = 0; r < 16; ++r) rows[r] = w + off[r];
  // The weights stream from memory. Sixteen consecutive rows are one region, and the caller's
  // next 16 are the region after it: fetch that one evenly over this pass, in address order (16
  // streams 864 bytes apart defeat the hardware prefetchers). Rows picked from a list: the next
  // ones the caller names, each a group's bytes per group.
  const uint64_t row_bytes = uint64_t(nb) * 18;
  bool consecutive = true;
  for (int r = 0; r < 16; ++r) consecutive &= uint64_t(off[r]) == r * row_bytes;
  const uintptr_t next = reinterpret_cast<uintptr_t>(w) + 16 * row_bytes;
  const uint64_t per_group = ng ? (16 * row_bytes + uint64_t(ng) - 1) / uint64_t(ng) : 0;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < ng; ++i) {
    const GroupQ8x4& g = reinterpret_cast<const GroupQ8x4*>(x)[i];
    if (consecutive)  // (addresses past the matrix are fine for a prefetch; kept integers till then)
      for (uint64_t p = uint64_t(i) * per_group; p < uint64_t(i + 1) * per_group; p += 64)
        _mm_prefetch(reinterpret_cast<const char*>(next + p), _MM_HINT_T0);
    else if (next_off)
      for (int r = 0; r < 16; ++r) {
        const char* p = reinterpret_cast<const char*>(w + next_off[r] + i * 72);
        _mm_prefetch(p, _MM_HINT_T0);
        _mm_prefetch(p + 71, _MM_HINT_T0);
      }
    __m512i scales[2];
    q4_group_scales16(rows, i, scales);
    for (int bb = 0; bb < 4; ++bb) {
      const int64_t b = 4 * i + bb;
      const __m512i xl = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.lo + 16 * bb)));
      const __m512i xh = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.hi + 16 * bb)));
      __m512i s[4];
      for (int q = 0; q < 4; ++q) {
        auto block = [&](int k) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[q + 4 * k] + b * 18 + 2)); };
        __m512i v = _mm512_castsi128_si512(block(0));  // (immediates spelled out: sanitizer builds do not fold loops)
        v = _mm512_inserti32x4(v, block(1), 1);
        v = _mm512_inserti32x4(v, block(2), 2);
        v = _mm512_inserti32x4(v, block(3), 3);
        __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        if constexpr (kIQ4) lo = _mm512_shuffle_epi8(table, lo), hi = _mm512_shuffle_epi8(table, hi);  // value + 128
        s[q] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo, xl), hi, xh);
      }
      // + -8 * sum(x) (Q4_0's offset; IQ4_NL's 128 is 16 times that), the block's first lane in g.sum
      const int32_t corr = kIQ4 ? g.sum[4 * bb] * 16 : g.sum[4 * bb];
      const __m512i isum = _mm512_add_epi32(pair64(pair32(s[0], s[1]), pair32(s[2], s[3])), _mm512_set1_epi32(corr));
      const __m256i dw = bb % 2 ? _mm512_extracti64x4_epi64(scales[bb / 2], 1) : _mm512_castsi512_si256(scales[bb / 2]);
      const __m512 d = _mm512_mul_ps(_mm512_cvtph_ps(dw), _mm512_set1_ps(g.d[4 * bb]));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, acc);
    }
  }
  alignas(64) float res[16];
  _mm512_store_ps(res, acc);
  for (int64_t k = ng * 4; k < nb; ++k) {  // the last blocks follow the groups as plain Q8_0
    const auto* xb = reinterpret_cast<const BlockQ8_0*>(x + uint64_t(ng) * sizeof(GroupQ8x4)) + (k - ng * 4);
    for (int r = 0; r < 16; ++r) {
      res[r] = chain_plain_block<kIQ4>(rows[r] + k * 18, *xb, res[r]);
    }
  }
  std::memcpy(out, res, sizeof res);
}

/// The headers of 4 rows' Q4_K super-blocks, decoded (ggml's get_scale_min_k4 on 4 rows at once;
/// q4k_scales_mins16 does one row, sparse_ffn.cpp's q4k_scales_mins32 the neuron-major headers):
/// 128-bit lane r holds row r's 8 scales (bytes 0..7) and 8 mins (bytes 8..15); `dd` gets the
/// rows' f16 d and dmin, a 32-bit pair per row. `first_of_lanes`: dword indices 0, 4, 8, 12.
inline __m512i q4k_headers4(const BlockQ4K* const* rows, int64_t k, __m512i first_of_lanes, __m128i& dd) {
  // dwords of a lane: d|dmin, then the 12 packed bytes u0 (scales 0..3, top bits of 4..7), u1
  // (mins 0..3, top bits of 4..7), u2 (low nibbles: scales 4..7, high: mins 4..7)
  auto head = [&](int r) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(&rows[r][k])); };
  __m512i v = _mm512_castsi128_si512(head(0));
  v = _mm512_inserti32x4(v, head(1), 1);
  v = _mm512_inserti32x4(v, head(2), 2);
  v = _mm512_inserti32x4(v, head(3), 3);
  dd = _mm512_castsi512_si128(_mm512_permutexvar_epi32(first_of_lanes, v));
  const __m512i p = _mm512_srlv_epi32(_mm512_shuffle_epi32(v, _MM_PERM_ENUM(0xED)), _mm512_set4_epi32(4, 0, 0, 0));  // u0 u2 u1 u2>>4
  const __m512i low = _mm512_and_si512(p, _mm512_set4_epi32(0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f));
  const __m512i top = _mm512_and_si512(_mm512_srli_epi32(_mm512_shuffle_epi32(v, _MM_PERM_ENUM(0xA5)), 2),  // u0 u0 u1 u1
                                       _mm512_set4_epi32(0x30303030, 0, 0x30303030, 0));
  return _mm512_or_si512(low, top);
}

/// One token against 16 rows of Q4_K in gemv order (llama.cpp's repacked Q4_Kx8 chains: per row
/// and super-block fma(sum, d * dx, acc) and fma(mins, dmin * dx, acc_min)), four rows at a time.
/// A row's 128 bytes of values load as two registers whose low and high nibbles hold sub-blocks
/// (0, 2), (1, 3), (4, 6), (5, 7), against the activations in that order (one shuffle per 64
/// values, shared by the four rows); vpmaddubsw's pair products enter vpdpwssd with their
/// sub-block's scale, picked from the decoded header by an in-lane byte shuffle. The four rows'
/// exact integer sums and mins are reduced by one tree into 4-lane chains. While one group of
/// rows goes by, the next group's are prefetched: `next_off`'s first rows after the last group,
/// or the rows after these when they are consecutive.
void q4k_gemv16(const uint8_t* w, const int32_t* off, const int32_t* next_off, const uint8_t* x, int64_t n, float* out) {
  const int64_t nb = n / 256;
  const uint64_t row_bytes = uint64_t(nb) * sizeof(BlockQ4K);
  const auto* xb = reinterpret_cast<const BlockQ8K*>(x);
  const __m512i m4 = _mm512_set1_epi8(0xF);
  // byte shuffles: sub-block a's scale in 16-bit lanes 0..15, b's in 16..31 (high bytes zero)
  const __m512i pick0 = halves16(short(0x8000), short(0x8002)), pick1 = halves16(short(0x8001), short(0x8003));
  const __m512i pick2 = halves16(short(0x8004), short(0x8006)), pick3 = halves16(short(0x8005), short(0x8007));
  const __m512i pick_mins = _mm512_broadcast_i32x4(_mm_setr_epi8(8, -128, 9, -128, 10, -128, 11, -128, 12, -128, 13, -128, 14, -128, 15, -128));
  const __m512i first_of_lanes = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i halves = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  for (int g = 0; g < 4; ++g) {
    const BlockQ4K* rows[4];
    uintptr_t ahead[4];  // (integers: past the matrix, these are fine for a prefetch only)
    for (int r = 0; r < 4; ++r) {
      rows[r] = reinterpret_cast<const BlockQ4K*>(w + off[4 * g + r]);
      ahead[r] = reinterpret_cast<uintptr_t>(w) + (g < 3      ? uint64_t(off[4 * g + 4 + r])
                                                   : next_off ? uint64_t(next_off[r])
                                                              : (16 + r) * row_bytes);
    }
    __m128 chain = _mm_setzero_ps(), chain_min = _mm_setzero_ps();
    for (int64_t k = 0; k < nb; ++k) {
      for (int r = 0; r < 4; ++r)  // (addresses past the matrix are fine for a prefetch)
        for (int line = 0; line < 4; ++line)
          _mm_prefetch(reinterpret_cast<const char*>(ahead[r] + k * sizeof(BlockQ4K) + (line < 3 ? 64 * line : 143)),
                       _MM_HINT_T0);
      const BlockQ8K& b = xb[k];
      const __m512i x0 = load512(b.qs), x1 = load512(b.qs + 64), x2 = load512(b.qs + 128), x3 = load512(b.qs + 192);
      const __m512i xa = _mm512_shuffle_i64x2(x0, x1, 0x44), xbb = _mm512_shuffle_i64x2(x0, x1, 0xEE);  // (0, 2), (1, 3)
      const __m512i xc = _mm512_shuffle_i64x2(x2, x3, 0x44), xd = _mm512_shuffle_i64x2(x2, x3, 0xEE);  // (4, 6), (5, 7)
      __m128i dd;
      alignas(64) uint8_t headers[64];
      const __m512i sm = q4k_headers4(rows, k, first_of_lanes, dd);
      _mm512_store_si512(headers, sm);
      __m512i v[4];
      for (int r = 0; r < 4; ++r) {
        const __m512i lanes = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(headers + 16 * r)));
        const __m512i w0 = load512(rows[r][k].qs), w1 = load512(rows[r][k].qs + 64);
        __m512i sum = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_maddubs_epi16(_mm512_and_si512(w0, m4), xa),
                                          _mm512_shuffle_epi8(lanes, pick0));
        sum = _mm512_dpwssd_epi32(sum, _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(w0, 4), m4), xbb),
                                  _mm512_shuffle_epi8(lanes, pick1));
        sum = _mm512_dpwssd_epi32(sum, _mm512_maddubs_epi16(_mm512_and_si512(w1, m4), xc), _mm512_shuffle_epi8(lanes, pick2));
        v[r] = _mm512_dpwssd_epi32(sum, _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(w1, 4), m4), xd),
                                   _mm512_shuffle_epi8(lanes, pick3));
      }
      // sums: (row 0..3) per 128-bit lane, then the lanes added; mins: sum_j min_j * (bsums of j's 32 values)
      __m512i s = pair64(pair32(v[0], v[1]), pair32(v[2], v[3]));
      s = _mm512_add_epi32(s, _mm512_shuffle_i32x4(s, s, _MM_SHUFFLE(1, 0, 3, 2)));
      s = _mm512_add_epi32(s, _mm512_shuffle_i32x4(s, s, _MM_SHUFFLE(2, 3, 0, 1)));
      const __m128i bsum32 = _mm256_cvtepi32_epi16(_mm256_madd_epi16(load256(b.bsums), _mm256_set1_epi16(1)));
      __m512i m = _mm512_madd_epi16(_mm512_shuffle_epi8(sm, pick_mins), _mm512_broadcast_i32x4(bsum32));
      m = _mm512_add_epi32(m, _mm512_shuffle_epi32(m, _MM_PERM_BADC));
      m = _mm512_add_epi32(m, _mm512_shuffle_epi32(m, _MM_PERM_CDAB));
      m = _mm512_permutexvar_epi32(first_of_lanes, m);
      const __m256 dmins = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(dd), halves);  // d of rows 0..3, then dmin
      const __m128 dx = _mm_set1_ps(b.d);
      chain = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm512_castsi512_si128(s)), _mm_mul_ps(_mm256_castps256_ps128(dmins), dx), chain);
      chain_min = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm512_castsi512_si128(m)), _mm_mul_ps(_mm256_extractf128_ps(dmins, 1), dx), chain_min);
    }
    _mm_storeu_ps(out + 4 * g, _mm_sub_ps(chain, chain_min));
  }
}

/// Repacked Q4_0/IQ4_NL against GroupQ8x4, in gemv or gemm order (vec_dot: left_below).
template <uint32_t Type, int NR>
void q4_rows(const uint8_t* w, uint64_t w_row, const uint8_t* x, uint64_t xs, int nc, int64_t n, Order, float* out) {
  constexpr bool kIQ4 = Type == PMOE_DTYPE_IQ4_NL;
  with_cols(nc, [&](auto c) { q4_chain_rows<kIQ4, c, NR>(w, w_row, x, xs, n, out); });
}
template <uint32_t Type>
void q4_tile(const uint8_t* w, const uint8_t* x, uint64_t xs, int nc, int64_t n, Order order, float* out) {
  q4_rows<Type, 1>(w, 0, x, xs, nc, n, order, out);
}

template <class Dec>
struct Super {
  template <int NC>
  struct K {
    static constexpr FixedTileFn run = super_tile<Dec, NC>;
  };
};

}  // namespace

/// Rare vec_dot shapes with their own order (AVX-512 has chains for gemv and gemm only): the
/// sets below.
bool left_below(uint32_t type, Order order) {
  return order == Order::vec_dot && (type == PMOE_DTYPE_Q4_0 || type == PMOE_DTYPE_IQ4_NL || type == PMOE_DTYPE_Q2_K ||
                                     type == PMOE_DTYPE_Q4_K);
}

TileFn avx512_tile(uint32_t type, Order order) {
  if (left_below(type, order)) return nullptr;
  switch (type) {
    case PMOE_DTYPE_Q4_0: return q4_tile<PMOE_DTYPE_Q4_0>;
    case PMOE_DTYPE_IQ4_NL: return q4_tile<PMOE_DTYPE_IQ4_NL>;
    case PMOE_DTYPE_Q2_K: return by_cols<Super<DQ2K>::K>;
    case PMOE_DTYPE_Q3_K: return by_cols<Super<DQ3K>::K>;
    case PMOE_DTYPE_Q4_K: return by_cols<Super<DQ4K>::K>;
    case PMOE_DTYPE_Q5_K: return by_cols<Super<DQ5K>::K>;
    case PMOE_DTYPE_Q6_K: return by_cols<Super<DQ6K>::K>;
    case PMOE_DTYPE_IQ4_XS: return by_cols<Super<DIQ4XS>::K>;
    case PMOE_DTYPE_Q8_0: return q8_0_tile;
    default: return nullptr;  // the AVX2 kernels
  }
}

Rows16Fn avx512_rows16(uint32_t type, Order order) {
  if (order != Order::gemv) return nullptr;
  switch (type) {
    case PMOE_DTYPE_Q4_0: return q4_gemv16<false>;
    case PMOE_DTYPE_IQ4_NL: return q4_gemv16<true>;
    case PMOE_DTYPE_Q4_K: return q4k_gemv16;
    default: return nullptr;
  }
}

PairTileFn avx512_pair_tile(uint32_t type, Order order) {
  if (left_below(type, order)) return nullptr;
  switch (type) {
    case PMOE_DTYPE_Q8_0: return q8_0_pair_tile;
    case PMOE_DTYPE_Q4_0: return q4_rows<PMOE_DTYPE_Q4_0, 2>;
    case PMOE_DTYPE_IQ4_NL: return q4_rows<PMOE_DTYPE_IQ4_NL, 2>;
    default: return nullptr;
  }
}


// Sparse ReGLU's lists, 16 neurons a step (the compress into a register, then a whole store:
// vpcompressd to memory is slow on Zen 4). The tail's lanes are masked off.
namespace {
inline __m512i neuron_index(int64_t o) { return _mm512_add_epi32(_mm512_set1_epi32(int32_t(o)), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)); }
inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }
}  // namespace

int64_t active_neurons_avx512(const float* gate, int64_t R, int64_t stride, int64_t n_ff, int32_t* list) {
  int64_t n = 0;
  for (int64_t o = 0; o < n_ff; o += 16) {
    const __mmask16 in = tail_mask(n_ff - o);
    __mmask16 on = 0;
    for (int64_t t = 0; t < R; ++t)
      on |= _mm512_mask_cmp_ps_mask(in, _mm512_maskz_loadu_ps(in, gate + t * stride + o), _mm512_setzero_ps(), _CMP_NLE_UQ);
    _mm512_storeu_si512(list + n, _mm512_maskz_compress_epi32(on, neuron_index(o)));
    n += __builtin_popcount(on);
  }
  return n;
}

int64_t reglu_listed_avx512(float* g, const float* u, int64_t n_ff, int32_t* list) {
  int64_t n = 0;
  for (int64_t o = 0; o < n_ff; o += 16) {
    const __mmask16 in = tail_mask(n_ff - o);
    const __m512 gv = _mm512_maskz_loadu_ps(in, g + o);
    const __mmask16 on = _mm512_mask_cmp_ps_mask(in, gv, _mm512_setzero_ps(), _CMP_NLE_UQ);
    _mm512_mask_storeu_ps(g + o, in, _mm512_maskz_mul_ps(on, gv, _mm512_maskz_loadu_ps(on, u + o)));
    _mm512_storeu_si512(list + n, _mm512_maskz_compress_epi32(on, neuron_index(o)));
    n += __builtin_popcount(on);
  }
  return n;
}

/// The AVX-512 attention of one query of head size 64, 128 or 256 (the batch order and other sizes
/// go to attend_avx2): the same sums as attend_scalar, with zmm registers holding ggml's 16-lane
/// chains, q kept in registers across the keys and all hd values of a V lane in one pass.
namespace {
/// attend_avx512 for head size 16 NQ (the loops unrolled: the chains stay in registers).
template <int NQ>
void attend_zmm(const float* q, const float* k, int64_t ks, const float* v, int64_t vs, int64_t j0, int64_t p, float scale,
                int64_t n_vec, float* out, const AttendScratch& sc) {
  constexpr int64_t nq = NQ, hd = 16 * NQ;
  const int64_t n16 = (p / 16 + 1) * 16, c0 = j0 / 16 * 16;
  const __m512 zero = _mm512_setzero_ps();
  auto reduce16 = [](__m512 t) { return hsum(_mm256_add_ps(_mm512_extractf32x8_ps(t, 1), _mm512_castps512_ps256(t))); };
  float* w = sc.w;
  for (int64_t j = c0; j < n16; ++j) w[j] = -INFINITY;
  // scores, vec_dot order: 16-value chunk c of the row into chain c % 4; four keys at a time
  __m512 qr[NQ];
  for (int64_t c = 0; c < nq; ++c) qr[c] = _mm512_loadu_ps(q + 16 * c);
  auto scores = [&]<int N>(int64_t j) {
    __m512 s[N][4];
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < 4; ++c) s[n][c] = zero;
    for (int64_t c = 0; c < nq; ++c)
      for (int n = 0; n < N; ++n) s[n][c % 4] = _mm512_fmadd_ps(_mm512_loadu_ps(k + (j + n) * ks + 16 * c), qr[c], s[n][c % 4]);
    for (int n = 0; n < N; ++n)
      w[j + n] = reduce16(_mm512_add_ps(_mm512_add_ps(s[n][0], s[n][2]), _mm512_add_ps(s[n][1], s[n][3]))) * scale;
  };
  // (four keys' chains and q fill the registers at hd 128; at 256, two keys)
  constexpr int kKeys = NQ > 8 ? 2 : 4;
  int64_t j = j0;
  for (; j + kKeys <= p + 1; j += kKeys) scores.template operator()<kKeys>(j);
  for (; j <= p; ++j) scores.template operator()<1>(j);
  float mx = -INFINITY;
  for (j = j0; j <= p; ++j) mx = std::max(mx, w[j]);
  double sum = 0.0;
  for (int64_t c = c0; c < n16; c += 16) {
    float x[16];
    _mm512_storeu_ps(x, _mm512_sub_ps(_mm512_loadu_ps(w + c), _mm512_set1_ps(mx)));
    expf16(x, w + c);
    sum += double(hsum16(w + c));
  }
  const float inv = float(1.0 / sum);
  for (j = j0; j <= p; ++j) w[j] *= inv;
  // vec_dot over n_vec keys: lane l of 64 chains the keys j = l (mod 64), all hd values at once
  float* lanes = sc.lanes;
  const int64_t jend = std::min(p + 1, n_vec / 64 * 64);
  const bool any = jend > j0;
  if (any)
    for (int64_t l = 0; l < 64; ++l) {
      __m512 acc[NQ];
      for (int64_t c = 0; c < nq; ++c) acc[c] = zero;
      for (int64_t jj = j0 + ((l - j0) % 64 + 64) % 64; jj < jend; jj += 64) {
        const __m512 wj = _mm512_set1_ps(w[jj]);
        for (int64_t c = 0; c < nq; ++c) acc[c] = _mm512_fmadd_ps(_mm512_loadu_ps(v + jj * vs + 16 * c), wj, acc[c]);
      }
      for (int64_t c = 0; c < nq; ++c) _mm512_storeu_ps(lanes + l * hd + 16 * c, acc[c]);
    }
  // chains c and c + 2 added, then 1 + 3, both, reduced as hsum16; the keys after them in double
  auto L = [&](int64_t l, int64_t i) { return _mm512_loadu_ps(lanes + l * hd + i); };
  for (int64_t i = 0; i < hd; i += 16) {
    __m512 r = zero;
    if (any) {
      __m512 a[16];
      for (int l = 0; l < 16; ++l) a[l] = _mm512_add_ps(_mm512_add_ps(L(l, i), L(l + 32, i)), _mm512_add_ps(L(l + 16, i), L(l + 48, i)));
      __m512 t[4];
      for (int l = 0; l < 4; ++l) t[l] = _mm512_add_ps(_mm512_add_ps(a[l + 12], a[l + 4]), _mm512_add_ps(a[l + 8], a[l]));
      r = _mm512_add_ps(_mm512_add_ps(t[0], t[2]), _mm512_add_ps(t[1], t[3]));
    }
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(r)), hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(r, 1));
    for (int64_t jj = std::max(j0, jend); jj <= p; ++jj) {
      const __m512 prod = _mm512_mul_ps(_mm512_loadu_ps(v + jj * vs + i), _mm512_set1_ps(w[jj]));
      lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(prod)));
      hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(prod, 1)));
    }
    _mm256_storeu_ps(out + i, _mm512_cvtpd_ps(lo));
    _mm256_storeu_ps(out + i + 8, _mm512_cvtpd_ps(hi));
  }
}
}  // namespace

void attend_avx512(const float* q, const float* k, int64_t ks, const float* v, int64_t vs, int64_t hd, int64_t j0, int64_t p,
                   float scale, bool batch, int64_t n_vec, float* out, const AttendScratch& sc) {
  if (!batch && hd == 64) return attend_zmm<4>(q, k, ks, v, vs, j0, p, scale, n_vec, out, sc);
  if (!batch && hd == 128) return attend_zmm<8>(q, k, ks, v, vs, j0, p, scale, n_vec, out, sc);
  if (!batch && hd == 256) return attend_zmm<16>(q, k, ks, v, vs, j0, p, scale, n_vec, out, sc);
  attend_avx2(q, k, ks, v, vs, hd, j0, p, scale, batch, n_vec, out, sc);
}

}  // namespace pmoe::cpu
