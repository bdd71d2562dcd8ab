// Dequantization of one weight block, for the weight type WTYPE (a pmoe dtype number, set with
// glslc -DWTYPE=N). Included by common.glsl, which provides rd_u8 / rd_u16 / rd_f16 / rd_bf16.
//
// Defines, for WTYPE:
//   QK           values per block (32 or 256; F32/F16/BF16 use "chunks" of 32 values)
//   BLOCK_BYTES  bytes per block (chunk)
//   void  dq32(uint64_t blk, uint sub, out float v[32])  values sub*32 .. sub*32+31 of the block at blk
//   float dq1(uint64_t blk, uint j)                      value j (0..QK-1) of the block at blk
//
// Results are bit-identical to dequant_block() in tests/unit/quant_reference.hpp (ggml's
// dequantize_row_*): the same float operations in the same order; every expression with more than
// one float operation goes through a `precise` variable so that nothing is fused into an FMA.
// Blocks start at even addresses and every field used here sits at an even offset, so rd_u16 is
// used to fetch two quant bytes at once.
#ifndef PMOE_DEQUANT_GLSL
#define PMOE_DEQUANT_GLSL

// pmoe dtype numbers (sdk/include/pocketmoe/dtype.h; GGML's type ids)
#define DT_F32 0
#define DT_F16 1
#define DT_Q4_0 2
#define DT_Q4_1 3
#define DT_Q5_0 6
#define DT_Q5_1 7
#define DT_Q8_0 8
#define DT_Q2_K 10
#define DT_Q3_K 11
#define DT_Q4_K 12
#define DT_Q5_K 13
#define DT_Q6_K 14
#define DT_IQ4_NL 20
#define DT_IQ4_XS 23
#define DT_BF16 30

#ifndef WTYPE
#error "dequant.glsl: WTYPE (the weights' pmoe dtype) must be defined"
#endif

// ---- small helpers --------------------------------------------------------------------------

// a * b + c, rounded after the multiply and after the add (never an FMA)
float dq_mad(float a, float b, float c) {
  precise float r = a * b + c;
  return r;
}
// a * b - c, rounded after the multiply and after the subtract (never an FMA)
float dq_msub(float a, float b, float c) {
  precise float r = a * b - c;
  return r;
}
// a * b (single rounding; `precise` only to keep the compiler from rewriting it)
float dq_mul(float a, float b) {
  precise float r = a * b;
  return r;
}
// sign-extend the low byte of x
int dq_i8(uint x) { return int(x << 24) >> 24; }
// little-endian 32 bits at an even (possibly not 4-aligned) address: two 16-bit reads
uint dq_u32(uint64_t a) { return rd_u16(a) | (rd_u16(a + uint64_t(2)) << 16); }

// IQ4_NL / IQ4_XS non-linear 4-bit grid (ggml's kvalues_iq4nl)
const int kvalues_iq4nl[16] = int[16](-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);

// =============================================================================================
#if WTYPE == DT_F32
// chunk of 32 floats
#define QK 32
#define BLOCK_BYTES 128

float dq1(uint64_t blk, uint j) { return uintBitsToFloat(dq_u32(blk + uint64_t(4u * j))); }

void dq32(uint64_t blk, uint sub, out float v[32]) {
  for (uint j = 0u; j < 32u; ++j) v[j] = uintBitsToFloat(dq_u32(blk + uint64_t(4u * j)));
}

// =============================================================================================
#elif WTYPE == DT_F16
// chunk of 32 halves
#define QK 32
#define BLOCK_BYTES 64

float dq1(uint64_t blk, uint j) { return rd_f16(blk + uint64_t(2u * j)); }

void dq32(uint64_t blk, uint sub, out float v[32]) {
  for (uint j = 0u; j < 32u; ++j) v[j] = rd_f16(blk + uint64_t(2u * j));
}

// =============================================================================================
#elif WTYPE == DT_BF16
// chunk of 32 bfloat16
#define QK 32
#define BLOCK_BYTES 64

float dq1(uint64_t blk, uint j) { return rd_bf16(blk + uint64_t(2u * j)); }

void dq32(uint64_t blk, uint sub, out float v[32]) {
  for (uint j = 0u; j < 32u; ++j) v[j] = rd_bf16(blk + uint64_t(2u * j));
}

