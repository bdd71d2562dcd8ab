#version 450
// dst = a + b (mode 0) or dst = a (mode 1, copy), over {ne0, ne1} with row strides in floats.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(push_constant) uniform P {
  uint64_t a, b, dst;
  uint ne0, ne1, a_stride, b_stride, dst_stride, mode;
} p;

void main() {
  const uint i = gl_GlobalInvocationID.x, r = gl_GlobalInvocationID.y;
  if (i >= p.ne0 || r >= p.ne1) return;
  const float a = F32s(p.a).v[r * p.a_stride + i];
  F32s(p.dst).v[r * p.dst_stride + i] = p.mode == 0u ? a + F32s(p.b).v[r * p.b_stride + i] : a;
}
