/*
 * pocketmoe SDK: element and block types of tensors.
 *
 * The numeric values are GGML's type ids, as stored in GGUF tensor directories, so a tensor's
 * type can cross the ABI without translation. Block types pack `block_elems` values into
 * `block_bytes` bytes; rows of a tensor are whole numbers of blocks.
 *
 *   F32   4 bytes per value
 *   F16   IEEE half
 *   BF16  upper 16 bits of an IEEE float
 *   Q8_0  32 values: { f16 d; int8 q[32] }           x = q * d
 *   Q4_0  32 values: { f16 d; uint8 qs[16] }          byte j: element j in the low nibble,
 *                                                     element j+16 in the high one; x = (nib-8)*d
 *
 * Added in ABI 1.1 (the types of the GGUF files people download; layouts exactly as GGML's
 * ggml-common.h, little-endian, no padding):
 *
 *   Q4_1    32 values, 20 bytes: { f16 d; f16 m; uint8 qs[16] }        x = nib*d + m (nibbles as Q4_0)
 *   Q5_0    32 values, 22 bytes: { f16 d; uint8 qh[4]; uint8 qs[16] }  x = (nib | hbit<<4) - 16) * d,
 *                                hbit of element j = bit j of the little-endian u32 qh
 *   Q5_1    32 values, 24 bytes: { f16 d; f16 m; uint8 qh[4]; uint8 qs[16] }  x = (nib | hbit<<4)*d + m
 *   Q2_K   256 values, 84 bytes: { uint8 scales[16]; uint8 qs[64]; f16 d; f16 dmin }
 *   Q3_K   256 values, 110 bytes: { uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; f16 d }
 *   Q4_K   256 values, 144 bytes: { f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128] }
 *   Q5_K   256 values, 176 bytes: { f16 d; f16 dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128] }
 *   Q6_K   256 values, 210 bytes: { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d }
 *   IQ4_NL  32 values, 18 bytes: { f16 d; uint8 qs[16] }   x = kvalues[nib] * d (nibbles as Q4_0)
 *   IQ4_XS 256 values, 136 bytes: { f16 d; u16 scales_h; uint8 scales_l[4]; uint8 qs[128] }
 *
 * The K-quants ("super-blocks" of 256) hold 16-value (Q2_K, Q3_K, Q6_K) or 32-value (Q4_K, Q5_K,
 * IQ4_XS) sub-blocks with their own small integer scales; docs/quant-types.md spells out the bit
 * packing. A row of a K-quant tensor is a whole number of super-blocks, so a slice of whole rows
 * (one expert of a 3-D tensor) is contiguous and can be read on its own.
 */
#ifndef POCKETMOE_DTYPE_H
#define POCKETMOE_DTYPE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum pmoe_dtype {
  PMOE_DTYPE_F32 = 0,
  PMOE_DTYPE_F16 = 1,
  PMOE_DTYPE_Q4_0 = 2,
  PMOE_DTYPE_Q4_1 = 3,   /**< ABI 1.1 */
  PMOE_DTYPE_Q5_0 = 6,   /**< ABI 1.1 */
  PMOE_DTYPE_Q5_1 = 7,   /**< ABI 1.1 */
  PMOE_DTYPE_Q8_0 = 8,
  PMOE_DTYPE_Q2_K = 10,  /**< ABI 1.1 */
  PMOE_DTYPE_Q3_K = 11,  /**< ABI 1.1 */
  PMOE_DTYPE_Q4_K = 12,  /**< ABI 1.1 */
  PMOE_DTYPE_Q5_K = 13,  /**< ABI 1.1 */
  PMOE_DTYPE_Q6_K = 14,  /**< ABI 1.1 */
  PMOE_DTYPE_IQ4_NL = 20, /**< ABI 1.1 */
  PMOE_DTYPE_IQ4_XS = 23, /**< ABI 1.1 */
  PMOE_DTYPE_I32 = 26,
  PMOE_DTYPE_BF16 = 30,
  PMOE_DTYPE_INVALID = 0x7fffffff
} pmoe_dtype;

/** Values per block (1 for scalar types); 0 for a type this SDK does not know. */
static inline uint32_t pmoe_dtype_block_elems(uint32_t t) {
  switch (t) {
    case PMOE_DTYPE_F32: case PMOE_DTYPE_F16: case PMOE_DTYPE_BF16: case PMOE_DTYPE_I32: return 1;
    case PMOE_DTYPE_Q4_0: case PMOE_DTYPE_Q4_1: case PMOE_DTYPE_Q5_0: case PMOE_DTYPE_Q5_1:
    case PMOE_DTYPE_Q8_0: case PMOE_DTYPE_IQ4_NL: return 32;
    case PMOE_DTYPE_Q2_K: case PMOE_DTYPE_Q3_K: case PMOE_DTYPE_Q4_K: case PMOE_DTYPE_Q5_K:
    case PMOE_DTYPE_Q6_K: case PMOE_DTYPE_IQ4_XS: return 256;
    default: return 0;
  }
}

