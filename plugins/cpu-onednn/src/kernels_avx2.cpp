// AVX2 kernels (with FMA and F16C). Blocks are decoded once into 32-byte vectors of small integers
// and used for each of the tile's columns. Products go through maddubs (unsigned x signed bytes),
// so weights are unsigned (K-quants, Q4_1, Q5_1) or their signs move onto the activations; then
// madd forms ggml's 8 integer lanes (lane l: values 4l..4l+3 of a 32-value chunk, times its
// sub-block scale), which are summed in llama.cpp's order (kernels_scalar.cpp says which).
#include "kernels.hpp"

#include <immintrin.h>

#include <cmath>
#include <type_traits>

// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_* in inlined intrinsics, GCC bug
// 105593); the values are fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC target("avx2,fma,f16c")
#include "scale_regs.hpp"  // (after the target pragma: compiled for this file's kernels)

namespace pmoe::cpu {
namespace {

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// 16-bit products of w and signed x bytes, summed in pairs (no saturation for our ranges); signed
/// w is multiplied as |w| times x with w's sign.
template <bool Signed>
inline __m256i pairs(__m256i w, __m256i x) {
  if constexpr (Signed) return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  return _mm256_maddubs_epi16(w, x);
}
/// ggml's 8 integer lanes of a 32-value chunk: lane l = sum of values 4l..4l+3 (times `scale`).
inline __m256i lanes(__m256i p16, __m256i scale = _mm256_set1_epi16(1)) { return _mm256_madd_epi16(p16, scale); }
inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)));
}

inline __m256i nibbles32(const uint8_t* p) {  // 16 bytes -> low nibbles, then high nibbles
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
}
/// Byte j = 0xFF where bit j of the 32-bit word at p is set.
inline __m256i bits32(const uint8_t* p) {
  uint32_t u;
  __builtin_memcpy(&u, p, 4);
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(int(u)), _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                                                         0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}
inline __m256i iq4_lookup(__m256i nib) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values));
  return _mm256_shuffle_epi8(_mm256_set_m128i(t, t), nib);
}

// ---- 32-value blocks ---------------------------------------------------------------------------------
// A decoder gives the block's values (signed where kSigned, else unsigned with x = v*d + m).
struct DecQ4_0 {
  static constexpr uint32_t kType = PMOE_DTYPE_Q4_0;
  using Block = BlockQ4_0;
  static constexpr bool kSigned = true;
  static __m256i values(const Block& b) { return _mm256_sub_epi8(nibbles32(b.qs), _mm256_set1_epi8(8)); }
};
struct DecQ5_0 {
  static constexpr uint32_t kType = PMOE_DTYPE_Q5_0;
  using Block = BlockQ5_0;
  static constexpr bool kSigned = true;
  // a clear 5th bit makes the byte nib | 0xF0 = nib - 16; a set one leaves nib = (nib + 16) - 16
  static __m256i values(const Block& b) {
    return _mm256_or_si256(nibbles32(b.qs), _mm256_andnot_si256(bits32(b.qh), _mm256_set1_epi8(char(0xF0))));
  }
};
struct DecQ8_0 {
  static constexpr uint32_t kType = PMOE_DTYPE_Q8_0;
  using Block = BlockQ8_0;
  static constexpr bool kSigned = true;
  static __m256i values(const Block& b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
};
struct DecIQ4NL {
  static constexpr uint32_t kType = PMOE_DTYPE_IQ4_NL;
  using Block = BlockIQ4NL;
  static constexpr bool kSigned = true;
  static __m256i values(const Block& b) { return iq4_lookup(nibbles32(b.qs)); }
};
struct DecQ4_1 {
  static constexpr uint32_t kType = PMOE_DTYPE_Q4_1;
  using Block = BlockQ4_1;
  static constexpr bool kSigned = false;
  static __m256i values(const Block& b) { return nibbles32(b.qs); }
};
struct DecQ5_1 {
  static constexpr uint32_t kType = PMOE_DTYPE_Q5_1;
  using Block = BlockQ5_1;
  static constexpr bool kSigned = false;
  static __m256i values(const Block& b) {
    return _mm256_or_si256(nibbles32(b.qs), _mm256_and_si256(bits32(b.qh), _mm256_set1_epi8(0x10)));
  }
};

/// Lane c = the sum of v[c]'s 8 lanes (integers, so exact in any order).
template <int NC>
inline __m128i sums_of(const __m256i* v) {
  const __m256i z = _mm256_setzero_si256();
  const __m256i ab = _mm256_hadd_epi32(v[0], NC > 1 ? v[1] : z), cd = _mm256_hadd_epi32(NC > 2 ? v[2] : z, NC > 3 ? v[3] : z);
  const __m256i abcd = _mm256_hadd_epi32(ab, cd);
  return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/// Repacked Q4_0 / IQ4_NL: one float chain per output, fma(block sum, dw * dx, acc); the columns'
/// chains run side by side in one vector, so a block costs one fma for all of them.
template <class Dec, int NC>
void chain_blocks_tile(const uint8_t* w, const uint8_t* x, uint64_t xs, int64_t n, float* out) {
  const auto* a = reinterpret_cast<const typename Dec::Block*>(w);
  __m128 acc = _mm_setzero_ps();
  for (int64_t k = 0; k < n / 32; ++k) {
    const __m256i q = Dec::values(a[k]);
    __m256i i8[NC];
    alignas(16) uint16_t dx[8] = {};
    for (int c = 0; c < NC; ++c) {
      const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(x + uint64_t(c) * xs)[k];
      i8[c] = lanes(pairs<true>(q, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs))));
      dx[c] = b.d;
    }
    const __m128 d = _mm_mul_ps(_mm_set1_ps(f16(a[k].d)), _mm_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dx))));
    acc = _mm_fmadd_ps(_mm_cvtepi32_ps(sums_of<NC>(i8)), d, acc);
  }
  alignas(16) float r[4];
  _mm_store_ps(r, acc);
  for (int c = 0; c < NC; ++c) out[c] = r[c];
}