// =============================================================================================
#elif WTYPE == DT_Q8_0
// { f16 d; int8 q[32] }   x = float(q) * d
#define QK 32
#define BLOCK_BYTES 34

float dq1(uint64_t blk, uint j) { return dq_mul(float(dq_i8(rd_u8(blk + uint64_t(2u + j)))), rd_f16(blk)); }

void dq32(uint64_t blk, uint sub, out float v[32]) {
  const float d = rd_f16(blk);
  for (uint j = 0u; j < 16u; ++j) {  // bytes 2j, 2j+1
    const uint w = rd_u16(blk + uint64_t(2u + 2u * j));
    v[2u * j] = dq_mul(float(dq_i8(w)), d);
    v[2u * j + 1u] = dq_mul(float(dq_i8(w >> 8)), d);
  }
}

// =============================================================================================
#elif WTYPE == DT_Q4_0
// { f16 d; uint8 qs[16] }   byte j: value j = low nibble, value j+16 = high nibble; x = float(nib - 8) * d
#define QK 32
#define BLOCK_BYTES 18

float dq1(uint64_t blk, uint j) {
  const uint b = rd_u8(blk + uint64_t(2u + (j & 15u)));
  const uint nib = j < 16u ? (b & 0xFu) : (b >> 4);
  return dq_mul(float(int(nib) - 8), rd_f16(blk));
}

void dq32(uint64_t blk, uint sub, out float v[32]) {
  const float d = rd_f16(blk);
  for (uint j = 0u; j < 8u; ++j) {  // bytes 2j, 2j+1 -> values 2j, 2j+1, 2j+16, 2j+17
    const uint w = rd_u16(blk + uint64_t(2u + 2u * j));
    v[2u * j] = dq_mul(float(int(w & 0xFu) - 8), d);
    v[2u * j + 1u] = dq_mul(float(int((w >> 8) & 0xFu) - 8), d);
    v[2u * j + 16u] = dq_mul(float(int((w >> 4) & 0xFu) - 8), d);
    v[2u * j + 17u] = dq_mul(float(int((w >> 12) & 0xFu) - 8), d);
  }
}

// =============================================================================================
#elif WTYPE == DT_Q4_1
// { f16 d; f16 m; uint8 qs[16] }   nibbles as Q4_0; x = float(nib) * d + m
#define QK 32
#define BLOCK_BYTES 20

float dq1(uint64_t blk, uint j) {
  const uint b = rd_u8(blk + uint64_t(4u + (j & 15u)));
  const uint nib = j < 16u ? (b & 0xFu) : (b >> 4);
  return dq_mad(float(nib), rd_f16(blk), rd_f16(blk + uint64_t(2)));
}

void dq32(uint64_t blk, uint sub, out float v[32]) {
  const float d = rd_f16(blk), m = rd_f16(blk + uint64_t(2));
  for (uint j = 0u; j < 8u; ++j) {  // bytes 2j, 2j+1 -> values 2j, 2j+1, 2j+16, 2j+17
    const uint w = rd_u16(blk + uint64_t(4u + 2u * j));
    v[2u * j] = dq_mad(float(w & 0xFu), d, m);
    v[2u * j + 1u] = dq_mad(float((w >> 8) & 0xFu), d, m);
    v[2u * j + 16u] = dq_mad(float((w >> 4) & 0xFu), d, m);
    v[2u * j + 17u] = dq_mad(float((w >> 12) & 0xFu), d, m);
  }
}

// =============================================================================================
#elif WTYPE == DT_Q5_0 || WTYPE == DT_Q5_1
// Q5_0: { f16 d; uint8 qh[4]; uint8 qs[16] }          x = float(q - 16) * d
// Q5_1: { f16 d; f16 m; uint8 qh[4]; uint8 qs[16] }   x = float(q) * d + m
// q of value j = nibble (as Q4_0) | (bit j of the little-endian u32 qh) << 4
#define QK 32
#if WTYPE == DT_Q5_0
#define BLOCK_BYTES 22
#define DQ_QH_OFF 2u
#else
#define BLOCK_BYTES 24
#define DQ_QH_OFF 4u
#endif

