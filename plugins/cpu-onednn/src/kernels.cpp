// Kernel selection, activation quantizers and the preparation of activation rows. The kernels
// themselves live in kernels_scalar.cpp, kernels_avx2.cpp and kernels_avx512.cpp.
#include "kernels.hpp"

#include <cpuid.h>
#include <immintrin.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace pmoe::cpu {

// ---- activation quantizers ------------------------------------------------------------------------

namespace {
// One Q8_0/Q8_1 block: q = round(x * 127/amax) (half to even), d = amax/127; returns sum(q).
int quantize_block_scalar(const float* x, int8_t* q, float& d) {
  float amax = 0.f;
  for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
  d = amax / 127.f;
  const float id = amax != 0.f ? 127.f / amax : 0.f;
  int sum = 0;
  for (int j = 0; j < 32; ++j) sum += q[j] = int8_t(std::nearbyint(x[j] * id));
  return sum;
}

// Same arithmetic as the scalar version, so the same bits: max is exact, and cvtps rounds to
// nearest even as nearbyint does in the default rounding mode.
__attribute__((target("avx2,fma,f16c"))) int quantize_block_avx2(const float* x, int8_t* out, float& d) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 v[4], m = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[k]));
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float amax = _mm_cvtss_f32(m4);
  d = amax / 127.f;
  const __m256 s = _mm256_set1_ps(amax != 0.f ? 127.f / amax : 0.f);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], s));
  const __m256i s32 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
  s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
  // packs interleave 128-bit lanes; the final permute restores element order
  const __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
  const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), p8);
  return _mm_cvtsi128_si32(s4);
}

int quantize_block(const float* x, int8_t* q, float& d) {
  return kernel_isa() >= Isa::avx2 ? quantize_block_avx2(x, q, d) : quantize_block_scalar(x, q, d);
}
}  // namespace

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) {
    float d;
    quantize_block(x + b * 32, y[b].qs, d);
    y[b].d = pmoe_fp32_to_fp16(d);
  }
}

void quantize_row_q8_1(const float* x, BlockQ8_1* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) {
    float d;
    const int sum = quantize_block(x + b * 32, y[b].qs, d);
    y[b].d = pmoe_fp32_to_fp16(d);
    y[b].s = pmoe_fp32_to_fp16(d * float(sum));
  }
}

namespace {
// Same arithmetic as the scalar version: the first value of largest magnitude sets the sign,
// cvtps rounds half to even as nearbyint does, and 127 * (1 + ulp) still rounds to 127.
__attribute__((target("avx2,fma,f16c"))) void quantize_q8k_avx2(const float* x, BlockQ8K* y, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < 32; ++k) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    BlockQ8K& o = y[b];
    if (amax == 0.f) {
      std::memset(&o, 0, sizeof o);
      continue;
    }
    int first = 0;
    for (int k = 0; k < 32; ++k) {
      const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
      if (hit) {
        first = 8 * k + __builtin_ctz(unsigned(hit));
        break;
      }
    }
    const float iscale = -127.f / x[first];
    const __m256 s = _mm256_set1_ps(iscale);
    const __m256i top = _mm256_set1_epi32(127);
    for (int g = 0; g < 16; ++g) {
      const __m256i q0 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16 * g), s)), top);
      const __m256i q1 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16 * g + 8), s)), top);
      const __m256i p16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);  // values in order
      const __m128i p8 = _mm_packs_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o.qs + 16 * g), p8);
      __m256i t = _mm256_add_epi32(q0, q1);
      __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
      t4 = _mm_add_epi32(t4, _mm_unpackhi_epi64(t4, t4));
      o.bsums[g] = int16_t(_mm_cvtsi128_si32(_mm_add_epi32(t4, _mm_shuffle_epi32(t4, 1))));
    }
    o.d = 1.f / iscale;
  }
}
}  // namespace

void quantize_row_q8_k(const float* x, BlockQ8K* y, int64_t n) {
  if (kernel_isa() >= Isa::avx2) return quantize_q8k_avx2(x, y, n);
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    float amax = 0.f, max = 0.f;  // the value of largest magnitude, the first one on ties
    for (int j = 0; j < 256; ++j)
      if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
    BlockQ8K& o = y[b];
    if (amax == 0.f) {
      std::memset(&o, 0, sizeof o);
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < 256; ++j) o.qs[j] = int8_t(std::fmin(127.f, std::nearbyint(iscale * x[j])));
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int j = 0; j < 16; ++j) s += o.qs[16 * g + j];
      o.bsums[g] = int16_t(s);
    }
    o.d = 1.f / iscale;
  }
}

// ---- activation rows --------------------------------------------------------------------------------