template <class Dec, int NC>
void blocks_tile(const uint8_t* w, const uint8_t* x, uint64_t xs, int64_t n, Order order, float* out) {
  if constexpr (Dec::kType == PMOE_DTYPE_Q4_0 || Dec::kType == PMOE_DTYPE_IQ4_NL) {
    if (order != Order::vec_dot) return chain_blocks_tile<Dec, NC>(w, x, xs, n, out);
  }
  using XBlock = std::conditional_t<Dec::kSigned, BlockQ8_0, BlockQ8_1>;
  const auto* a = reinterpret_cast<const typename Dec::Block*>(w);
  __m256 acc[NC];
  float summs[NC];
  for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps(), summs[c] = 0.f;
  for (int64_t k = 0; k < n / 32; ++k) {
    if constexpr (NC == 1)  // one token: the weights stream from memory; ask for them early
      if (k % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(a + k) + 2048, _MM_HINT_T0);
    const __m256i q = Dec::values(a[k]);
    const float dw = f16(a[k].d);
    for (int c = 0; c < NC; ++c) {
      const XBlock& b = reinterpret_cast<const XBlock*>(x + uint64_t(c) * xs)[k];
      const __m256i i8 = lanes(pairs<Dec::kSigned>(q, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs))));
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dw * f16(b.d)), _mm256_cvtepi32_ps(i8), acc[c]);
      if constexpr (!Dec::kSigned) summs[c] = std::fma(f16(a[k].m), f16(b.s), summs[c]);
    }
  }
  for (int c = 0; c < NC; ++c) out[c] = hsum(acc[c]) + summs[c];
}

// ---- 256-value super-blocks ------------------------------------------------------------------------
/// A super-block decoded for the dot: 8 chunks of 32 values (unsigned, less kOffset, or signed),
/// the 16-bit scale of every 16-bit lane of each chunk's pair products, and per-16 mins
/// (x -= dmin * min). Q4_K and Q2_K are summed as llama.cpp's repacked kernels do (kChain).
struct SuperDec {
  __m256i q[8], sc[8], mins, g16;  // g16: Q6_K's per-16 scales
  float d, dmin;
};

inline void set_scales(SuperDec& s, const int16_t g[16]) {
  for (int k = 0; k < 8; ++k)
    s.sc[k] = _mm256_set_m128i(_mm_set1_epi16(g[2 * k + 1]), _mm_set1_epi16(g[2 * k]));
}
/// The same from the 16 scales in a register (scales computed as vectors stay out of memory: a
/// vector load of per-element stores fails store forwarding).
inline void set_scales(SuperDec& s, __m256i g16) {
  const __m256i lo = _mm256_permute2x128_si256(g16, g16, 0x00), hi = _mm256_permute2x128_si256(g16, g16, 0x11);
  for (int k = 0; k < 8; ++k) {
    const int e = 2 * (k % 4);  // scales 2k and 2k + 1: elements e, e + 1 of their half
    const __m256i pick = _mm256_set_m128i(_mm_set1_epi16(int16_t(0x0100 + 0x0202 * (e + 1))), _mm_set1_epi16(int16_t(0x0100 + 0x0202 * e)));
    s.sc[k] = _mm256_shuffle_epi8(k < 4 ? lo : hi, pick);
  }
}

struct DecQ2K {
  static constexpr uint32_t kType = PMOE_DTYPE_Q2_K;
  using Block = BlockQ2K;
  static constexpr bool kSigned = false, kMins = true;
  static constexpr int kOffset = 0;
  static void decode(const Block& b, SuperDec& s) {
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * h));
      for (int j = 0; j < 4; ++j) s.q[4 * h + j] = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
    }
    const __m128i sm = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)), m4 = _mm_set1_epi8(0xF);
    set_scales(s, _mm256_cvtepu8_epi16(_mm_and_si128(sm, m4)));
    s.mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), m4));
    s.d = f16(b.d), s.dmin = f16(b.dmin);
  }
};

