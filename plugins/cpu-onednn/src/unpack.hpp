// Blocks unpacked into plain small integers: the portable kernels' one view of every block type
// (and the tests' check of the bit layouts). A value is x = v * d (+ m) for the 32-value blocks and
// x = (d * scale[g]) * v - dmin * min[g] in 16-value group g of a 256-value super-block.
#pragma once

#include "blocks.hpp"

#include <cstring>

namespace pmoe::cpu {

/// Values of a 32-value block with their offset applied; returns d.
inline float unpack_block(const BlockQ8_0& b, int8_t v[32]) {
  std::memcpy(v, b.qs, 32);
  return pmoe_fp16_to_fp32(b.d);
}
inline float unpack_block(const BlockQ4_0& b, int8_t v[32]) {
  for (int j = 0; j < 16; ++j) v[j] = int8_t((b.qs[j] & 0xF) - 8), v[j + 16] = int8_t((b.qs[j] >> 4) - 8);
  return pmoe_fp16_to_fp32(b.d);
}
inline float unpack_block(const BlockQ4_1& b, int8_t v[32]) {  // x = v * d + m
  for (int j = 0; j < 16; ++j) v[j] = int8_t(b.qs[j] & 0xF), v[j + 16] = int8_t(b.qs[j] >> 4);
  return pmoe_fp16_to_fp32(b.d);
}
inline void unpack_q5(const uint8_t qh_bytes[4], const uint8_t qs[16], int offset, int8_t v[32]) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 16; ++j) {
    v[j] = int8_t(((qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - offset);
    v[j + 16] = int8_t(((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset);
  }
}
inline float unpack_block(const BlockQ5_0& b, int8_t v[32]) {
  unpack_q5(b.qh, b.qs, 16, v);
  return pmoe_fp16_to_fp32(b.d);
}
inline float unpack_block(const BlockQ5_1& b, int8_t v[32]) {  // x = v * d + m
  unpack_q5(b.qh, b.qs, 0, v);
  return pmoe_fp16_to_fp32(b.d);
}
inline float unpack_block(const BlockIQ4NL& b, int8_t v[32]) {
  for (int j = 0; j < 16; ++j) v[j] = kIQ4Values[b.qs[j] & 0xF], v[j + 16] = kIQ4Values[b.qs[j] >> 4];
  return pmoe_fp16_to_fp32(b.d);
}

/// A 256-value super-block: values (offsets applied), and per 16-value group its scale and min.
struct SuperBlock {
  int8_t v[256];
  int16_t scale[16];
  int16_t min[16];
  float d, dmin;
};

inline void unpack_super(const BlockQ2K& b, SuperBlock& u) {
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 32; ++l) u.v[128 * h + 32 * j + l] = int8_t((b.qs[32 * h + l] >> (2 * j)) & 3);
  for (int g = 0; g < 16; ++g) u.scale[g] = int16_t(b.scales[g] & 0xF), u.min[g] = int16_t(b.scales[g] >> 4);
  u.d = pmoe_fp16_to_fp32(b.d), u.dmin = pmoe_fp16_to_fp32(b.dmin);
}

inline void unpack_super(const BlockQ3K& b, SuperBlock& u) {
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 32; ++l) {
        const int low = (b.qs[32 * h + l] >> (2 * j)) & 3;
        const bool high = b.hmask[l] & (1 << (4 * h + j));
        u.v[128 * h + 32 * j + l] = int8_t(low - (high ? 0 : 4));
      }
  int8_t sc[16];
  q3k_scales(b.scales, sc);
  for (int g = 0; g < 16; ++g) u.scale[g] = sc[g], u.min[g] = 0;
  u.d = pmoe_fp16_to_fp32(b.d), u.dmin = 0.f;
}

template <class Block>  // Q4_K, Q5_K
inline void unpack_q45k(const Block& b, const uint8_t* qh, SuperBlock& u) {
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < 32; ++l) {
      const uint8_t q = b.qs[32 * j + l];
      u.v[64 * j + l] = int8_t((q & 0xF) | (qh && (qh[l] >> (2 * j)) & 1 ? 16 : 0));
      u.v[64 * j + 32 + l] = int8_t((q >> 4) | (qh && (qh[l] >> (2 * j + 1)) & 1 ? 16 : 0));
    }
  uint8_t sm[16];
  q4k_scales_mins(b.scales, sm);
  for (int s = 0; s < 8; ++s) u.scale[2 * s] = u.scale[2 * s + 1] = sm[s], u.min[2 * s] = u.min[2 * s + 1] = sm[8 + s];
  u.d = pmoe_fp16_to_fp32(b.d), u.dmin = pmoe_fp16_to_fp32(b.dmin);
}
inline void unpack_super(const BlockQ4K& b, SuperBlock& u) { unpack_q45k(b, nullptr, u); }
inline void unpack_super(const BlockQ5K& b, SuperBlock& u) { unpack_q45k(b, b.qh, u); }

inline void unpack_super(const BlockQ6K& b, SuperBlock& u) {
  for (int h = 0; h < 2; ++h) {
    const uint8_t *ql = b.ql + 64 * h, *qh = b.qh + 32 * h;
    int8_t* v = u.v + 128 * h;
    for (int l = 0; l < 32; ++l) {
      v[l] = int8_t(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
      v[l + 32] = int8_t(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      v[l + 64] = int8_t(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      v[l + 96] = int8_t(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
  for (int g = 0; g < 16; ++g) u.scale[g] = b.scales[g], u.min[g] = 0;
  u.d = pmoe_fp16_to_fp32(b.d), u.dmin = 0.f;
}

inline void unpack_super(const BlockIQ4XS& b, SuperBlock& u) {
  for (int s = 0; s < 8; ++s) {
    for (int j = 0; j < 16; ++j) {
      u.v[32 * s + j] = kIQ4Values[b.qs[16 * s + j] & 0xF];
      u.v[32 * s + 16 + j] = kIQ4Values[b.qs[16 * s + j] >> 4];
    }
    u.scale[2 * s] = u.scale[2 * s + 1] = int16_t(iq4xs_scale(b, s));
    u.min[2 * s] = u.min[2 * s + 1] = 0;
  }
  u.d = pmoe_fp16_to_fp32(b.d), u.dmin = 0.f;
}

}  // namespace pmoe::cpu
