#version 450
// Causal (optionally windowed) attention with GQA, one workgroup per (head, query): keys in
// blocks of WG with a running max and sum (online softmax), so memory does not grow with context.
#include "common.glsl"
#define WG 128
#define MAX_HEAD_DIM 256
layout(local_size_x = WG) in;
layout(push_constant) uniform P {
  uint64_t q, k, v, pos, dst;
  uint n_head, n_head_kv, head_dim, window, n_kv;
  uint q_stride, kv_stride, dst_stride;  // floats between tokens
  float scale;
} p;
shared float qs[MAX_HEAD_DIM];
shared float sc[WG];
shared float red[WG];

float reduce_max(float x) {
  const uint tid = gl_LocalInvocationID.x;
  red[tid] = x;
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] = max(red[tid], red[tid + s]);
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}
float reduce_sum(float x) {
  const uint tid = gl_LocalInvocationID.x;
  red[tid] = x;
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}

void main() {
  const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
  const uint D = p.head_dim;
  const uint hk = h / (p.n_head / p.n_head_kv);
  const int qpos = I32s(p.pos).v[t];
  const uint last = uint(min(qpos, int(p.n_kv) - 1));
  const uint first = p.window > 0u ? uint(max(qpos - int(p.window) + 1, 0)) : 0u;
  F32s q = F32s(p.q + (uint64_t(t) * p.q_stride + uint64_t(h) * D) * 4u);
  for (uint d = tid; d < D; d += WG) qs[d] = q.v[d];
  barrier();
  float m = -1.0 / 0.0, l = 0.0;
  float o[MAX_HEAD_DIM / WG];
  for (uint i = 0; i < MAX_HEAD_DIM / WG; ++i) o[i] = 0.0;
  for (uint j0 = first; j0 <= last; j0 += WG) {
    const uint j = j0 + tid;
    float s = -1.0 / 0.0;
    if (j <= last) {
      F32s kr = F32s(p.k + (uint64_t(j) * p.kv_stride + uint64_t(hk) * D) * 4u);
      float dot = 0.0;
      for (uint d = 0; d < D; ++d) dot += qs[d] * kr.v[d];
      s = dot * p.scale;
    }
    const float m_new = max(m, reduce_max(s));
    const float pj = j <= last ? exp(s - m_new) : 0.0;
    const float alpha = exp(m - m_new);  // 0 on the first block (m = -inf)
    sc[tid] = pj;
    l = l * alpha + reduce_sum(pj);  // reduce_sum's barriers also publish sc
    const uint cnt = min(WG, last + 1u - j0);
    for (uint i = 0; i < MAX_HEAD_DIM / WG; ++i) {
      const uint d = tid + i * WG;
      if (d >= D) break;
      float acc = o[i] * alpha;
      for (uint jj = 0; jj < cnt; ++jj)
        acc += sc[jj] * F32s(p.v + (uint64_t(j0 + jj) * p.kv_stride + uint64_t(hk) * D) * 4u).v[d];
      o[i] = acc;
    }
    m = m_new;
    barrier();  // sc is rewritten by the next block
  }
  F32s out_ = F32s(p.dst + (uint64_t(t) * p.dst_stride + uint64_t(h) * D) * 4u);
  for (uint i = 0; i < MAX_HEAD_DIM / WG; ++i) {
    const uint d = tid + i * WG;
    if (d < D) out_.v[d] = o[i] / l;
  }
}