struct DecQ3K {
  static constexpr uint32_t kType = PMOE_DTYPE_Q3_K;
  using Block = BlockQ3K;
  static constexpr bool kSigned = false, kMins = false;
  static constexpr int kOffset = 4;  // stored low2 + 4*hbit, the value is that - 4
  static void decode(const Block& b, SuperDec& s) {
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.hmask));
    for (int h = 0; h < 2; ++h) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * h));
      for (int j = 0; j < 4; ++j) {
        const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one);
        s.q[4 * h + j] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3), _mm256_slli_epi16(hb, 2));
      }
    }
    set_scales(s, _mm256_cvtepi8_epi16(q3k_scales16(b.scales)));
    s.d = f16(b.d), s.dmin = 0.f;
  }
};

/// Q4_K/Q5_K scales and mins in registers (through memory, per-element stores read back as vectors
/// failed store forwarding every super-block): sc[k] is scale k in every 16-bit lane, mins holds
/// min j in lanes 2j and 2j + 1.
template <class Block>
inline void q45k_scales(const Block& b, SuperDec& s) {
  uint32_t u[4];
  q4k_scales_mins_words(b.scales, u);
  const __m256i sm16 = _mm256_cvtepu8_epi16(_mm_set_epi32(int(u[3]), int(u[2]), int(u[1]), int(u[0])));
  const __m256i scales = _mm256_permute2x128_si256(sm16, sm16, 0x00);
  for (int k = 0; k < 8; ++k) s.sc[k] = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(int16_t(0x0100 + 0x0202 * k)));
  const __m128i mins = _mm256_extracti128_si256(sm16, 1);
  s.mins = _mm256_set_m128i(_mm_unpackhi_epi16(mins, mins), _mm_unpacklo_epi16(mins, mins));
  s.d = f16(b.d), s.dmin = f16(b.dmin);
}

struct DecQ4K {
  static constexpr uint32_t kType = PMOE_DTYPE_Q4_K;
  using Block = BlockQ4K;
  static constexpr bool kSigned = false, kMins = true;
  static constexpr int kOffset = 0;
  static void decode(const Block& b, SuperDec& s) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    for (int j = 0; j < 4; ++j) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * j));
      s.q[2 * j] = _mm256_and_si256(q, m4);
      s.q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
    q45k_scales(b, s);
  }
};

struct DecQ5K {
  static constexpr uint32_t kType = PMOE_DTYPE_Q5_K;
  using Block = BlockQ5K;
  static constexpr bool kSigned = false, kMins = true;
  static constexpr int kOffset = 0;
  static void decode(const Block& b, SuperDec& s) {
    const __m256i m4 = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh));
    for (int j = 0; j < 4; ++j) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * j));
      const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j), one), 4);
      const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j + 1), one), 4);
      s.q[2 * j] = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
      s.q[2 * j + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
    }
    q45k_scales(b, s);
  }
};

struct DecQ6K {
  static constexpr uint32_t kType = PMOE_DTYPE_Q6_K;
  using Block = BlockQ6K;
  static constexpr bool kSigned = false, kMins = false;
  static constexpr int kOffset = 32;  // stored 0..63, the value is that - 32
  static void decode(const Block& b, SuperDec& s) {
    const __m256i m4 = _mm256_set1_epi8(0xF), m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h));
      auto high = [&](int shift) { return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, shift), m3), 4); };
      s.q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), high(0));
      s.q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), high(2));
      s.q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), high(4));
      s.q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), high(6));
    }
    s.g16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
    set_scales(s, s.g16);
    s.d = f16(b.d), s.dmin = 0.f;
  }
};

struct DecIQ4XS {
  static constexpr uint32_t kType = PMOE_DTYPE_IQ4_XS;
  using Block = BlockIQ4XS;
  static constexpr bool kSigned = true, kMins = false;
  static constexpr int kOffset = 0;
  static void decode(const Block& b, SuperDec& s) {
    int16_t g[16];  // (scalar here: the vector unpack measured no faster on this kernel set)
    for (int k = 0; k < 8; ++k) {
      s.q[k] = iq4_lookup(nibbles32(b.qs + 16 * k));
      g[2 * k] = g[2 * k + 1] = int16_t(iq4xs_scale(b, k));
    }
    set_scales(s, g);
    s.d = f16(b.d), s.dmin = 0.f;
  }
};

