// Sub-block scales of Q3_K and IQ4_XS unpacked in registers, for the AVX2 and AVX-512 kernels
// (AVX2 takes only Q3_K's: its IQ4_XS kernel sets each scale from a scalar, measured as fast):
// the scalar unpack (blocks.hpp) stores bytes that a vector load then reads back, a failed store
// forward every super-block. Internal linkage: each kernel file compiles them for its own target.
#pragma once

#include "blocks.hpp"

#include <immintrin.h>

#include <cstring>

namespace pmoe::cpu {
namespace {

/// Q3_K's 16 scales as bytes (q3k_scales): low 4 bits from bytes 0..7 (low nibbles, then high
/// ones), the top 2 from bytes 8..11 (scale j: byte 8 + j % 4, bits 2 (j / 4)), minus 32.
inline __m128i q3k_scales16(const uint8_t* sp) {
  uint32_t u[3];
  std::memcpy(u, sp, 12);
  const __m128i v = _mm_setr_epi32(int(u[0]), int(u[1]), 0, 0), m4 = _mm_set1_epi8(0xF);
  const __m128i low = _mm_unpacklo_epi64(_mm_and_si128(v, m4), _mm_and_si128(_mm_srli_epi16(v, 4), m4));
  const __m128i top = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32(int(u[2])), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
  return _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi32(top, 4)), _mm_set1_epi8(32));
}

/// IQ4_XS's 8 scales as 16-bit lanes (iq4xs_scale): scale j's top 2 bits are bits 2j, 2j + 1 of
/// scales_h, moved to the top of lane j by a multiply by 2^(14 - 2j) (AVX2 has no 16-bit
/// variable shift) and shifted down by 14.
inline __m128i iq4xs_scales8(const BlockIQ4XS& b) {
  uint32_t l;
  std::memcpy(&l, b.scales_l, 4);
  const __m128i v = _mm_cvtsi32_si128(int(l)), m4 = _mm_set1_epi8(0xF);
  const __m128i low = _mm_cvtepu8_epi16(_mm_unpacklo_epi8(_mm_and_si128(v, m4), _mm_and_si128(_mm_srli_epi16(v, 4), m4)));
  const __m128i up = _mm_setr_epi16(1 << 14, 1 << 12, 1 << 10, 1 << 8, 1 << 6, 1 << 4, 1 << 2, 1);
  const __m128i top = _mm_srli_epi16(_mm_mullo_epi16(_mm_set1_epi16(int16_t(b.scales_h)), up), 14);
  return _mm_sub_epi16(_mm_or_si128(low, _mm_slli_epi16(top, 4)), _mm_set1_epi16(32));
}

}  // namespace
}  // namespace pmoe::cpu