namespace {
enum class Act { floats, bf16, q8_0, q8_1, q8_k };

Act act_of(uint32_t t) {
  switch (t) {
    case PMOE_DTYPE_BF16: return Act::bf16;
    case PMOE_DTYPE_Q4_0: case PMOE_DTYPE_Q5_0: case PMOE_DTYPE_Q8_0: case PMOE_DTYPE_IQ4_NL: return Act::q8_0;
    case PMOE_DTYPE_Q4_1: case PMOE_DTYPE_Q5_1: return Act::q8_1;
    case PMOE_DTYPE_Q2_K: case PMOE_DTYPE_Q3_K: case PMOE_DTYPE_Q4_K: case PMOE_DTYPE_Q5_K:
    case PMOE_DTYPE_Q6_K: case PMOE_DTYPE_IQ4_XS: return Act::q8_k;
    default: return Act::floats;
  }
}

}  // namespace

namespace {
// AVX-512 reads repacked Q4_0/IQ4_NL four blocks at a time (GroupQ8x4).
bool grouped(uint32_t t, Order order, Isa isa) {
  return (t == PMOE_DTYPE_Q4_0 || t == PMOE_DTYPE_IQ4_NL) && order != Order::vec_dot && isa >= Isa::avx512_vnni;
}
// AVX-512 multiplies Q8_0 weights by unsigned activations (BlockQ8U).
bool unsigned_q8(uint32_t t, Isa isa) { return t == PMOE_DTYPE_Q8_0 && isa >= Isa::avx512_vnni; }

void prepare_unsigned(const float* x, BlockQ8U* u, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    BlockQ8_0 b;
    quantize_row_q8_0(x + i * 32, &b, 32);
    u[i].d = pmoe_fp16_to_fp32(b.d);
    for (int j = 0; j < 32; ++j) u[i].qs[j] = uint8_t(b.qs[j] + 128);
  }
}

void prepare_groups(const float* x, GroupQ8x4* g, int64_t ng) {
  for (int64_t i = 0; i < ng; ++i) {
    BlockQ8_0 b[4];
    quantize_row_q8_0(x + i * 128, b, 128);
    for (int k = 0; k < 4; ++k) {
      int32_t sum = 0;
      for (int j = 0; j < 32; ++j) sum += b[k].qs[j];
      std::memcpy(g[i].lo + 16 * k, b[k].qs, 16);
      std::memcpy(g[i].hi + 16 * k, b[k].qs + 16, 16);
      for (int l = 0; l < 4; ++l) {
        g[i].sum[4 * k + l] = l == 0 ? -8 * sum : 0;
        g[i].d[4 * k + l] = pmoe_fp16_to_fp32(b[k].d);
      }
    }
  }
}
}  // namespace

uint64_t prepared_row_bytes(uint32_t weight_type, int64_t n, Order order, Isa isa) {
  const uint64_t nb = uint64_t(n / 32);
  switch (act_of(weight_type)) {
    case Act::floats: return 0;
    case Act::bf16: return uint64_t(n) * 2;
    case Act::q8_0:  // grouped rows stay 64-byte multiples, so the groups stay aligned
      if (unsigned_q8(weight_type, isa)) return nb * sizeof(BlockQ8U);
      return grouped(weight_type, order, isa) ? (nb / 4 * sizeof(GroupQ8x4) + nb % 4 * sizeof(BlockQ8_0) + 63) / 64 * 64
                                              : nb * sizeof(BlockQ8_0);
    case Act::q8_1: return nb * sizeof(BlockQ8_1);
    case Act::q8_k: return uint64_t(n / 256) * sizeof(BlockQ8K);
  }
  return 0;
}

void prepare_row(uint32_t weight_type, Order order, const float* x, uint8_t* dst, int64_t n, Isa isa) {
  switch (act_of(weight_type)) {
    case Act::floats: return;
    case Act::bf16:
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(dst)[i] = pmoe_fp32_to_bf16(x[i]);
      return;
    case Act::q8_0:
      if (unsigned_q8(weight_type, isa)) return prepare_unsigned(x, reinterpret_cast<BlockQ8U*>(dst), n / 32);
      if (grouped(weight_type, order, isa)) {
        const int64_t ng = n / 128;
        prepare_groups(x, reinterpret_cast<GroupQ8x4*>(dst), ng);
        return quantize_row_q8_0(x + ng * 128, reinterpret_cast<BlockQ8_0*>(dst + ng * sizeof(GroupQ8x4)), n - ng * 128);
      }
      return quantize_row_q8_0(x, reinterpret_cast<BlockQ8_0*>(dst), n);
    case Act::q8_1: return quantize_row_q8_1(x, reinterpret_cast<BlockQ8_1*>(dst), n);
    case Act::q8_k: return quantize_row_q8_k(x, reinterpret_cast<BlockQ8K*>(dst), n);
  }
}