template <class Dec, int NC>
void super_tile(const uint8_t* w, const uint8_t* x, uint64_t xs, int64_t n, Order order, float* out) {
  constexpr bool kChain = Dec::kType == PMOE_DTYPE_Q4_K || Dec::kType == PMOE_DTYPE_Q2_K;
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
      __m256i sum = _mm256_setzero_si256(), part[4];
      for (int j = 0; j < 8; ++j) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * j));
        __m256i p16 = pairs<Dec::kSigned>(s.q[j], xq);
        if constexpr (Dec::kOffset == 4)  // Q3_K, as ggml: the offset comes off each pair
          p16 = _mm256_sub_epi16(p16, _mm256_maddubs_epi16(_mm256_set1_epi8(Dec::kOffset), xq));
        sum = _mm256_add_epi32(sum, lanes(p16, s.sc[j]));
        if (kChain && (j + 1) % (8 / parts) == 0) part[(j * parts) / 8] = sum, sum = _mm256_setzero_si256();
      }
      if constexpr (kChain) {
        alignas(32) int32_t m[8];  // lane j: groups 2j, 2j + 1
        _mm256_store_si256(reinterpret_cast<__m256i*>(m), lanes(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.bsums)), s.mins));
        for (int p = 0; p < parts; ++p) {
          int mins = 0;
          for (int l = 8 * p / parts; l < 8 * (p + 1) / parts; ++l) mins += m[l];
          chain[c] = std::fma(float(hsum_i32(part[p])), s.d * b.d, chain[c]);
          chain_min[c] = std::fma(float(mins), s.dmin * b.d, chain_min[c]);
        }
        continue;
      }
      if constexpr (Dec::kOffset == 32)  // Q6_K, as ggml: 32 * scale * bsum off lane j (groups 2j, 2j + 1)
        sum = _mm256_sub_epi32(sum, _mm256_slli_epi32(lanes(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.bsums)), s.g16), 5));
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(b.d * s.d), _mm256_cvtepi32_ps(sum), acc[c]);
      if constexpr (Dec::kMins)  // Q5_K: one float sum of the mins per super-block
        summs[c] += -b.d * s.dmin * float(hsum_i32(lanes(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.bsums)), s.mins)));
    }
  }
  for (int c = 0; c < NC; ++c) out[c] = kChain ? chain[c] - chain_min[c] : hsum(acc[c]) + summs[c];
}

// ---- float weights -------------------------------------------------------------------------------
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p, bool bf16) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)) : _mm256_cvtph_ps(h);
}

/// One 16-lane float accumulator as two registers (ggml's AVX-512 vectors, lane for lane).
struct F16Lanes {
  __m256 lo, hi;
  F16Lanes() : lo(_mm256_setzero_ps()), hi(_mm256_setzero_ps()) {}
  void fma(const float* a, const float* b) {
    lo = _mm256_fmadd_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b), lo);
    hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + 8), _mm256_loadu_ps(b + 8), hi);
  }
  float reduce() const {  // as hsum16
    const __m256 t8 = _mm256_add_ps(hi, lo);
    const __m128 t4 = _mm_add_ps(_mm256_extractf128_ps(t8, 1), _mm256_castps256_ps128(t8));
    const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
    return _mm_cvtss_f32(_mm_add_ss(t2, _mm_movehdup_ps(t2)));
  }
};

/// 16 weights as floats (F32 / F16 / BF16) and 16 activations (floats, or bf16 for BF16 weights).
template <uint32_t Type>
inline void load16(const void* p, int64_t i, __m256& lo, __m256& hi) {
  if constexpr (Type == PMOE_DTYPE_F32) {
    lo = _mm256_loadu_ps(static_cast<const float*>(p) + i), hi = _mm256_loadu_ps(static_cast<const float*>(p) + i + 8);
  } else {
    const uint16_t* h = static_cast<const uint16_t*>(p) + i;
    lo = load8(h, Type == PMOE_DTYPE_BF16), hi = load8(h + 8, Type == PMOE_DTYPE_BF16);
  }
}

/// As dot_floats in kernels_scalar.cpp: F32 in llama.cpp's vec_dot or tinyBLAS order, F16 and BF16
/// in the vec_dot order.
template <uint32_t Type, int NC>
void floats_tile(const uint8_t* w, const uint8_t* x, uint64_t xs, int64_t n, Order order, float* out) {
  constexpr uint32_t XType = Type == PMOE_DTYPE_BF16 ? PMOE_DTYPE_BF16 : PMOE_DTYPE_F32;
  auto xc = [&](int c) { return static_cast<const void*>(x + c * xs); };
  auto scalar = [](const void* p, int64_t i, uint32_t t) {
    if (t == PMOE_DTYPE_F32) return static_cast<const float*>(p)[i];
    const uint16_t h = static_cast<const uint16_t*>(p)[i];
    return t == PMOE_DTYPE_F16 ? f16(h) : pmoe_bf16_to_fp32(h);
  };
  if (Type == PMOE_DTYPE_F32 && order == Order::gemm) {
    F16Lanes acc[NC];
    for (int64_t i = 0; i < n; i += 16) {
      __m256 wl, wh;
      load16<Type>(w, i, wl, wh);
      for (int c = 0; c < NC; ++c) {
        __m256 xl, xh;
        load16<XType>(xc(c), i, xl, xh);
        acc[c].lo = _mm256_fmadd_ps(wl, xl, acc[c].lo), acc[c].hi = _mm256_fmadd_ps(wh, xh, acc[c].hi);
      }
    }
    for (int c = 0; c < NC; ++c) out[c] = acc[c].reduce();
    return;
  }
  const int64_t np = n & ~int64_t(63);
  F16Lanes s[NC][4];
  for (int64_t i = 0; i < np; i += 64)
    for (int j = 0; j < 4; ++j) {
      __m256 wl, wh;
      load16<Type>(w, i + 16 * j, wl, wh);
      for (int c = 0; c < NC; ++c) {
        __m256 xl, xh;
        load16<XType>(xc(c), i + 16 * j, xl, xh);
        s[c][j].lo = _mm256_fmadd_ps(wl, xl, s[c][j].lo), s[c][j].hi = _mm256_fmadd_ps(wh, xh, s[c][j].hi);
      }
    }
  for (int c = 0; c < NC; ++c) {
    s[c][0].lo = _mm256_add_ps(_mm256_add_ps(s[c][0].lo, s[c][2].lo), _mm256_add_ps(s[c][1].lo, s[c][3].lo));
    s[c][0].hi = _mm256_add_ps(_mm256_add_ps(s[c][0].hi, s[c][2].hi), _mm256_add_ps(s[c][1].hi, s[c][3].hi));
    double sum = s[c][0].reduce();
    for (int64_t i = np; i < n; ++i) sum += double(scalar(w, i, Type) * scalar(xc(c), i, XType));
    out[c] = float(sum);
  }
}

