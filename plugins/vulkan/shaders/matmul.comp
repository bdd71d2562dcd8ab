#version 450
// y{out, T} (+)= W{in, out} · x{in, T} for weights of type WTYPE. One workgroup per output row
// and tile of up to 8 tokens: threads stride over 32-value chunks of the row, dequantize each
// chunk once and apply it to every token of the tile; a shared-memory tree sums the threads.
// With `tok` set, token t reads x column tok[t] (an expert's routed tokens).
#include "common.glsl"
#include "dequant.glsl"

#define TILE 8
#define WG 64
layout(local_size_x = WG) in;
layout(push_constant) uniform P {
  uint64_t w, x, y, tok;
  uint n_in, n_out, n_tok, w_row_bytes;
  uint x_stride, y_stride;  // floats between columns
  uint mode;                // 0: y = Wx, 1: y += Wx, 2: y = relu(y) * Wx (ReGLU's up after gate)
  uint rows_per_z;          // output rows per z slice of the grid (gridX limits)
} p;

shared float red[TILE][WG];

void main() {
  const uint o = gl_WorkGroupID.x + gl_WorkGroupID.z * p.rows_per_z;
  if (o >= p.n_out) return;  // whole workgroup: no barrier is skipped by part of it
  const uint t0 = gl_WorkGroupID.y * TILE;
  const uint nt = min(TILE, p.n_tok - t0);
  const uint tid = gl_LocalInvocationID.x;
  uint64_t xcol[TILE];
  for (uint t = 0; t < TILE; ++t) {
    const uint col = t < nt ? (p.tok != 0 ? uint(I32s(p.tok).v[t0 + t]) : t0 + t) : 0u;
    xcol[t] = p.x + uint64_t(col) * uint64_t(p.x_stride) * 4u;
  }
  float acc[TILE];
  for (uint t = 0; t < TILE; ++t) acc[t] = 0.0;
  const uint64_t row = p.w + uint64_t(o) * uint64_t(p.w_row_bytes);
  const uint chunks = p.n_in / 32u, per_block = QK / 32u;
  float v[32];
  for (uint c = tid; c < chunks; c += WG) {
    dq32(row + uint64_t(c / per_block) * uint64_t(BLOCK_BYTES), c % per_block, v);
    for (uint t = 0; t < nt; ++t) {
      F32s xs = F32s(xcol[t] + uint64_t(c) * 128u);
      float s = 0.0;
      for (uint j = 0; j < 32u; ++j) s += v[j] * xs.v[j];
      acc[t] += s;
    }
  }
  // a last partial chunk (float types only: block types have whole blocks)
  const uint tail = p.n_in - chunks * 32u;
  if (tid < tail) {
    const float wv = dq1(row + uint64_t(chunks) * uint64_t(BLOCK_BYTES), tid);
    for (uint t = 0; t < nt; ++t) acc[t] += wv * F32s(xcol[t]).v[chunks * 32u + tid];
  }
  for (uint t = 0; t < TILE; ++t) red[t][tid] = acc[t];
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (tid < s)
      for (uint t = 0; t < TILE; ++t) red[t][tid] += red[t][tid + s];
    barrier();
  }
  if (tid < nt) {
    F32s y = F32s(p.y + (uint64_t(t0 + tid) * uint64_t(p.y_stride) + o) * 4u);
    const float r = red[tid][0];
    if (p.mode == 0u) y.v[0] = r;
    else if (p.mode == 1u) y.v[0] = y.v[0] + r;
    else y.v[0] = max(y.v[0], 0.0) * r;
  }
}
