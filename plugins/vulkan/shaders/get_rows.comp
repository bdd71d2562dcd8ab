#version 450
// dst{n, r} = table[ids[r]] as f32, for a table of type WTYPE. One invocation per 32-value chunk.
#include "common.glsl"
#include "dequant.glsl"

layout(local_size_x = 64) in;
layout(push_constant) uniform P {
  uint64_t table, ids, dst;
  uint n, row_bytes, dst_stride, n_rows;
} p;

void main() {
  const uint c = gl_GlobalInvocationID.x, r = gl_GlobalInvocationID.y;
  if (r >= p.n_rows || c * 32u >= p.n) return;
  const uint64_t row = p.table + uint64_t(I32s(p.ids).v[r]) * uint64_t(p.row_bytes);
  const uint per_block = QK / 32u;
  const uint64_t blk = row + uint64_t(c / per_block) * uint64_t(BLOCK_BYTES);
  F32s d = F32s(p.dst + (uint64_t(r) * uint64_t(p.dst_stride) + uint64_t(c) * 32u) * 4u);
  if (c * 32u + 32u <= p.n) {
    float v[32];
    dq32(blk, c % per_block, v);
    for (uint j = 0; j < 32u; ++j) d.v[j] = v[j];
  } else {
    for (uint j = 0; c * 32u + j < p.n; ++j) d.v[j] = dq1(blk, j);
  }
}
