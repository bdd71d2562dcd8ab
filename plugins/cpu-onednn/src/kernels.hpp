// Vector kernels of the CPU backend: dot products of a weight row of any supported type with an
// activation row, row dequantization, and Q8_0 quantization of activations.
//
// Quantized weights (Q8_0, Q4_0) are multiplied with activations quantized to Q8_0 first, as
// ggml's CPU backend does: the integer dot is the fast path and it reproduces llama.cpp's numbers.
// Each kernel has a portable scalar version, an AVX2/FMA/F16C one and, for the block types, an
// AVX-512 VNNI one, picked at run time from what the CPU reports.
#pragma once

#include <pocketmoe/dtype.h>

#include <cstddef>
#include <cstdint>

namespace pmoe::cpu {

struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[32];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];  // byte j: element j (low nibble), element j + 16 (high nibble)
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18);

/// The activation type a weight type is multiplied with: Q8_0 for block types, F32 otherwise.
inline uint32_t activation_type_for(uint32_t weight_type) {
  return (weight_type == PMOE_DTYPE_Q8_0 || weight_type == PMOE_DTYPE_Q4_0) ? PMOE_DTYPE_Q8_0
                                                                           : PMOE_DTYPE_F32;
}

/// Quantize `n` floats (n % 32 == 0) to Q8_0 blocks: d = amax/127 (stored f16), q = round(x*127/amax).
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n);

/// Dequantize one row of `n` values of `type` to floats.
void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n);

/// Dot product of a weight row (`type`, n values) with an activation row already converted to
/// activation_type_for(type) (Q8_0 blocks or floats).
using DotFn = float (*)(const void* w, const void* x, int64_t n);
DotFn dot_kernel(uint32_t weight_type);

/// Which vector kernels the CPU allows (picked at run time; the scalar ones always work).
bool using_avx2();
bool using_avx512_vnni();

}  // namespace pmoe::cpu