// value of the 5-bit quant q (0..31)
float dq_q5(uint q, float d, float m) {
#if WTYPE == DT_Q5_0
  return dq_mul(float(int(q) - 16), d);
#else
  return dq_mad(float(q), d, m);
#endif
}

float dq1(uint64_t blk, uint j) {
  const uint qh = dq_u32(blk + uint64_t(DQ_QH_OFF));
  const uint b = rd_u8(blk + uint64_t(DQ_QH_OFF + 4u + (j & 15u)));
  const uint nib = j < 16u ? (b & 0xFu) : (b >> 4);
#if WTYPE == DT_Q5_0
  const float m = 0.0;
#else
  const float m = rd_f16(blk + uint64_t(2));
#endif
  return dq_q5(nib | (((qh >> j) & 1u) << 4), rd_f16(blk), m);
}

void dq32(uint64_t blk, uint sub, out float v[32]) {
  const float d = rd_f16(blk);
#if WTYPE == DT_Q5_0
  const float m = 0.0;
#else
  const float m = rd_f16(blk + uint64_t(2));
#endif
  const uint qh = dq_u32(blk + uint64_t(DQ_QH_OFF));
  for (uint j = 0u; j < 8u; ++j) {  // bytes 2j, 2j+1 -> values 2j, 2j+1, 2j+16, 2j+17
    const uint w = rd_u16(blk + uint64_t(DQ_QH_OFF + 4u + 2u * j));
    const uint e = 2u * j;
    v[e] = dq_q5((w & 0xFu) | (((qh >> e) & 1u) << 4), d, m);
    v[e + 1u] = dq_q5(((w >> 8) & 0xFu) | (((qh >> (e + 1u)) & 1u) << 4), d, m);
    v[e + 16u] = dq_q5(((w >> 4) & 0xFu) | (((qh >> (e + 16u)) & 1u) << 4), d, m);
    v[e + 17u] = dq_q5(((w >> 12) & 0xFu) | (((qh >> (e + 17u)) & 1u) << 4), d, m);
  }
}

// =============================================================================================
#elif WTYPE == DT_IQ4_NL
// { f16 d; uint8 qs[16] }   nibbles as Q4_0; x = d * float(kvalues[nib])
#define QK 32
#define BLOCK_BYTES 18

float dq1(uint64_t blk, uint j) {
  const uint b = rd_u8(blk + uint64_t(2u + (j & 15u)));
  const uint nib = j < 16u ? (b & 0xFu) : (b >> 4);
  return dq_mul(rd_f16(blk), float(kvalues_iq4nl[nib]));
}

void dq32(uint64_t blk, uint sub, out float v[32]) {
  const float d = rd_f16(blk);
  for (uint j = 0u; j < 8u; ++j) {  // bytes 2j, 2j+1 -> values 2j, 2j+1, 2j+16, 2j+17
    const uint w = rd_u16(blk + uint64_t(2u + 2u * j));
    v[2u * j] = dq_mul(d, float(kvalues_iq4nl[w & 0xFu]));
    v[2u * j + 1u] = dq_mul(d, float(kvalues_iq4nl[(w >> 8) & 0xFu]));
    v[2u * j + 16u] = dq_mul(d, float(kvalues_iq4nl[(w >> 4) & 0xFu]));
    v[2u * j + 17u] = dq_mul(d, float(kvalues_iq4nl[(w >> 12) & 0xFu]));
  }
}

// =============================================================================================
#elif WTYPE == DT_Q2_K
// { uint8 scales[16]; uint8 qs[64]; f16 d; f16 dmin }
// 32-value sub-block s: 2-bit quants at bit 2*(s%4) of qs[32*(s/4) + i], i = 0..31;
// values i < 16 use scales[2s], i >= 16 scales[2s+1] (low nibble: scale, high nibble: min).
// x = (d * float(sc & 15)) * float(q) - (dmin * float(sc >> 4))
#define QK 256
#define BLOCK_BYTES 84

float dq1(uint64_t blk, uint j) {
  const uint sub = j >> 5, i = j & 31u;
  const float d = rd_f16(blk + uint64_t(80)), mn = rd_f16(blk + uint64_t(82));
  const uint s = rd_u8(blk + uint64_t(2u * sub + (i >> 4)));
  const uint q = (rd_u8(blk + uint64_t(16u + 32u * (sub >> 2) + i)) >> (2u * (sub & 3u))) & 3u;
  const float dl = dq_mul(d, float(s & 0xFu)), ml = dq_mul(mn, float(s >> 4));
  return dq_msub(dl, float(q), ml);
}

