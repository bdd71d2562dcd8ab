#version 450
// y{out, T} (+)= W{in, out} · x{in, T} for weights of type WTYPE. Each subgroup computes whole
// output rows for a tile of up to 8 tokens: its threads stride over the row's 32-value chunks,
// dequantize each chunk once and apply it to every token of the tile, and subgroupAdd sums the
// threads. No shared memory and no barrier (a workgroup is just WG / subgroup-size such rows).
// With `tok` set, token t reads x column tok[t] (an expert's routed tokens).
// Built with -DFP16 (the plugin's `fp16` option, for 16-bit and quantized weights only) the
// products are taken in f16 pairs; chunk and row sums stay f32.
// Q4_1/Q5_1 with `sums` set (x rounded as Q8_1: round_act.comp) take the block offset's term as
// ggml does, m * s with s the f16-rounded block sum, instead of m times the sum of x.
#extension GL_KHR_shader_subgroup_arithmetic : require
#ifdef FP16
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif
#include "common.glsl"
#include "dequant.glsl"

#define TILE 8
layout(local_size_x = 64) in;
layout(push_constant) uniform P {
  uint64_t w, x, y, tok, sums;
  uint n_in, n_out, n_tok, w_row_bytes;
  uint x_stride, y_stride;  // floats between columns
  uint mode;                // 0: y = Wx, 1: y += Wx, 2: y = relu(y) * Wx (ReGLU's up after gate)
  uint rows_per_group;      // output rows per workgroup (64 / the device's subgroup size)
} p;

void main() {
  const uint t0 = gl_WorkGroupID.y * TILE;
  const uint nt = min(TILE, p.n_tok - t0);
  const uint lane = gl_SubgroupInvocationID, lanes = gl_SubgroupSize;
  uint64_t xcol[TILE];
  for (uint t = 0; t < TILE; ++t) {
    const uint col = t < nt ? (p.tok != 0 ? uint(I32s(p.tok).v[t0 + t]) : t0 + t) : 0u;
    xcol[t] = p.x + uint64_t(col) * uint64_t(p.x_stride) * 4u;
  }
  const uint chunks = p.n_in / 32u, per_block = QK / 32u, tail = p.n_in - chunks * 32u;
  // rows of this workgroup, one subgroup each (a loop, in case the driver made more or fewer subgroups)
  for (uint r = gl_SubgroupID; r < p.rows_per_group; r += gl_NumSubgroups) {
    const uint o = (gl_WorkGroupID.x + gl_WorkGroupID.z * gl_NumWorkGroups.x) * p.rows_per_group + r;
    if (o >= p.n_out) break;  // uniform in the subgroup
    float acc[TILE];
    for (uint t = 0; t < TILE; ++t) acc[t] = 0.0;
    const uint64_t row = p.w + uint64_t(o) * uint64_t(p.w_row_bytes);
    float v[32];
    for (uint c = lane; c < chunks; c += lanes) {
      dq32(row + uint64_t(c / per_block) * uint64_t(BLOCK_BYTES), c % per_block, v);
      for (uint t = 0; t < nt; ++t) {
        F32s xs = F32s(xcol[t] + uint64_t(c) * 128u);
        float s = 0.0;
#ifdef FP16  // products of f16-rounded values in f16 pairs (the `fp16` option), sums in f32
        for (uint j = 0; j < 32u; j += 2u)
          s += float(dot(f16vec2(float16_t(v[j]), float16_t(v[j + 1u])), f16vec2(float16_t(xs.v[j]), float16_t(xs.v[j + 1u]))));
#else
        for (uint j = 0; j < 32u; ++j) s += v[j] * xs.v[j];
#endif
#if WTYPE == DT_Q4_1 || WTYPE == DT_Q5_1
        if (p.sums != 0) {  // swap m * sum(x) for m * s (x's column t0 + t, block c)
          float sx = 0.0;
          for (uint j = 0; j < 32u; ++j) sx += xs.v[j];
          const float s8 = F32s(p.sums + (uint64_t(t0 + t) * uint64_t(chunks) + c) * 4u).v[0];
          s += rd_f16(row + uint64_t(c) * uint64_t(BLOCK_BYTES) + 2u) * (s8 - sx);
        }
#endif
        acc[t] += s;
      }
    }
    // a last partial chunk (float types only: block types have whole blocks)
    for (uint i = lane; i < tail; i += lanes) {
      const float wv = dq1(row + uint64_t(chunks) * uint64_t(BLOCK_BYTES), i);
      for (uint t = 0; t < nt; ++t) acc[t] += wv * F32s(xcol[t]).v[chunks * 32u + i];
    }
    for (uint t = 0; t < nt; ++t) {
      const float sum = subgroupAdd(acc[t]);
      if (lane == t % lanes) {  // spread the stores over the lanes
        F32s y = F32s(p.y + (uint64_t(t0 + t) * uint64_t(p.y_stride) + o) * 4u);
        if (p.mode == 0u) y.v[0] = sum;
        else if (p.mode == 1u) y.v[0] = y.v[0] + sum;
        else y.v[0] = max(y.v[0], 0.0) * sum;
      }
    }
  }
}
