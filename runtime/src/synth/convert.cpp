#include "synth/convert.hpp"

#include <pocketmoe/dtype.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common/error.hpp"

namespace pmoe::synth {

void convert_row(const float* x, uint8_t* dst, uint64_t n, uint32_t type) {
  switch (type) {
    case PMOE_DTYPE_F32:
      std::memcpy(dst, x, n * 4);
      return;
    case PMOE_DTYPE_F16:
    case PMOE_DTYPE_BF16: {
      const bool f16 = type == PMOE_DTYPE_F16;
      for (uint64_t i = 0; i < n; ++i) {
        const uint16_t h = f16 ? pmoe_fp32_to_fp16(x[i]) : pmoe_fp32_to_bf16(x[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    }
    case PMOE_DTYPE_Q8_0:
      for (uint64_t b = 0; b < n / 32; ++b, x += 32, dst += 34) {
        float amax = 0.f;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
        const uint16_t dh = pmoe_fp32_to_fp16(d);
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
        const uint16_t dh = pmoe_fp32_to_fp16(d);
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