template <class Dec>
struct Blocks {
  template <int NC>
  struct K {
    static constexpr FixedTileFn run = blocks_tile<Dec, NC>;
  };
};
template <class Dec>
struct Super {
  template <int NC>
  struct K {
    static constexpr FixedTileFn run = super_tile<Dec, NC>;
  };
};
template <int NC> struct F32K { static constexpr FixedTileFn run = floats_tile<PMOE_DTYPE_F32, NC>; };
template <int NC> struct F16K { static constexpr FixedTileFn run = floats_tile<PMOE_DTYPE_F16, NC>; };
template <int NC> struct BF16K { static constexpr FixedTileFn run = floats_tile<PMOE_DTYPE_BF16, NC>; };


// ---- attention ------------------------------------------------------------------------------------
/// ggml_v_expf on 8 lanes; vscalefps emulated with two exact power-of-two multiplies.
/// 2^e for exponents in the normal range.
inline __m256 pow2(__m256i e) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23)); }

inline __m256 expf8(__m256 x) {
  const __m256 r = _mm256_set1_ps(0x1.8p23f);
  const __m256 n = _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r), r);
  const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f), _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 j = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                      _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
      u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
  // j * 2^n, rounded once: j * 2^n1 is exact for n1 >= -125 (j >= 0.7), then a power of two <= 1
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_min_epi32(_mm256_max_epi32(ni, _mm256_set1_epi32(-125)), _mm256_set1_epi32(127));
  const __m256 res = _mm256_mul_ps(_mm256_mul_ps(j, pow2(n1)), pow2(_mm256_sub_epi32(ni, n1)));
  const __m256 big = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(192.f), _CMP_GT_OQ);
  const __m256 alt = _mm256_blendv_ps(_mm256_set1_ps(INFINITY), _mm256_setzero_ps(), _mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ));
  return _mm256_blendv_ps(res, alt, big);
}

/// hsum16 of 16 floats held as lo (lanes 0..7) and hi (8..15), as F16Lanes::reduce.
inline __m256 tree4(__m256 a0, __m256 a4, __m256 a8, __m256 a12) { return _mm256_add_ps(_mm256_add_ps(a12, a4), _mm256_add_ps(a8, a0)); }

}  // namespace

void expf16_avx2(const float* x, float* y) {
  _mm256_storeu_ps(y, expf8(_mm256_loadu_ps(x)));
  _mm256_storeu_ps(y + 8, expf8(_mm256_loadu_ps(x + 8)));
}

