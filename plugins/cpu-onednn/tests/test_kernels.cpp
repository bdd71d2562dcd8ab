// The plugin's vector kernels against plain references, under whichever kernel set is in use
// (ctest runs this once per set, capping it with PMOE_CPU_MAX_ISA).
#include "kernels.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace pmoe::cpu;

TEST_CASE("Q8_0 activation quantization is bit-identical to ggml's scalar rounding") {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 3.f);
  const int64_t n = 32 * 64;
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  std::fill(x.begin() + 64, x.begin() + 96, 0.f);  // an all-zero block: d = 0, all q = 0
  for (int j = 0; j < 32; ++j) x[size_t(96 + j)] = float(j - 16) * 0.5f;  // exact halves: ties to even
  x[200] = -1e30f, x[300] = 1e-30f;
  std::vector<BlockQ8_0> got(static_cast<size_t>(n / 32));
  quantize_row_q8_0(x.data(), got.data(), n);
  INFO("kernels " << isa_name(kernel_isa()));
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[size_t(b * 32 + j)]));
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    CHECK(got[size_t(b)].d == pmoe_fp32_to_fp16(amax / 127.f));
    for (int j = 0; j < 32; ++j)
      CHECK(int(got[size_t(b)].qs[j]) == int(std::nearbyint(x[size_t(b * 32 + j)] * id)));
  }
}

TEST_CASE("an unknown PMOE_CPU_MAX_ISA name is recognised as unknown") {
  CHECK(parse_isa("avx2") == Isa::avx2);
  CHECK(parse_isa("avx512_vbmi") == Isa::avx512_vbmi);
  CHECK_FALSE(parse_isa("avx512"));
  CHECK_FALSE(parse_isa(""));
}