/** Bytes per block; 0 for a type this SDK does not know. */
static inline uint32_t pmoe_dtype_block_bytes(uint32_t t) {
  switch (t) {
    case PMOE_DTYPE_F32: case PMOE_DTYPE_I32: return 4;
    case PMOE_DTYPE_F16: case PMOE_DTYPE_BF16: return 2;
    case PMOE_DTYPE_Q4_0: return 18;
    case PMOE_DTYPE_Q4_1: return 20;
    case PMOE_DTYPE_Q5_0: return 22;
    case PMOE_DTYPE_Q5_1: return 24;
    case PMOE_DTYPE_Q8_0: return 34;
    case PMOE_DTYPE_Q2_K: return 84;
    case PMOE_DTYPE_Q3_K: return 110;
    case PMOE_DTYPE_Q4_K: return 144;
    case PMOE_DTYPE_Q5_K: return 176;
    case PMOE_DTYPE_Q6_K: return 210;
    case PMOE_DTYPE_IQ4_NL: return 18;
    case PMOE_DTYPE_IQ4_XS: return 136;
    default: return 0;
  }
}

/** GGML's name ("f32", "q4_0", "q4_K", "iq4_xs", ...) or NULL for a type this SDK does not know. */
static inline const char* pmoe_dtype_name(uint32_t t) {
  switch (t) {
    case PMOE_DTYPE_F32: return "f32";
    case PMOE_DTYPE_F16: return "f16";
    case PMOE_DTYPE_BF16: return "bf16";
    case PMOE_DTYPE_Q4_0: return "q4_0";
    case PMOE_DTYPE_Q8_0: return "q8_0";
    case PMOE_DTYPE_Q4_1: return "q4_1";
    case PMOE_DTYPE_Q5_0: return "q5_0";
    case PMOE_DTYPE_Q5_1: return "q5_1";
    case PMOE_DTYPE_Q2_K: return "q2_K";
    case PMOE_DTYPE_Q3_K: return "q3_K";
    case PMOE_DTYPE_Q4_K: return "q4_K";
    case PMOE_DTYPE_Q5_K: return "q5_K";
    case PMOE_DTYPE_Q6_K: return "q6_K";
    case PMOE_DTYPE_IQ4_NL: return "iq4_nl";
    case PMOE_DTYPE_IQ4_XS: return "iq4_xs";
    case PMOE_DTYPE_I32: return "i32";
    default: return NULL;
  }
}

/** Bytes of one row of `n` values; 0 if the type is unknown or n is not a whole number of blocks. */
static inline uint64_t pmoe_dtype_row_bytes(uint32_t t, uint64_t n) {
  uint32_t be = pmoe_dtype_block_elems(t);
  if (be == 0 || n % be != 0) return 0;
  return (n / be) * pmoe_dtype_block_bytes(t);
}

/* ---- half-precision conversions (the scales of Q8_0/Q4_0 blocks, F16/BF16 tensors) ---------
 * Exact and portable: the float unit does the rounding (round to nearest even, as F16C's
 * conversion instructions and ggml do), so every user of the SDK converts bit-identically. */

static inline uint32_t pmoe_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static inline float pmoe_f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/** IEEE half -> float (subnormals, infinities and NaNs included). */
static inline float pmoe_fp16_to_fp32(uint16_t h) {
  const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
  /* normal numbers: move the exponent into place and rebias by multiplying */
  const float normal = pmoe_f32_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  /* subnormals: build 0.5 + m * 2^-24 with a magic exponent and subtract 0.5 */
  const float subnormal = pmoe_f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  return pmoe_f32_from_bits(sign | (two_w < (1u << 27) ? pmoe_f32_bits(subnormal) : pmoe_f32_bits(normal)));
}

/** float -> IEEE half, round to nearest even; overflow gives infinity, NaN stays NaN. */
static inline uint16_t pmoe_fp32_to_fp16(float f) {
  /* scaling up then down lets the float unit round at the half's precision */
  float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = pmoe_f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u, b, nonsign;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = pmoe_f32_from_bits((bias >> 1) + 0x07800000u) + base;
  b = pmoe_f32_bits(base);
  nonsign = ((b >> 13) & 0x00007C00u) + (b & 0x00000FFFu);
  return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

/** bfloat16 -> float (exact). */
static inline float pmoe_bf16_to_fp32(uint16_t h) { return pmoe_f32_from_bits((uint32_t)h << 16); }

/** float -> bfloat16, round to nearest even; NaN stays a quiet NaN. */
static inline uint16_t pmoe_fp32_to_bf16(float f) {
  const uint32_t u = pmoe_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
  return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

#ifdef __cplusplus
}
#endif
#endif /* POCKETMOE_DTYPE_H */