// ---- kernel sets ------------------------------------------------------------------------------------

namespace {
// CPUID.1:ECX.F16C[bit 29] (clang's __builtin_cpu_supports has no "f16c")
bool has_f16c() {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

Isa detect_isa() {
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c())) return Isa::scalar;
  if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni")))
    return Isa::avx2;
  if (!__builtin_cpu_supports("avx512vbmi")) return Isa::avx512_vnni;
  return Isa::avx512_vbmi;
}
}  // namespace

const char* isa_name(Isa isa) {
  static const char* const names[] = {"scalar", "avx2", "avx512_vnni", "avx512_vbmi"};
  return names[int(isa)];
}

std::optional<Isa> parse_isa(std::string_view name) {
  for (Isa i : {Isa::scalar, Isa::avx2, Isa::avx512_vnni, Isa::avx512_vbmi})
    if (name == isa_name(i)) return i;
  return std::nullopt;
}

Isa kernel_isa() {
  static const Isa isa = [] {
    const Isa cpu = detect_isa();
    const char* cap = std::getenv("PMOE_CPU_MAX_ISA");
    const std::optional<Isa> c = cap ? parse_isa(cap) : std::nullopt;
    return c && *c < cpu ? *c : cpu;
  }();
  return isa;
}

TileFn tile_kernel(uint32_t weight_type, Order order) {
  const Isa isa = kernel_isa();
  TileFn f = nullptr;
  if (isa >= Isa::avx512_vnni) f = avx512_tile(weight_type, order);
  if (!f && isa >= Isa::avx2) f = avx2_tile(weight_type, order);
  return f ? f : scalar_tile(weight_type);
}

PairTileFn pair_tile_kernel(uint32_t weight_type, Order order) {
  return kernel_isa() >= Isa::avx512_vnni ? avx512_pair_tile(weight_type, order) : nullptr;
}

Rows16Fn rows16_kernel(uint32_t weight_type, Order order) {
  const Isa isa = kernel_isa();
  return isa >= Isa::avx512_vnni ? avx512_rows16(weight_type, order)
         : isa >= Isa::avx2      ? avx2_rows16(weight_type, order)
                                 : nullptr;
}

Rows16TileFn rows16_tile_kernel(uint32_t weight_type, Order order) {
  const Isa isa = kernel_isa();  // (AVX-512 has two-row kernels with the columns' chains in lanes)
  return isa == Isa::avx2 ? avx2_rows16_tile(weight_type, order) : nullptr;
}

namespace {
float expf_ggml(float x) {  // ggml_v_expf, one lane
  const float r = 0x1.8p23f;
  const float n = std::fma(x, 0x1.715476p+0f, r) - r;
  const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
  if (std::fabs(n) > 192.f) return n <= 0.f ? 0.f : INFINITY;  // so exp(-inf) = 0
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                           u, std::fma(0x1.ffffecp-1f, b, 1.0f));
  return std::ldexp(j, int(n));  // vscalefps: j * 2^n, rounded once
}
}  // namespace

void expf16(const float* x, float* y) {
  if (kernel_isa() >= Isa::avx2) return expf16_avx2(x, y);
  for (int i = 0; i < 16; ++i) y[i] = expf_ggml(x[i]);
}

int64_t active_neurons(const float* gate, int64_t R, int64_t stride, int64_t n_ff, int32_t* list) {
  if (kernel_isa() >= Isa::avx512_vnni) return active_neurons_avx512(gate, R, stride, n_ff, list);
  int64_t n = 0;
  for (int64_t o = 0; o < n_ff; ++o) {  // (without branches: about half the neurons are active)
    bool any = false;
    for (int64_t t = 0; t < R; ++t) any |= !(gate[t * stride + o] <= 0.f);
    list[n] = int32_t(o);
    n += any;
  }
  return n;
}

int64_t reglu_listed(float* g, const float* u, int64_t n_ff, int32_t* list) {
  if (kernel_isa() >= Isa::avx512_vnni) return reglu_listed_avx512(g, u, n_ff, list);
  int64_t n = 0;
  for (int64_t o = 0; o < n_ff; ++o) {
    const bool on = !(g[o] <= 0.f);
    g[o] = on ? g[o] * u[o] : 0.f;
    list[n] = int32_t(o);
    n += on;
  }
  return n;
}

AttendFn attend_kernel() {
  return kernel_isa() >= Isa::avx512_vnni ? attend_avx512 : kernel_isa() >= Isa::avx2 ? attend_avx2 : attend_scalar;
}

}  // namespace pmoe::cpu