void dq32(uint64_t blk, uint sub, out float v[32]) {
  const float d = rd_f16(blk + uint64_t(80)), mn = rd_f16(blk + uint64_t(82));
  const uint shift = 2u * (sub & 3u);
  const uint64_t q = blk + uint64_t(16u + 32u * (sub >> 2));
  const uint s2 = rd_u16(blk + uint64_t(2u * sub));  // scales[2sub], scales[2sub+1]
  for (uint h = 0u; h < 2u; ++h) {  // the two 16-value halves
    const uint s = (s2 >> (8u * h)) & 0xFFu;
    const float dl = dq_mul(d, float(s & 0xFu)), ml = dq_mul(mn, float(s >> 4));
    for (uint l = 0u; l < 8u; ++l) {  // bytes 16h+2l, 16h+2l+1
      const uint w = rd_u16(q + uint64_t(16u * h + 2u * l));
      v[16u * h + 2u * l] = dq_msub(dl, float((w >> shift) & 3u), ml);
      v[16u * h + 2u * l + 1u] = dq_msub(dl, float((w >> (8u + shift)) & 3u), ml);
    }
  }
}

// =============================================================================================
#elif WTYPE == DT_Q3_K
// { uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; f16 d }
// 32-value sub-block s: 2-bit quants at bit 2*(s%4) of qs[32*(s/4) + i], high bit = bit s of
// hmask[i] (clear means -4); values i < 16 use 6-bit scale 2s, i >= 16 scale 2s+1 (minus 32).
// x = (d * float(scale)) * float(q - (hbit ? 0 : 4))
#define QK 256
#define BLOCK_BYTES 110

// 6-bit scale k (0..15) minus 32: low 4 bits from scales[k%8] (nibble k/8), high 2 bits from
// scales[8 + k%4] at bit 2*(k/4) (ggml's aux[] unpacking)
int dq_q3k_scale(uint64_t blk, uint k) {
  const uint lo = (rd_u8(blk + uint64_t(96u + (k & 7u))) >> (4u * (k >> 3))) & 0xFu;
  const uint hi = (rd_u8(blk + uint64_t(104u + (k & 3u))) >> (2u * (k >> 2))) & 3u;
  return int(lo | (hi << 4)) - 32;
}

float dq1(uint64_t blk, uint j) {
  const uint sub = j >> 5, i = j & 31u;
  const float dl = dq_mul(rd_f16(blk + uint64_t(108)), float(dq_q3k_scale(blk, 2u * sub + (i >> 4))));
  const int q = int((rd_u8(blk + uint64_t(32u + 32u * (sub >> 2) + i)) >> (2u * (sub & 3u))) & 3u);
  const int hb = int((rd_u8(blk + uint64_t(i)) >> sub) & 1u);
  return dq_mul(dl, float(q - (hb != 0 ? 0 : 4)));
}

void dq32(uint64_t blk, uint sub, out float v[32]) {
  const float d = rd_f16(blk + uint64_t(108));
  const uint shift = 2u * (sub & 3u);
  const uint64_t q = blk + uint64_t(32u + 32u * (sub >> 2));
  for (uint h = 0u; h < 2u; ++h) {  // the two 16-value halves
    const float dl = dq_mul(d, float(dq_q3k_scale(blk, 2u * sub + h)));
    for (uint l = 0u; l < 8u; ++l) {  // bytes i = 16h+2l, i+1 of qs and hmask
      const uint i = 16u * h + 2u * l;
      const uint w = rd_u16(q + uint64_t(i));
      const uint hm = rd_u16(blk + uint64_t(i));
      const int q0 = int((w >> shift) & 3u) - (((hm >> sub) & 1u) != 0u ? 0 : 4);
      const int q1 = int((w >> (8u + shift)) & 3u) - (((hm >> (8u + sub)) & 1u) != 0u ? 0 : 4);
      v[i] = dq_mul(dl, float(q0));
      v[i + 1u] = dq_mul(dl, float(q1));
    }
  }
}