void attend_avx2(const float* q, const float* k, int64_t ks, const float* v, int64_t vs, int64_t hd, int64_t j0, int64_t p,
                 float scale, bool batch, int64_t n_vec, float* out, const AttendScratch& sc) {
  if (hd % 8) return attend_scalar(q, k, ks, v, vs, hd, j0, p, scale, batch, n_vec, out, sc);
  const int64_t n16 = (p / 16 + 1) * 16, c0 = j0 / 16 * 16;
  float* w = sc.w;
  for (int64_t j = c0; j < n16; ++j) w[j] = -INFINITY;
  float mx = -INFINITY;
  for (int64_t j = j0; j <= p; ++j) {
    float s;
    floats_tile<PMOE_DTYPE_F32, 1>(reinterpret_cast<const uint8_t*>(k + j * ks), reinterpret_cast<const uint8_t*>(q), 0, hd,
                                   Order::vec_dot, &s);
    w[j] = s * scale;
    mx = std::max(mx, w[j]);
  }
  double sum = 0.0;
  const __m256 vmx = _mm256_set1_ps(mx);
  for (int64_t c = c0; c < n16; c += 16) {
    F16Lanes e;
    e.lo = expf8(_mm256_sub_ps(_mm256_loadu_ps(w + c), vmx));
    e.hi = expf8(_mm256_sub_ps(_mm256_loadu_ps(w + c + 8), vmx));
    _mm256_storeu_ps(w + c, e.lo);
    _mm256_storeu_ps(w + c + 8, e.hi);
    sum += double(e.reduce());
  }
  const float inv = float(1.0 / sum);
  for (int64_t j = j0; j <= p; ++j) w[j] *= inv;
  // lane l of a chain of `width` lanes takes the keys j = l (mod width)
  float* lanes = sc.lanes;
  const int64_t width = batch ? 16 : 64;
  const int64_t jend = batch ? p + 1 : std::min(p + 1, n_vec / 64 * 64);  // keys summed in the chains
  const bool any = jend > j0;
  if (any)  // lane by lane, 64 values at a time: each chain in registers, stored once
    for (int64_t i0 = 0; i0 < hd; i0 += 64) {
      const int64_t nc = std::min<int64_t>(8, (hd - i0) / 8);
      for (int64_t l = 0; l < width; ++l) {
        __m256 acc[8];
        for (int c = 0; c < 8; ++c) acc[c] = _mm256_setzero_ps();
        for (int64_t j = j0 + ((l - j0) % width + width) % width; j < jend; j += width) {
          const __m256 wj = _mm256_set1_ps(w[j]);
          const float* vj = v + j * vs + i0;
          if (nc == 8)
            for (int c = 0; c < 8; ++c) acc[c] = _mm256_fmadd_ps(_mm256_loadu_ps(vj + 8 * c), wj, acc[c]);
          else
            for (int c = 0; c < nc; ++c) acc[c] = _mm256_fmadd_ps(_mm256_loadu_ps(vj + 8 * c), wj, acc[c]);
        }
        for (int c = 0; c < nc; ++c) _mm256_storeu_ps(lanes + l * hd + i0 + 8 * c, acc[c]);
      }
    }
  auto L = [&](int64_t l, int64_t i) { return _mm256_loadu_ps(lanes + l * hd + i); };
  if (batch) {  // tinyBLAS: the 16 chains reduced as hsum16
    for (int64_t i = 0; i < hd; i += 8) {
      __m256 t[4];
      for (int l = 0; l < 4; ++l) t[l] = tree4(L(l, i), L(l + 4, i), L(l + 8, i), L(l + 12, i));
      _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3])));
    }
    return;
  }
  // vec_dot: chains c and c + 2 added, then 1 + 3, both, reduced as hsum16; the rest in double,
  // four groups of 8 values at a time (independent chains: the double adds' latency hidden)
  const int64_t step = hd % 32 == 0 ? 32 : 8;
  for (int64_t i0 = 0; i0 < hd; i0 += step) {
    __m256d lo[4], hi[4];
    for (int64_t g = 0; g < step / 8; ++g) {
      const int64_t i = i0 + 8 * g;
      __m256 r = _mm256_setzero_ps();
      if (any) {
        __m256 a[16];
        for (int l = 0; l < 16; ++l)
          a[l] = _mm256_add_ps(_mm256_add_ps(L(l, i), L(l + 32, i)), _mm256_add_ps(L(l + 16, i), L(l + 48, i)));
        __m256 t[4];
        for (int l = 0; l < 4; ++l) t[l] = tree4(a[l], a[l + 4], a[l + 8], a[l + 12]);
        r = _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3]));
      }
      lo[g] = _mm256_cvtps_pd(_mm256_castps256_ps128(r)), hi[g] = _mm256_cvtps_pd(_mm256_extractf128_ps(r, 1));
    }
    for (int64_t j = std::max(j0, jend); j <= p; ++j) {
      const __m256 wj = _mm256_set1_ps(w[j]);
      for (int64_t g = 0; g < step / 8; ++g) {
        const __m256 prod = _mm256_mul_ps(_mm256_loadu_ps(v + j * vs + i0 + 8 * g), wj);
        lo[g] = _mm256_add_pd(lo[g], _mm256_cvtps_pd(_mm256_castps256_ps128(prod)));
        hi[g] = _mm256_add_pd(hi[g], _mm256_cvtps_pd(_mm256_extractf128_ps(prod, 1)));
      }
    }
    for (int64_t g = 0; g < step / 8; ++g) {
      _mm_storeu_ps(out + i0 + 8 * g, _mm256_cvtpd_ps(lo[g]));
      _mm_storeu_ps(out + i0 + 8 * g + 4, _mm256_cvtpd_ps(hi[g]));
    }
  }
}

/// Eight rows' integer block sums in the lanes of one vector (lane r: row r), from t[k] holding
/// rows k and k + 4 as 4 lanes each.
inline __m256i sums8(const __m256i t[4]) {
  return _mm256_hadd_epi32(_mm256_hadd_epi32(t[0], t[1]), _mm256_hadd_epi32(t[2], t[3]));
}

