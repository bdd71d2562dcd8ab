// Byte layouts of the GGUF block types (GGML's ggml-common.h, docs/quant-types.md) and of the
// quantized activation rows the dot kernels read. Every struct is packed exactly as stored.
#pragma once

#include <pocketmoe/dtype.h>

#include <cstdint>
#include <cstring>

namespace pmoe::cpu {

// ---- weights ----------------------------------------------------------------------------------
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];  // byte j: element j (low nibble), element j + 16 (high nibble)
};
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[16];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // bit j of the little-endian u32: the 5th bit of element j
  uint8_t qs[16];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
struct BlockIQ4NL {
  uint16_t d;
  uint8_t qs[16];  // indices into kIQ4Values, packed as Q4_0
};
struct BlockQ2K {
  uint8_t scales[16];  // per 16 values: scale (low nibble), min (high nibble)
  uint8_t qs[64];
  uint16_t d, dmin;
};
struct BlockQ3K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];  // 16 6-bit scales, offset by 32
  uint16_t d;
};
struct BlockQ4K {
  uint16_t d, dmin;
  uint8_t scales[12];  // 8 6-bit scales and 8 6-bit mins (get_scale_min_k4 packing)
  uint8_t qs[128];
};
struct BlockQ5K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
struct BlockQ6K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
struct BlockIQ4XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[4];
  uint8_t qs[128];
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockIQ4NL) == 18);
static_assert(sizeof(BlockQ2K) == 84 && sizeof(BlockQ3K) == 110 && sizeof(BlockQ4K) == 144 &&
              sizeof(BlockQ5K) == 176 && sizeof(BlockQ6K) == 210 && sizeof(BlockIQ4XS) == 136);

/// The 16 values of IQ4_NL/IQ4_XS nibbles (a non-linear grid).
inline constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};

// ---- activations --------------------------------------------------------------------------------
/// Q8_1: Q8_0 plus s = d * sum(qs), both f16 (for weights with an offset m: Q4_1, Q5_1).
struct BlockQ8_1 {
  uint16_t d, s;
  int8_t qs[32];
};
/// Q8_K: 256 values with a float scale and the sums of each 16 (for the K-quants and IQ4_XS).
struct BlockQ8K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};
static_assert(sizeof(BlockQ8_1) == 36 && sizeof(BlockQ8K) == 292);

/// Four Q8_0 activation blocks arranged for the AVX-512 kernel of repacked Q4_0/IQ4_NL, which
/// reads four weight blocks at a time with values 0..15 of each block in one register and 16..31
/// in another (their nibble order): `lo`/`hi` hold the activations the same way, so one block's
/// integer sum lands in its own 4 lanes.
struct GroupQ8x4 {
  int8_t lo[64];    // elements 0..15 of each of the 4 blocks
  int8_t hi[64];    // elements 16..31 of each block
  int32_t sum[16];  // -8 * the block's sum of q in its first lane, 0 in the other 3 (Q4_0's offset)
  float d[16];      // each block's scale (as rounded to f16), repeated in its 4 lanes
};
static_assert(sizeof(GroupQ8x4) == 256);
/// A Q8_0 activation block for the AVX-512 kernel of Q8_0 weights: VNNI multiplies unsigned by
/// signed bytes, so the values are stored plus 128, and the scale is the f16 one as a float.
struct BlockQ8U {
  float d;
  uint8_t qs[32];  // q + 128
};
static_assert(sizeof(BlockQ8U) == 36);


// ---- sub-block scales of the K-quants, as GGML unpacks them -------------------------------------
/// Q4_K/Q5_K: all 8 scales (bytes 0..7) and 8 mins (bytes 8..15) at once, by GGML's word shuffle,
/// as four little-endian words `u`.
inline void q4k_scales_mins_words(const uint8_t* s, uint32_t u[4]) {
  std::memcpy(u, s, 12);
  constexpr uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
  u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
  const uint32_t mins_lo = u[1] & k1;
  u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
  u[2] = mins_lo;
  u[0] &= k1;
}
/// The same as 16 bytes.
inline void q4k_scales_mins(const uint8_t* s, uint8_t out[16]) {
  uint32_t u[4];
  q4k_scales_mins_words(s, u);
  std::memcpy(out, u, 16);
}

/// Q3_K: the 16 scales (already minus 32) of 16-value sub-blocks, from the 12 packed bytes.
inline void q3k_scales(const uint8_t* s, int8_t out[16]) {
  for (int j = 0; j < 16; ++j) {
    const int low = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    out[j] = int8_t((low | (high << 4)) - 32);
  }
}

/// IQ4_XS: the scale (minus 32) of 32-value sub-block j (0..7).
inline int iq4xs_scale(const BlockIQ4XS& b, int j) {
  return (((b.scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | (((b.scales_h >> (2 * j)) & 3) << 4)) - 32;
}

}  // namespace pmoe::cpu
