// Test-side references for the GGUF block types, written from GGML's reference code
// (ggml-quants.c: dequantize_row_*, quantize_row_q8_*_ref), independently of the kernels they check:
// random blocks, their dequantized values, and the rounding ggml applies to activations.
#pragma once

#include <pocketmoe/dtype.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace pmoe::testref {

inline const int8_t kIQ4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

inline float h(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return pmoe_fp16_to_fp32(v);
}

inline void q4k_scale_min(int j, const uint8_t* q, int& d, int& m) {  // get_scale_min_k4
  if (j < 4) {
    d = q[j] & 63, m = q[j + 4] & 63;
  } else {
    d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

/// One block of `type` at `b` as floats (32 or 256 values), the way ggml's dequantize_row_* does.
inline void dequant_block(uint32_t type, const uint8_t* b, float* y) {
  switch (type) {
    case PMOE_DTYPE_Q8_0:
      for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * h(b);
      return;
    case PMOE_DTYPE_Q4_0:
    case PMOE_DTYPE_IQ4_NL:
      for (int j = 0; j < 16; ++j) {
        const int lo = b[2 + j] & 0xF, hi = b[2 + j] >> 4;
        y[j] = type == PMOE_DTYPE_Q4_0 ? float(lo - 8) * h(b) : h(b) * float(kIQ4[lo]);
        y[j + 16] = type == PMOE_DTYPE_Q4_0 ? float(hi - 8) * h(b) : h(b) * float(kIQ4[hi]);
      }
      return;
    case PMOE_DTYPE_Q4_1:
      for (int j = 0; j < 16; ++j) {
        y[j] = float(b[4 + j] & 0xF) * h(b) + h(b + 2);
        y[j + 16] = float(b[4 + j] >> 4) * h(b) + h(b + 2);
      }
      return;
    case PMOE_DTYPE_Q5_0:
    case PMOE_DTYPE_Q5_1: {
      const bool q51 = type == PMOE_DTYPE_Q5_1;
      uint32_t qh;
      std::memcpy(&qh, b + (q51 ? 4 : 2), 4);
      const uint8_t* qs = b + (q51 ? 8 : 6);
      for (int j = 0; j < 16; ++j) {
        const int x0 = (qs[j] & 0xF) | (((qh >> j) << 4) & 0x10);
        const int x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
        y[j] = q51 ? float(x0) * h(b) + h(b + 2) : float(x0 - 16) * h(b);
        y[j + 16] = q51 ? float(x1) * h(b) + h(b + 2) : float(x1 - 16) * h(b);
      }
      return;
    }
    case PMOE_DTYPE_Q2_K: {
      const float d = h(b + 80), mn = h(b + 82);
      const uint8_t *sc = b, *q = b + 16;
      int is = 0;
      for (int n = 0; n < 256; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2)
          for (int half = 0; half < 2; ++half) {
            const uint8_t s = sc[is++];
            const float dl = d * float(s & 0xF), ml = mn * float(s >> 4);
            for (int l = 0; l < 16; ++l) *y++ = dl * float((q[l + 16 * half] >> shift) & 3) - ml;
          }
      return;
    }
    case PMOE_DTYPE_Q3_K: {
      const uint8_t *hm = b, *q = b + 32, *s = b + 96;
      uint32_t aux[4];  // ggml's unpacking of the 16 6-bit scales
      std::memcpy(aux, s, 12);
      const uint32_t tmp = aux[2], k1 = 0x03030303, k2 = 0x0f0f0f0f;
      aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
      aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
      aux[0] = (aux[0] & k2) | (((tmp >> 0) & k1) << 4);
      aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
      int8_t sc[16];
      std::memcpy(sc, aux, 16);
      for (auto& v : sc) v = int8_t(v - 32);
      const float d = h(b + 108);
      int is = 0;
      uint8_t m = 1;
      for (int n = 0; n < 256; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2, m <<= 1)
          for (int half = 0; half < 2; ++half) {
            const float dl = d * float(sc[is++]);
            for (int l = 0; l < 16; ++l) {
              const int i = l + 16 * half;
              *y++ = dl * float(((q[i] >> shift) & 3) - ((hm[i] & m) ? 0 : 4));
            }
          }
      return;
    }
    case PMOE_DTYPE_Q4_K:
    case PMOE_DTYPE_Q5_K: {
      const bool q5 = type == PMOE_DTYPE_Q5_K;
      const float d = h(b), mn = h(b + 2);
      const uint8_t *sc = b + 4, *qh = b + 16, *q = b + (q5 ? 48 : 16);
      for (int j = 0, is = 0; j < 256; j += 64, q += 32, is += 2) {
        int s1, m1, s2, m2;
        q4k_scale_min(is, sc, s1, m1);
        q4k_scale_min(is + 1, sc, s2, m2);
        const float d1 = d * float(s1), mm1 = mn * float(m1), d2 = d * float(s2), mm2 = mn * float(m2);
        for (int l = 0; l < 32; ++l) *y++ = d1 * float((q[l] & 0xF) + (q5 && (qh[l] >> is) & 1 ? 16 : 0)) - mm1;
        for (int l = 0; l < 32; ++l) *y++ = d2 * float((q[l] >> 4) + (q5 && (qh[l] >> (is + 1)) & 1 ? 16 : 0)) - mm2;
      }
      return;
    }
    case PMOE_DTYPE_Q6_K: {
      const float d = h(b + 208);
      const uint8_t *ql = b, *qh = b + 128;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
      for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8)
        for (int l = 0; l < 32; ++l) {
          const int is = l / 16;
          y[l] = d * float(sc[is]) * float(int8_t((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
          y[l + 32] = d * float(sc[is + 2]) * float(int8_t((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
          y[l + 64] = d * float(sc[is + 4]) * float(int8_t((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
          y[l + 96] = d * float(sc[is + 6]) * float(int8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
      return;
    }
    case PMOE_DTYPE_IQ4_XS: {
      const float d = h(b);
      uint16_t sh;
      std::memcpy(&sh, b + 2, 2);
      const uint8_t *sl = b + 4, *qs = b + 8;
      for (int ib = 0; ib < 8; ++ib, y += 32, qs += 16) {
        const int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4);
        const float dl = d * float(ls - 32);
        for (int j = 0; j < 16; ++j) y[j] = dl * float(kIQ4[qs[j] & 0xF]), y[j + 16] = dl * float(kIQ4[qs[j] >> 4]);
      }
      return;
    }
  }
}

/// Random bytes for `n` blocks of `type`, with the f16 scale fields set to sane positive values
/// (and Q4_1/Q5_1's m to either sign), so every other bit pattern gets exercised.
inline std::vector<uint8_t> random_blocks(std::mt19937& rng, uint32_t type, size_t n) {
  const size_t bb = pmoe_dtype_block_bytes(type);
  std::vector<uint8_t> v(bb * n);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> sc(0.001f, 0.02f), sgn(-1.f, 1.f);
  for (auto& x : v) x = uint8_t(byte(rng));
  auto put = [&](uint8_t* p, float f) {
    const uint16_t hv = pmoe_fp32_to_fp16(f);
    std::memcpy(p, &hv, 2);
  };
  for (size_t i = 0; i < n; ++i) {
    uint8_t* b = v.data() + i * bb;
    switch (type) {
      case PMOE_DTYPE_Q2_K: put(b + 80, sc(rng) / 8), put(b + 82, sc(rng) / 8); break;
      case PMOE_DTYPE_Q3_K: put(b + 108, sc(rng) / 8); break;
      case PMOE_DTYPE_Q6_K: put(b + 208, sc(rng) / 16); break;
      case PMOE_DTYPE_Q4_K: case PMOE_DTYPE_Q5_K: put(b, sc(rng) / 16), put(b + 2, sc(rng) / 16); break;
      case PMOE_DTYPE_IQ4_XS: put(b, sc(rng) / 16); break;
      case PMOE_DTYPE_Q4_1: case PMOE_DTYPE_Q5_1: put(b, sc(rng)), put(b + 2, sgn(rng) * 0.1f); break;
      case PMOE_DTYPE_IQ4_NL: put(b, sc(rng) / 8); break;
      default: put(b, sc(rng)); break;  // Q4_0, Q5_0, Q8_0
    }
  }
  return v;
}

/// Which activation rounding ggml applies before a product with `type` weights.
enum class ActRound { none, q8_0, q8_1, q8_k, bf16 };
inline ActRound act_round(uint32_t type) {
  switch (type) {
    case PMOE_DTYPE_F32: case PMOE_DTYPE_F16: return ActRound::none;
    case PMOE_DTYPE_BF16: return ActRound::bf16;
    case PMOE_DTYPE_Q4_1: case PMOE_DTYPE_Q5_1: return ActRound::q8_1;
    case PMOE_DTYPE_Q4_0: case PMOE_DTYPE_Q5_0: case PMOE_DTYPE_Q8_0: case PMOE_DTYPE_IQ4_NL: return ActRound::q8_0;
    default: return ActRound::q8_k;
  }
}

/// x as the kernels see it after ggml's rounding; for Q8_1 also each block's s (f16 of d * sum q),
/// which the offset term m * s uses instead of the exact sum.
struct RoundedAct {
  std::vector<double> x;
  std::vector<double> s;  // Q8_1 only, one per 32 values
};
inline RoundedAct round_act(ActRound r, const float* x, size_t n) {
  RoundedAct o;
  o.x.assign(x, x + n);
  if (r == ActRound::bf16)
    for (size_t i = 0; i < n; ++i) o.x[i] = pmoe_bf16_to_fp32(pmoe_fp32_to_bf16(x[i]));
  if (r == ActRound::q8_0 || r == ActRound::q8_1)
    for (size_t b = 0; b < n / 32; ++b) {
      float amax = 0.f;
      for (size_t j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[b * 32 + j]));
      const float id = amax != 0.f ? 127.f / amax : 0.f, d = amax / 127.f;
      double sum = 0;
      for (size_t j = 0; j < 32; ++j) {
        const float q = std::nearbyint(x[b * 32 + j] * id);
        sum += q;
        o.x[b * 32 + j] = double(q) * pmoe_fp16_to_fp32(pmoe_fp32_to_fp16(d));
      }
      o.s.push_back(pmoe_fp16_to_fp32(pmoe_fp32_to_fp16(d * float(sum))));
    }
  if (r == ActRound::q8_k)
    for (size_t b = 0; b < n / 256; ++b) {
      float amax = 0.f, mx = 0.f;
      for (size_t j = 0; j < 256; ++j)
        if (std::fabs(x[b * 256 + j]) > amax) amax = std::fabs(x[b * 256 + j]), mx = x[b * 256 + j];
      const float iscale = amax != 0.f ? -127.f / mx : 0.f;
      for (size_t j = 0; j < 256; ++j)
        o.x[b * 256 + j] = amax != 0.f ? double(std::fmin(127.f, std::nearbyint(iscale * x[b * 256 + j]))) * double(1.f / iscale) : 0.0;
    }
  return o;
}

}  // namespace pmoe::testref