// =============================================================================================
#elif WTYPE == DT_Q4_K || WTYPE == DT_Q5_K
// Q4_K: { f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128] }
// Q5_K: { f16 d; f16 dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128] }
// 32-value sub-block s: quant i = nibble (s%2) of qs[32*(s/2) + i] (+16 if bit s of qh[i], Q5_K);
// 6-bit scale/min pair s (get_scale_min_k4).  x = (d * float(sc)) * float(q) - (dmin * float(m))
#define QK 256
#if WTYPE == DT_Q4_K
#define BLOCK_BYTES 144
#define DQ_QS_OFF 16u
#else
#define BLOCK_BYTES 176
#define DQ_QS_OFF 48u
#endif

// ggml's get_scale_min_k4 on the 12 scale bytes at blk + 4
void dq_q4k_scale_min(uint64_t blk, uint j, out uint sc, out uint m) {
  const uint64_t s = blk + uint64_t(4);
  if (j < 4u) {
    sc = rd_u8(s + uint64_t(j)) & 63u;
    m = rd_u8(s + uint64_t(j + 4u)) & 63u;
  } else {
    const uint b = rd_u8(s + uint64_t(j + 4u));
    sc = (b & 0xFu) | ((rd_u8(s + uint64_t(j - 4u)) >> 6) << 4);
    m = (b >> 4) | ((rd_u8(s + uint64_t(j)) >> 6) << 4);
  }
}

float dq1(uint64_t blk, uint j) {
  const uint sub = j >> 5, i = j & 31u;
  uint sc, mi;
  dq_q4k_scale_min(blk, sub, sc, mi);
  const float dl = dq_mul(rd_f16(blk), float(sc)), ml = dq_mul(rd_f16(blk + uint64_t(2)), float(mi));
  uint q = (rd_u8(blk + uint64_t(DQ_QS_OFF + 32u * (sub >> 1) + i)) >> (4u * (sub & 1u))) & 0xFu;
#if WTYPE == DT_Q5_K
  q += ((rd_u8(blk + uint64_t(16u + i)) >> sub) & 1u) != 0u ? 16u : 0u;
#endif
  return dq_msub(dl, float(q), ml);
}

void dq32(uint64_t blk, uint sub, out float v[32]) {
  uint sc, mi;
  dq_q4k_scale_min(blk, sub, sc, mi);
  const float dl = dq_mul(rd_f16(blk), float(sc)), ml = dq_mul(rd_f16(blk + uint64_t(2)), float(mi));
  const uint64_t q = blk + uint64_t(DQ_QS_OFF + 32u * (sub >> 1));
  const uint shift = 4u * (sub & 1u);
  for (uint l = 0u; l < 16u; ++l) {  // bytes 2l, 2l+1
    const uint w = rd_u16(q + uint64_t(2u * l));
    uint q0 = (w >> shift) & 0xFu, q1 = (w >> (8u + shift)) & 0xFu;
#if WTYPE == DT_Q5_K
    const uint hb = rd_u16(blk + uint64_t(16u + 2u * l));
    q0 += ((hb >> sub) & 1u) != 0u ? 16u : 0u;
    q1 += ((hb >> (8u + sub)) & 1u) != 0u ? 16u : 0u;
#endif
    v[2u * l] = dq_msub(dl, float(q0), ml);
    v[2u * l + 1u] = dq_msub(dl, float(q1), ml);
  }
}

// =============================================================================================
#elif WTYPE == DT_Q6_K
// { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d }
// 32-value sub-block s = 4n + r (n = s/4 the 128-half, r = s%4): quant i (0..31) =
//   nibble (r/2) of ql[64n + 32*(r%2) + i] | ((qh[32n + i] >> 2r) & 3) << 4, minus 32;
// scale = scales[8n + 2r + i/16].  x = (d * float(scale)) * float(q - 32)
#define QK 256
#define BLOCK_BYTES 210

