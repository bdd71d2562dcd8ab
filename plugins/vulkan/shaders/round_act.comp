#version 450
// y{n, T} = x{n, T} rounded as ggml rounds a quantized matmul's activations before its integer
// dot (Q8_0/Q8_1 blocks of 32, Q8_K blocks of 256, or bf16), written back as floats. The matmul
// over dequantized weights then multiplies the same values llama.cpp multiplies, which matters:
// random-weight MoE models are chaotic, and unrounded activations flip experts (docs/vulkan.md).
// Column t of y is x's column tok[t] when `tok` is set (an expert's routed tokens), else t.
// Q8_1 also writes each block's s = f16(d * sum q) after y's T columns, for the weights' offset
// term (m * s in ggml's Q4_1/Q5_1 dot, which matmul.comp reproduces).
#include "common.glsl"

layout(local_size_x = 64) in;
layout(push_constant) uniform P {
  uint64_t x, y, tok;
  uint n, x_stride;  // values per column; floats between x's columns (y's are n apart)
  uint mode;         // 1: Q8_0, 2: Q8_K, 3: bf16, 4: Q8_1
} p;

// f rounded to the nearest f16 value (half to even), by exact power-of-two scaling: no reliance
// on the driver's f32 -> f16 conversion mode. Scales here are far below f16's overflow.
float round_f16(float f) {
  const float a = abs(f);
  const int e = max(int((floatBitsToUint(a) >> 23) & 0xFFu) - 127, -14);  // f16 subnormals share 2^-24
  const float quantum = exp2(float(e - 10));
  return sign(f) * roundEven(a / quantum) * quantum;
}

// where Q8_1's s of column t's block starting at value b0 goes
uint64_t sums_address(uint t, uint b0) {
  return p.y + (uint64_t(gl_NumWorkGroups.y) * uint64_t(p.n) + uint64_t(t) * uint64_t(p.n / 32u) + b0 / 32u) * 4u;
}

void main() {
  const uint t = gl_WorkGroupID.y;
  const uint bs = p.mode == 2u ? 256u : p.mode == 3u ? 1u : 32u;
  const uint b0 = gl_GlobalInvocationID.x * bs;
  if (b0 >= p.n) return;
  const uint col = p.tok != 0 ? uint(I32s(p.tok).v[t]) : t;
  F32s xs = F32s(p.x + (uint64_t(col) * uint64_t(p.x_stride) + b0) * 4u);
  F32s ys = F32s(p.y + (uint64_t(t) * uint64_t(p.n) + b0) * 4u);
  if (p.mode == 3u) {  // bf16, round half to even
    const uint u = floatBitsToUint(xs.v[0]);
    ys.v[0] = uintBitsToFloat(((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16) << 16);
    return;
  }
  float amax = 0.0, vmax = 0.0;  // largest magnitude, and the first value that has it
  for (uint j = 0; j < bs; ++j) {
    const float v = xs.v[j];
    if (abs(v) > amax) amax = abs(v), vmax = v;
  }
  if (amax == 0.0) {
    for (uint j = 0; j < bs; ++j) ys.v[j] = 0.0;
    if (p.mode == 4u) F32s(sums_address(t, b0)).v[0] = 0.0;
    return;
  }
  if (p.mode != 2u) {  // q = round(x * 127/amax), d = f16(amax/127)
    const float id = 127.0 / amax, dx = amax / 127.0, d = round_f16(dx);
    float sum = 0.0;  // exact: at most 32 * 127
    for (uint j = 0; j < bs; ++j) {
      precise float q = roundEven(xs.v[j] * id);
      ys.v[j] = d * q;
      sum += q;
    }
    if (p.mode == 4u) F32s(sums_address(t, b0)).v[0] = round_f16(dx * sum);
  } else {  // q = min(127, round(x * -127/max)), d = 1/iscale
    const float iscale = -127.0 / vmax, d = 1.0 / iscale;
    for (uint j = 0; j < bs; ++j) {
      precise float q = min(127.0, roundEven(iscale * xs.v[j]));
      ys.v[j] = d * q;
    }
  }
}
