#pragma once
// f32 rows -> the tensor types a synthetic model can use, bit-exactly like ggml's reference
// converters (round-to-nearest-even halves from <pocketmoe/dtype.h>, quantize_row_q8_0_ref / quantize_row_q4_0_ref), so a
// synthesized file looks like one llama-quantize would have written.
#include <cstdint>

namespace pmoe::synth {

/// Converts n values (a multiple of the type's block size) to `type` at dst.
/// Throws pmoe::Error for a type other than f32/f16/bf16/q8_0/q4_0.
void convert_row(const float* src, uint8_t* dst, uint64_t n, uint32_t type);

}  // namespace pmoe::synth