/// Block b of rows a and b (repacked Q4_0 / IQ4_NL) as one register per nibble half: values 0-15
/// of row a in the low 128 bits and row b's in the high ones (`lo`), values 16-31 likewise (`hi`);
/// IQ4_NL's looked up (signed), Q4_0's unsigned 0..15.
template <bool kIQ4>
inline void q4_row_pair(const uint8_t* a, const uint8_t* b, int64_t blk, __m256i& lo, __m256i& hi) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i raw = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + blk * 18 + 2))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + blk * 18 + 2)), 1);
  lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
  if constexpr (kIQ4) {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values));
    const __m256i table = _mm256_set_m128i(t, t);
    lo = _mm256_shuffle_epi8(table, lo), hi = _mm256_shuffle_epi8(table, hi);
  }
}
/// Eight rows' integer block sums (lane r: row r) from their row pairs (rows k and k + 4 in pair k)
/// and x's values 0-15 and 16-31 in both halves (xl, xh); Q4_0's still without its -8 offset.
template <bool kIQ4>
inline __m256i q4_sums8(const __m256i lo[4], const __m256i hi[4], __m256i xl, __m256i xh) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256i t[4];
  for (int k = 0; k < 4; ++k)
    t[k] = kIQ4  // (pair sums up to 2 * 127 * 127: the halves are added as 32-bit lanes)
               ? _mm256_add_epi32(lanes(pairs<true>(lo[k], xl), ones16), lanes(pairs<true>(hi[k], xh), ones16))
               : lanes(_mm256_add_epi16(_mm256_maddubs_epi16(lo[k], xl), _mm256_maddubs_epi16(hi[k], xh)), ones16);
  return sums8(t);
}
/// What Q4_0's -8 offset takes off a block's sum against x: 8 * sum(x) (0 for IQ4_NL).
template <bool kIQ4>
inline __m256i q4_offset(const BlockQ8_0& x) {
  if constexpr (kIQ4) return _mm256_setzero_si256();
  const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs));
  return _mm256_set1_epi32(8 * hsum_i32(lanes(_mm256_maddubs_epi16(_mm256_set1_epi8(1), xq), _mm256_set1_epi16(1))));
}
/// Eight rows' f16 scales of block b as floats: loads and inserts (a gather was 2x slower on Zen 3).
inline __m256 q4_scales8(const uint8_t* const rows[8], int64_t b) {
  auto sc = [&](int r) {
    uint16_t v;
    __builtin_memcpy(&v, rows[r] + b * 18, 2);
    return short(v);
  };
  return _mm256_cvtph_ps(_mm_set_epi16(sc(7), sc(6), sc(5), sc(4), sc(3), sc(2), sc(1), sc(0)));
}

/// Sixteen repacked Q4_0 / IQ4_NL rows against one Q8_0 row (decode): each row's chain
/// fma(block sum, dw * dx, acc) in its own lane, as chain_blocks_tile computes it one row at a
/// time, so no block is reduced to a scalar; the next 16 rows prefetched over the pass.
template <bool kIQ4>
void q4_gemv16(const uint8_t* w, const int32_t* off, const int32_t* next_off, const uint8_t* x, int64_t n, float* out) {
  const int64_t nb = n / 32;
  const auto* xb = reinterpret_cast<const BlockQ8_0*>(x);
  const uint8_t* rows[16];
  for (int r = 0; r < 16; ++r) rows[r] = w + off[r];
  // the next 16 rows, spread over the pass: in address order where they follow these (16 streams
  // apart defeat the hardware prefetchers), else the rows the caller names
  const uint64_t row_bytes = uint64_t(nb) * 18;
  bool consecutive = true;
  for (int r = 0; r < 16; ++r) consecutive &= uint64_t(off[r]) == r * row_bytes;
  const uintptr_t next = reinterpret_cast<uintptr_t>(w) + 16 * row_bytes;
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < nb; ++b) {
    if (consecutive)  // 16 rows' bytes per block: 288 of the next region
      for (uint64_t p = uint64_t(b) * 288; p < uint64_t(b + 1) * 288; p += 64)
        _mm_prefetch(reinterpret_cast<const char*>(next + p), _MM_HINT_T0);
    else if (next_off && b % 4 == 0)
      for (int r = 0; r < 16; ++r) {
        const char* p = reinterpret_cast<const char*>(w + next_off[r] + b * 18);
        _mm_prefetch(p, _MM_HINT_T0);
        _mm_prefetch(p + 71, _MM_HINT_T0);
      }
    const __m128i xq = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xb[b].qs));
    const __m256i xl = _mm256_broadcastsi128_si256(xq);
    const __m256i xh = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb[b].qs + 16)));
    const __m256i offset = q4_offset<kIQ4>(xb[b]);
    const __m256 dx = _mm256_set1_ps(f16(xb[b].d));
    for (int h = 0; h < 2; ++h) {
      const uint8_t* const* r8 = rows + 8 * h;
      __m256i lo[4], hi[4];
      for (int k = 0; k < 4; ++k) q4_row_pair<kIQ4>(r8[k], r8[k + 4], b, lo[k], hi[k]);
      const __m256i isum = _mm256_sub_epi32(q4_sums8<kIQ4>(lo, hi, xl, xh), offset);
      acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(q4_scales8(r8, b), dx), acc[h]);
    }
  }
  _mm256_storeu_ps(out, acc[0]);
  _mm256_storeu_ps(out + 8, acc[1]);
}