float dq1(uint64_t blk, uint j) {
  const uint sub = j >> 5, i = j & 31u, n = sub >> 2, r = sub & 3u;
  const float dl = dq_mul(rd_f16(blk + uint64_t(208)), float(dq_i8(rd_u8(blk + uint64_t(192u + 8u * n + 2u * r + (i >> 4))))));
  const uint lo = (rd_u8(blk + uint64_t(64u * n + 32u * (r & 1u) + i)) >> (4u * (r >> 1))) & 0xFu;
  const uint hi = (rd_u8(blk + uint64_t(128u + 32u * n + i)) >> (2u * r)) & 3u;
  return dq_mul(dl, float(int(lo | (hi << 4)) - 32));
}

void dq32(uint64_t blk, uint sub, out float v[32]) {
  const uint n = sub >> 2, r = sub & 3u;
  const float d = rd_f16(blk + uint64_t(208));
  const uint s2 = rd_u16(blk + uint64_t(192u + 8u * n + 2u * r));  // the two int8 scales
  const float dl0 = dq_mul(d, float(dq_i8(s2))), dl1 = dq_mul(d, float(dq_i8(s2 >> 8)));
  const uint64_t ql = blk + uint64_t(64u * n + 32u * (r & 1u));
  const uint64_t qh = blk + uint64_t(128u + 32u * n);
  const uint lsh = 4u * (r >> 1), hsh = 2u * r;
  for (uint l = 0u; l < 16u; ++l) {  // bytes 2l, 2l+1 of ql and qh
    const uint wl = rd_u16(ql + uint64_t(2u * l)), wh = rd_u16(qh + uint64_t(2u * l));
    const int q0 = int(((wl >> lsh) & 0xFu) | (((wh >> hsh) & 3u) << 4)) - 32;
    const int q1 = int(((wl >> (8u + lsh)) & 0xFu) | (((wh >> (8u + hsh)) & 3u) << 4)) - 32;
    const float dl = l < 8u ? dl0 : dl1;
    v[2u * l] = dq_mul(dl, float(q0));
    v[2u * l + 1u] = dq_mul(dl, float(q1));
  }
}

// =============================================================================================
#elif WTYPE == DT_IQ4_XS
// { f16 d; u16 scales_h; uint8 scales_l[4]; uint8 qs[128] }
// 32-value sub-block s: 6-bit scale ls = nibble (s%2) of scales_l[s/2] | ((scales_h >> 2s) & 3) << 4;
// qs[16s + j]: value j = low nibble, value j+16 = high nibble.
// x = (d * float(ls - 32)) * float(kvalues[nib])
#define QK 256
#define BLOCK_BYTES 136

float dq_iq4xs_dl(uint64_t blk, uint sub) {
  const uint sh = rd_u16(blk + uint64_t(2));
  const uint ls = ((rd_u8(blk + uint64_t(4u + (sub >> 1))) >> (4u * (sub & 1u))) & 0xFu) | (((sh >> (2u * sub)) & 3u) << 4);
  return dq_mul(rd_f16(blk), float(int(ls) - 32));
}

float dq1(uint64_t blk, uint j) {
  const uint sub = j >> 5, i = j & 31u;
  const uint b = rd_u8(blk + uint64_t(8u + 16u * sub + (i & 15u)));
  const uint nib = i < 16u ? (b & 0xFu) : (b >> 4);
  return dq_mul(dq_iq4xs_dl(blk, sub), float(kvalues_iq4nl[nib]));
}

void dq32(uint64_t blk, uint sub, out float v[32]) {
  const float dl = dq_iq4xs_dl(blk, sub);
  const uint64_t qs = blk + uint64_t(8u + 16u * sub);
  for (uint j = 0u; j < 8u; ++j) {  // bytes 2j, 2j+1 -> values 2j, 2j+1, 2j+16, 2j+17
    const uint w = rd_u16(qs + uint64_t(2u * j));
    v[2u * j] = dq_mul(dl, float(kvalues_iq4nl[w & 0xFu]));
    v[2u * j + 1u] = dq_mul(dl, float(kvalues_iq4nl[(w >> 8) & 0xFu]));
    v[2u * j + 16u] = dq_mul(dl, float(kvalues_iq4nl[(w >> 4) & 0xFu]));
    v[2u * j + 17u] = dq_mul(dl, float(kvalues_iq4nl[(w >> 12) & 0xFu]));
  }
}

// =============================================================================================
#else
#error "dequant.glsl: unsupported WTYPE"
#endif

#endif  // PMOE_DEQUANT_GLSL
