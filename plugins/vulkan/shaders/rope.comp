#version 450
// NEOX rotary embedding in place on {head_dim, heads, t}: dims i and i + n_rot/2 rotate by
// pos * theta_scale^i, the angle built like ggml (float32, one multiplication per step).
#include "common.glsl"
layout(local_size_x = 64) in;
layout(push_constant) uniform P {
  uint64_t x, pos;
  uint n_rot, heads, n_tok, head_stride, tok_stride;  // strides in floats
  float theta_scale;
} p;

void main() {
  const uint i = gl_GlobalInvocationID.x, h = gl_GlobalInvocationID.y, t = gl_GlobalInvocationID.z;
  const uint half_rot = p.n_rot / 2u;
  if (i >= half_rot || h >= p.heads || t >= p.n_tok) return;
  precise float theta = float(I32s(p.pos).v[t]);
  for (uint k = 0; k < i; ++k) theta = theta * p.theta_scale;
  // reduce to [-pi, pi] first (Cody-Waite, 2*pi = 6.28125 + 0.0019353...): GPU sin/cos are only
  // accurate near zero, and positions reach thousands of radians
  const float k = round(theta * 0.15915494309189535);
  precise float r = (theta - k * 6.28125) - k * 0.0019353071795864769;
  const float c = cos(r), s = sin(r);
  F32s v = F32s(p.x + (uint64_t(t) * p.tok_stride + uint64_t(h) * p.head_stride) * 4u);
  const float x0 = v.v[i], x1 = v.v[i + half_rot];
  precise float y0 = x0 * c - x1 * s;
  precise float y1 = x0 * s + x1 * c;
  v.v[i] = y0;
  v.v[i + half_rot] = y1;
}