/// Sixteen repacked Q4_0 / IQ4_NL rows against NC Q8_0 rows (prefill tiles), 8 rows per pass: a
/// row pair's decoded block serves every column, each (row, column) chain in a lane as above.
template <bool kIQ4, int NC>
void q4_tile16(const uint8_t* w, const int32_t* off, const uint8_t* x, uint64_t xs, int64_t n, float* out) {
  const int64_t nb = n / 32;
  for (int h = 0; h < 2; ++h) {
    const uint8_t* rows[8];
    for (int r = 0; r < 8; ++r) rows[r] = w + off[8 * h + r];
    __m256 acc[NC];
    for (auto& a : acc) a = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m256i lo[4], hi[4];
      for (int k = 0; k < 4; ++k) q4_row_pair<kIQ4>(rows[k], rows[k + 4], b, lo[k], hi[k]);
      const __m256 dw = q4_scales8(rows, b);
      for (int c = 0; c < NC; ++c) {
        const BlockQ8_0& xb = reinterpret_cast<const BlockQ8_0*>(x + uint64_t(c) * xs)[b];
        const __m256i xl = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.qs)));
        const __m256i xh = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.qs + 16)));
        const __m256i isum = _mm256_sub_epi32(q4_sums8<kIQ4>(lo, hi, xl, xh), q4_offset<kIQ4>(xb));
        acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(f16(xb.d))), acc[c]);
      }
    }
    for (int c = 0; c < NC; ++c) _mm256_storeu_ps(out + 16 * c + 8 * h, acc[c]);
  }
}
template <bool kIQ4>
void q4_tile16_by_cols(const uint8_t* w, const int32_t* off, const uint8_t* x, uint64_t xs, int nc, int64_t n, float* out) {
  with_cols(nc, [&](auto c) { q4_tile16<kIQ4, c>(w, off, x, xs, n, out); });
}

Rows16TileFn avx2_rows16_tile(uint32_t type, Order order) {
  if (order == Order::vec_dot) return nullptr;
  switch (type) {
    case PMOE_DTYPE_Q4_0: return q4_tile16_by_cols<false>;
    case PMOE_DTYPE_IQ4_NL: return q4_tile16_by_cols<true>;
    default: return nullptr;
  }
}

Rows16Fn avx2_rows16(uint32_t type, Order order) {
  if (order != Order::gemv) return nullptr;
  switch (type) {
    case PMOE_DTYPE_Q4_0: return q4_gemv16<false>;
    case PMOE_DTYPE_IQ4_NL: return q4_gemv16<true>;
    default: return nullptr;
  }
}

TileFn avx2_tile(uint32_t type, Order order) {
  // rare shapes with their own order: the scalar kernels
  if (order == Order::vec_dot && (type == PMOE_DTYPE_IQ4_NL || type == PMOE_DTYPE_Q2_K || type == PMOE_DTYPE_Q4_K))
    return nullptr;
  switch (type) {
    case PMOE_DTYPE_F32: return by_cols<F32K>;
    case PMOE_DTYPE_F16: return by_cols<F16K>;
    case PMOE_DTYPE_BF16: return by_cols<BF16K>;
    case PMOE_DTYPE_Q4_0: return by_cols<Blocks<DecQ4_0>::K>;
    case PMOE_DTYPE_Q5_0: return by_cols<Blocks<DecQ5_0>::K>;
    case PMOE_DTYPE_Q8_0: return by_cols<Blocks<DecQ8_0>::K>;
    case PMOE_DTYPE_IQ4_NL: return by_cols<Blocks<DecIQ4NL>::K>;
    case PMOE_DTYPE_Q4_1: return by_cols<Blocks<DecQ4_1>::K>;
    case PMOE_DTYPE_Q5_1: return by_cols<Blocks<DecQ5_1>::K>;
    case PMOE_DTYPE_Q2_K: return by_cols<Super<DecQ2K>::K>;
    case PMOE_DTYPE_Q3_K: return by_cols<Super<DecQ3K>::K>;
    case PMOE_DTYPE_Q4_K: return by_cols<Super<DecQ4K>::K>;
    case PMOE_DTYPE_Q5_K: return by_cols<Super<DecQ5K>::K>;
    case PMOE_DTYPE_Q6_K: return by_cols<Super<DecQ6K>::K>;
    case PMOE_DTYPE_IQ4_XS: return by_cols<Super<DecIQ4XS>::K>;
    default: return nullptr;
  }
}

}  // namespace pmoe::cpu
