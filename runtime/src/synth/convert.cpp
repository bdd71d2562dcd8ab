#include "synth/convert.hpp"

#include <pocketmoe/dtype.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common/error.hpp"

namespace pmoe::synth {

namespace {
uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

uint16_t fp32_to_fp16(float f) {
  // ggml's portable GGML_FP32_TO_FP16 (from the FP16 library): the float unit does the
  // rounding (nearest even), like F16C's _cvtss_sh.
  const float scale_to_inf = 0x1.0p+112f, scale_to_zero = 0x1.0p-110f;
  float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = bits_of(f), shl1_w = w + w, sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = from_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t b = bits_of(base);
  const uint32_t nonsign = ((b >> 13) & 0x00007C00u) + (b & 0x00000FFFu);
  return uint16_t((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

uint16_t fp32_to_bf16(float f) {
  const uint32_t u = bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 64);  // quiet NaN
  return uint16_t((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

void convert_row(const float* x, uint8_t* dst, uint64_t n, uint32_t type) {
  switch (type) {
    case PMOE_DTYPE_F32:
      std::memcpy(dst, x, n * 4);
      return;
    case PMOE_DTYPE_F16:
    case PMOE_DTYPE_BF16: {
      const bool f16 = type == PMOE_DTYPE_F16;
      for (uint64_t i = 0; i < n; ++i) {
        const uint16_t h = f16 ? fp32_to_fp16(x[i]) : fp32_to_bf16(x[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    }
    case PMOE_DTYPE_Q8_0:
      for (uint64_t b = 0; b < n / 32; ++b, x += 32, dst += 34) {
        float amax = 0.f;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
        const uint16_t dh = fp32_to_fp16(d);
        std::memcpy(dst, &dh, 2);
        for (int j = 0; j < 32; ++j) dst[2 + j] = uint8_t(int8_t(std::round(x[j] * id)));
      }
      return;
    case PMOE_DTYPE_Q4_0:
      for (uint64_t b = 0; b < n / 32; ++b, x += 32, dst += 18) {
        float amax = 0.f, max = 0.f;  // max: the value with the largest magnitude, sign kept
        for (int j = 0; j < 32; ++j)
          if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
          }
        const float d = max / -8.f, id = d != 0.f ? 1.f / d : 0.f;
        const uint16_t dh = fp32_to_fp16(d);
        std::memcpy(dst, &dh, 2);
        for (int j = 0; j < 16; ++j) {
          const int lo = std::min(15, int(int8_t(x[j] * id + 8.5f)));
          const int hi = std::min(15, int(int8_t(x[j + 16] * id + 8.5f)));
          dst[2 + j] = uint8_t(lo | (hi << 4));
        }
      }
      return;
    default: {
      const char* name = pmoe_dtype_name(type);
      throw Error(std::string("synth: cannot write tensors of type ") +
                  (name ? std::string(name) : std::to_string(type)) +
                  " (supported: f32, f16, bf16, q8_0, q4_0)");
    }
  }
}

}  // namespace pmoe::synth
