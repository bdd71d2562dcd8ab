// Vector kernels of the CPU backend: dot products of a weight row of any supported type with an
// activation row, row dequantization, and Q8_0 quantization of activations.
//
// Quantized weights (Q8_0, Q4_0) are multiplied with activations quantized to Q8_0 first, as
// ggml's CPU backend does: the integer dot is the fast path and it reproduces llama.cpp's numbers.
// Each kernel has a portable scalar version, an AVX2/FMA/F16C one and, for the block types, an
// AVX-512 VNNI one (Q4_0: VNNI + VBMI), picked at run time from what the CPU reports. A kernel is
// chosen per weight type for the whole process, so how rows are batched never changes a bit.
#pragma once

#include <pocketmoe/dtype.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

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

/// Four Q8_0 activation blocks arranged for the AVX-512 VBMI Q4_0 kernel, which reads a Q4_0 row
/// in its GGUF layout four blocks at a time: the low nibbles of 4 blocks meet `lo`, the high ones
/// `hi`, and the -8 offset of Q4_0 is pre-summed into `corr`, so a group costs two vpdpbusd.
struct GroupQ8x4 {
  int8_t lo[64];     // elements 0..15 of each of the 4 blocks
  int8_t hi[64];     // elements 16..31 of each block
  int32_t corr[16];  // -8 * (sum of the block's values) in the block's first lane, 0 elsewhere
  float d[16];       // each block's scale (as rounded to f16), repeated in its 4 lanes
};
static_assert(sizeof(GroupQ8x4) == 256);

/// Quantize `n` floats (n % 32 == 0) to Q8_0 blocks: d = amax/127 (stored f16), q = round(x*127/amax).
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n);

/// Bytes of one activation row of `n` values prepared for `weight_type`'s dot kernel; 0 when the
/// kernel reads the floats as they are (F32, F16 weights). As in ggml, block types get Q8_0
/// values (in the layout the chosen kernel reads) and BF16 weights bf16 activations, which is also
/// what oneDNN's bf16 matmul takes, so batched and one-row products see the same inputs.
uint64_t prepared_row_bytes(uint32_t weight_type, int64_t n);

/// Convert `n` floats into prepared_row_bytes(weight_type, n) bytes at `dst`.
void prepare_row(uint32_t weight_type, const float* x, uint8_t* dst, int64_t n);

/// Dequantize one row of `n` values of `type` to floats.
void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n);

/// Dot product of a weight row (`type`, n values) with an activation row prepared for that type
/// (prepare_row, or plain floats where prepared_row_bytes is 0).
using DotFn = float (*)(const void* w, const void* x, int64_t n);
DotFn dot_kernel(uint32_t weight_type);

/// Kernel sets, each needing the CPU features of the one before and more.
enum class Isa { scalar, avx2, avx512_vnni, avx512_vbmi };
const char* isa_name(Isa isa);
std::optional<Isa> parse_isa(std::string_view name);

/// The kernel set in use: the best the CPU runs, capped by $PMOE_CPU_MAX_ISA when set (tests and
/// A/B runs use the cap to cover every set on one machine). Fixed for the life of the process.
Isa kernel_isa();

}  // namespace pmoe::cpu
