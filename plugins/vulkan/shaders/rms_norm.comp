#version 450
// dst = src / sqrt(mean(src^2) + eps) * w, one workgroup per row.
#include "common.glsl"
#define WG 256
layout(local_size_x = WG) in;
layout(push_constant) uniform P {
  uint64_t src, w, dst;
  uint n, src_stride, dst_stride;
  float eps;
} p;
shared float red[WG];

void main() {
  const uint r = gl_WorkGroupID.x, tid = gl_LocalInvocationID.x;
  F32s x = F32s(p.src + uint64_t(r) * uint64_t(p.src_stride) * 4u);
  F32s y = F32s(p.dst + uint64_t(r) * uint64_t(p.dst_stride) * 4u);
  F32s w = F32s(p.w);
  float s = 0.0;
  for (uint i = tid; i < p.n; i += WG) s += x.v[i] * x.v[i];
  red[tid] = s;
  barrier();
  for (uint k = WG / 2; k > 0; k >>= 1) {
    if (tid < k) red[tid] += red[tid + k];
    barrier();
  }
  const float scale = 1.0 / sqrt(red[0] / float(p.n) + p.eps);
  for (uint i = tid; i < p.n; i += WG) y.v[i] = (x.v[i] * scale) * w.v[i];
}
