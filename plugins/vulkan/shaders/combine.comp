#version 450
// dst[:, t] += sum_{j < k} w[j, t] * src[:, idx[j, t]]: the sum formed first, j ascending.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(push_constant) uniform P {
  uint64_t src, idx, w, dst;
  uint n, k, n_tok, src_stride, dst_stride, idx_stride, w_stride;
} p;

void main() {
  const uint d = gl_GlobalInvocationID.x, t = gl_GlobalInvocationID.y;
  if (d >= p.n || t >= p.n_tok) return;
  precise float s = 0.0;
  for (uint j = 0; j < p.k; ++j) {
    const uint r = uint(I32s(p.idx).v[t * p.idx_stride + j]);
    const float wj = F32s(p.w).v[t * p.w_stride + j];
    precise float term = wj * F32s(p.src).v[r * p.src_stride + d];
    s = s + term;
  }
  F32s dst = F32s(p.dst);
  precise float y = dst.v[t * p.dst_stride + d] + s;
  dst.v[t * p.dst_stride + d] = y;
}
