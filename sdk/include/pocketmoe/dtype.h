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
 */
#ifndef POCKETMOE_DTYPE_H
#define POCKETMOE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum pmoe_dtype {
  PMOE_DTYPE_F32 = 0,
  PMOE_DTYPE_F16 = 1,
  PMOE_DTYPE_Q4_0 = 2,
  PMOE_DTYPE_Q8_0 = 8,
  PMOE_DTYPE_I32 = 26,
  PMOE_DTYPE_BF16 = 30,
  PMOE_DTYPE_INVALID = 0x7fffffff
} pmoe_dtype;

/** Values per block (1 for scalar types); 0 for a type this SDK does not know. */
static inline uint32_t pmoe_dtype_block_elems(uint32_t t) {
  switch (t) {
    case PMOE_DTYPE_F32: case PMOE_DTYPE_F16: case PMOE_DTYPE_BF16: case PMOE_DTYPE_I32: return 1;
    case PMOE_DTYPE_Q4_0: case PMOE_DTYPE_Q8_0: return 32;
    default: return 0;
  }
}

/** Bytes per block; 0 for a type this SDK does not know. */
static inline uint32_t pmoe_dtype_block_bytes(uint32_t t) {
  switch (t) {
    case PMOE_DTYPE_F32: case PMOE_DTYPE_I32: return 4;
    case PMOE_DTYPE_F16: case PMOE_DTYPE_BF16: return 2;
    case PMOE_DTYPE_Q4_0: return 18;
    case PMOE_DTYPE_Q8_0: return 34;
    default: return 0;
  }
}

/** Short name ("f32", "q4_0", ...) or NULL for an unknown type. */
static inline const char* pmoe_dtype_name(uint32_t t) {
  switch (t) {
    case PMOE_DTYPE_F32: return "f32";
    case PMOE_DTYPE_F16: return "f16";
    case PMOE_DTYPE_BF16: return "bf16";
    case PMOE_DTYPE_Q4_0: return "q4_0";
    case PMOE_DTYPE_Q8_0: return "q8_0";
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

#ifdef __cplusplus
}
#endif
#endif /* POCKETMOE_DTYPE_H */
