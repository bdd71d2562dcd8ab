// The neuron-major layout of Q4_0 `down` matrices and the sparse down kernels (sparse_ffn.hpp).
//
// Blocks of 32 neurons go by in order; each active neuron's column (its values for the rows asked)
// is read in one sequential run into 16-bit sums per row, and at the end of the block every row
// enters the float chain as the dense gemv does: y = fma(float(isum), d_w * d_a, y). The vector
// kernels multiply the unsigned 4-bit values w by q_a with vpmaddubsw (the other byte of each pair
// multiplied by 0), add in wrapping 16-bit lanes and take 8 * sum(q_a) off at the end of the
// block: the exact sum of (w - 8) * q_a, which fits in 16 bits (|w - 8| <= 8, |q_a| <= 127, 32
// neurons: at most 32512). The lines the kernel reads next (columns, then the block's scales) are
// prefetched in that order: the hardware prefetchers lose their streams where inactive columns
// are skipped (measured: without it the kernel at 60% activity was slower than the dense gemv).
#include "sparse_ffn.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 on its own AVX-512 intrinsics

namespace pmoe::cpu {

namespace {
struct Layout {
  const uint16_t* d;  // [block][row] f16 scales
  const uint8_t* q;   // per neuron n_out / 2 bytes
  int64_t col;        // bytes per neuron
};
Layout layout(const uint8_t* w, int64_t n_out, int64_t n_in) {
  return {reinterpret_cast<const uint16_t*>(w), w + n_in / 32 * n_out * 2, n_out / 2};
}
/// The row within its group of 128 that byte j's low nibble holds (its high nibble: 64 more).
constexpr int row_of_byte(int j) { return j % 2 == 0 ? j / 2 : 32 + j / 2; }
/// The end of the run of `active` entries from k that lie in block b.
int64_t block_end(const int32_t* active, int64_t n_active, int64_t k, int64_t b) {
  while (k < n_active && active[k] < 32 * (b + 1)) ++k;
  return k;
}
}  // namespace

bool neuron_major_supported(uint32_t type, int64_t n_out, int64_t n_in) {
  return type == PMOE_DTYPE_Q4_0 && n_out > 0 && n_out % kNeuronGroup == 0 && n_in > 0 && n_in % 32 == 0;
}

namespace {
/// Rows of a 16 x 16 byte matrix transposed: out[c] byte r = in[r] byte c (SSE2, four rounds of
/// unpacks, each interleaving pairs of rows twice as wide as the last).
void transpose16x16(const __m128i in[16], __m128i out[16]) {
  __m128i a[16], b[16];
  for (int k = 0; k < 8; ++k)
    a[k] = _mm_unpacklo_epi8(in[2 * k], in[2 * k + 1]), a[k + 8] = _mm_unpackhi_epi8(in[2 * k], in[2 * k + 1]);
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      b[8 * h + k] = _mm_unpacklo_epi16(a[8 * h + 2 * k], a[8 * h + 2 * k + 1]),
                b[8 * h + k + 4] = _mm_unpackhi_epi16(a[8 * h + 2 * k], a[8 * h + 2 * k + 1]);
  for (int q = 0; q < 4; ++q)
    for (int k = 0; k < 2; ++k)
      a[4 * q + k] = _mm_unpacklo_epi32(b[4 * q + 2 * k], b[4 * q + 2 * k + 1]),
                a[4 * q + k + 2] = _mm_unpackhi_epi32(b[4 * q + 2 * k], b[4 * q + 2 * k + 1]);
  for (int e = 0; e < 8; ++e)
    out[2 * e] = _mm_unpacklo_epi64(a[2 * e], a[2 * e + 1]), out[2 * e + 1] = _mm_unpackhi_epi64(a[2 * e], a[2 * e + 1]);
}
}  // namespace

void relayout_neuron_major(uint32_t, const uint8_t* src, uint8_t* dst, int64_t n_out, int64_t n_in) {
  const int64_t nb = n_in / 32;
  const uint64_t row_bytes = uint64_t(nb) * sizeof(BlockQ4_0);
  uint16_t* scales = reinterpret_cast<uint16_t*>(dst);
  uint8_t* cols = dst + nb * n_out * 2;
  const int64_t col = n_out / 2;
  const __m128i low4 = _mm_set1_epi8(15), high4 = _mm_set1_epi8(char(0xF0));
  for (int64_t g = 0; g < n_out; g += kNeuronGroup)
    for (int64_t b = 0; b < nb; ++b) {
      // rows m and 64 + m of the group share a byte of each neuron's column: neurons j < 16 take
      // the low nibbles of both rows' byte j (Q4_0: value j low, value j + 16 high), the others
      // the high ones. pairs[h][m]: those bytes for every neuron of half h, by row m
      __m128i pairs[2][64];
      for (int64_t m = 0; m < 64; ++m) {
        const BlockQ4_0& lo = reinterpret_cast<const BlockQ4_0*>(src + uint64_t(g + m) * row_bytes)[b];
        const BlockQ4_0& hi = reinterpret_cast<const BlockQ4_0*>(src + uint64_t(g + 64 + m) * row_bytes)[b];
        scales[b * n_out + g + m] = lo.d, scales[b * n_out + g + 64 + m] = hi.d;
        const __m128i ql = _mm_loadu_si128(reinterpret_cast<const __m128i*>(lo.qs));
        const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi.qs));
        pairs[0][m] = _mm_or_si128(_mm_and_si128(ql, low4), _mm_slli_epi16(_mm_and_si128(qh, low4), 4));
        pairs[1][m] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(ql, 4), low4), _mm_and_si128(qh, high4));
      }
      for (int h = 0; h < 2; ++h) {
        __m128i t[4][16];  // t[k][j]: neuron 16 h + j's bytes for rows 16 k .. 16 k + 15
        for (int k = 0; k < 4; ++k) transpose16x16(&pairs[h][16 * k], t[k]);
        for (int j = 0; j < 16; ++j) {
          // byte p holds row p / 2 (even p) or 32 + p / 2 (odd p): rows 0..31 interleaved with 32..63
          uint8_t* out = cols + (32 * b + 16 * h + j) * col + g / 2;
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_unpacklo_epi8(t[0][j], t[2][j]));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm_unpackhi_epi8(t[0][j], t[2][j]));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32), _mm_unpacklo_epi8(t[1][j], t[3][j]));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 48), _mm_unpackhi_epi8(t[1][j], t[3][j]));
        }
      }
    }
}

void sparse_down_scalar(const uint8_t* w, int64_t n_out, int64_t n_in, const BlockQ8_0* a, const int32_t* active,
                        int64_t n_active, int64_t i0, int64_t i1, float* y) {
  const Layout L = layout(w, n_out, n_in);
  std::fill(y + i0, y + i1, 0.f);
  for (int64_t k = 0; k < n_active;) {
    const int64_t b = active[k] / 32, end = block_end(active, n_active, k, b);
    const float da = pmoe_fp16_to_fp32(a[b].d);
    for (int64_t g = i0; g < i1; g += kNeuronGroup) {
      int32_t isum[kNeuronGroup] = {};
      for (int64_t n = k; n < end; ++n) {
        const int qa = a[b].qs[active[n] - 32 * b];
        const uint8_t* c = L.q + active[n] * L.col + g / 2;
        for (int p = 0; p < 64; ++p) {
          isum[row_of_byte(p)] += ((c[p] & 15) - 8) * qa;
          isum[64 + row_of_byte(p)] += ((c[p] >> 4) - 8) * qa;
        }
      }
      for (int i = 0; i < kNeuronGroup; ++i)
        y[g + i] = std::fma(float(isum[i]), pmoe_fp16_to_fp32(L.d[b * n_out + g + i]) * da, y[g + i]);
    }
    k = end;
  }
}

namespace {
constexpr int64_t kMaxLines = 16;  // lines of 128 rows per kernel pass (16-bit sums in L1)

/// Lines the kernels prefetch ahead of the one they read (6 KiB): DRAM latency is hidden only some
/// 48 lines ahead, and the block ends, where the kernels read scales and compute without loading
/// columns, need as many again in flight (measured on Zen 4, 2 threads at 36% active: 0.87x -> 0.70x
/// of the dense gemv's time).
constexpr int kLinesAhead = 96;

/// Prefetches the lines a kernel pass reads, in the order it reads them, kLinesAhead lines ahead:
/// each active neuron's column (`lines` lines from row i0), and after a block's last active neuron
/// that block's scales for the pass' rows. The kernel calls step() once per line it reads, so the
/// distance holds across skipped columns, which break the hardware prefetchers' streams.
class LinesAhead {
 public:
  LinesAhead(const Layout& L, const int32_t* active, int64_t n_active, int64_t i0, int64_t lines)
      : L_(L), active_(active), n_active_(n_active), i0_(i0), lines_(lines) {
    for (int k = 0; k < kLinesAhead; ++k) step();
  }
  void step() {
    if (scale_line_ >= 0) {  // the scales of the block of the neuron before n_ (the last block's too)
      const int64_t b = active_[n_ - 1] / 32;
      _mm_prefetch(reinterpret_cast<const char*>(L_.d + b * 2 * L_.col + i0_) + 64 * scale_line_, _MM_HINT_T0);
      if (++scale_line_ == lines_ * kNeuronGroup * 2 / 64) scale_line_ = -1;
      return;
    }
    if (n_ >= n_active_) return;
    _mm_prefetch(reinterpret_cast<const char*>(L_.q + active_[n_] * L_.col + i0_ / 2 + 64 * line_), _MM_HINT_T0);
    if (++line_ < lines_) return;
    line_ = 0, ++n_;
    if (n_ == n_active_ || active_[n_] / 32 != active_[n_ - 1] / 32) scale_line_ = 0;
  }

 private:
  const Layout& L_;  // (a block's scales: n_out = 2 L_.col of them)
  const int32_t* active_;
  int64_t n_active_, i0_, lines_;
  int64_t n_ = 0, line_ = 0, scale_line_ = -1;  // the next line: of neuron active_[n_], or a scale line
};

/// q_a in the low byte of both 16-bit halves, 0 in the high ones: vpmaddubsw's multiplier for the
/// even bytes (shifted left by 8: for the odd ones).
int32_t low_bytes(int qa) { return int32_t(uint32_t(uint8_t(qa)) * 0x00010001u); }

using LinesFn = void (*)(const Layout& L, int64_t n_out, const BlockQ8_0* a, const int32_t* active, int64_t n_active,
                         int64_t i0, int64_t lines, float* y);
/// Rows i0..i1 as passes of at most kMaxLines lines of 128 rows (the 16-bit sums stay in L1).
template <LinesFn Pass>
void by_passes(const uint8_t* w, int64_t n_out, int64_t n_in, const BlockQ8_0* a, const int32_t* active,
               int64_t n_active, int64_t i0, int64_t i1, float* y) {
  const Layout L = layout(w, n_out, n_in);
  for (int64_t i = i0; i < i1; i += kMaxLines * kNeuronGroup)
    Pass(L, n_out, a, active, n_active, i, std::min(kMaxLines, (i1 - i) / kNeuronGroup), y);
}

/// Rows i0 .. i0 + 128 lines of the AVX2 kernel (lines <= kMaxLines).
__attribute__((target("avx2,fma,f16c"))) void sparse_down_avx2_lines(const Layout& L, int64_t n_out, const BlockQ8_0* a,
                                                                     const int32_t* active, int64_t n_active, int64_t i0,
                                                                     int64_t lines, float* y) {
  const __m256i low4 = _mm256_set1_epi8(15);
  // line l's 16-bit sums at 8 l + 4 h + 2 q + e: 16 rows each, 64 q + 32 e + 16 h (half h of the
  // line, low (q = 0) or high nibbles, even or odd bytes)
  __m256i sums[8 * kMaxLines];
  std::fill(y + i0, y + i0 + lines * kNeuronGroup, 0.f);
  LinesAhead ahead(L, active, n_active, i0, lines);
  for (int64_t k = 0; k < n_active;) {
    const int64_t b = active[k] / 32, end = block_end(active, n_active, k, b);
    for (int64_t r = 0; r < 8 * lines; ++r) sums[r] = _mm256_setzero_si256();
    int qsum = 0;
    for (int64_t n = k; n < end; ++n) {  // each active column read in one sequential run
      const int qa = a[b].qs[active[n] - 32 * b];
      qsum += qa;
      const __m256i e = _mm256_set1_epi32(low_bytes(qa)), o = _mm256_slli_epi16(e, 8);
      const uint8_t* c = L.q + active[n] * L.col + i0 / 2;
      for (int64_t l = 0; l < lines; ++l) {
        ahead.step();
        for (int h = 0; h < 2; ++h) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 64 * l + 32 * h));
          const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
          __m256i* acc = &sums[8 * l + 4 * h];
          acc[0] = _mm256_add_epi16(acc[0], _mm256_maddubs_epi16(lo, e));
          acc[1] = _mm256_add_epi16(acc[1], _mm256_maddubs_epi16(lo, o));
          acc[2] = _mm256_add_epi16(acc[2], _mm256_maddubs_epi16(hi, e));
          acc[3] = _mm256_add_epi16(acc[3], _mm256_maddubs_epi16(hi, o));
        }
      }
    }
    const __m256i off = _mm256_set1_epi16(int16_t(8 * qsum));
    const __m256 da = _mm256_set1_ps(pmoe_fp16_to_fp32(a[b].d));
    for (int64_t r = 0; r < 8 * lines; ++r) {
      if (r % 2 == 0) ahead.step();  // 32 bytes of scales per r
      const int64_t l = r / 8, h = (r / 4) % 2, q = (r / 2) % 2, e = r % 2;
      const int64_t row = i0 + kNeuronGroup * l + 64 * q + 32 * e + 16 * h;
      const __m256i t = _mm256_sub_epi16(sums[r], off);
      for (int part = 0; part < 2; ++part) {
        const __m256i i32 = _mm256_cvtepi16_epi32(part ? _mm256_extracti128_si256(t, 1) : _mm256_castsi256_si128(t));
        const __m256 d = _mm256_mul_ps(
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(L.d + b * n_out + row + 8 * part))), da);
        float* yr = y + row + 8 * part;
        _mm256_storeu_ps(yr, _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), d, _mm256_loadu_ps(yr)));
      }
    }
    k = end;
  }
}
}  // namespace

void sparse_down_avx2(const uint8_t* w, int64_t n_out, int64_t n_in, const BlockQ8_0* a, const int32_t* active,
                      int64_t n_active, int64_t i0, int64_t i1, float* y) {
  by_passes<sparse_down_avx2_lines>(w, n_out, n_in, a, active, n_active, i0, i1, y);
}

namespace {
/// Rows i0 .. i0 + 128 lines of the AVX-512 kernel (lines <= kMaxLines).
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))) void sparse_down_avx512_lines(
    const Layout& L, int64_t n_out, const BlockQ8_0* a, const int32_t* active, int64_t n_active, int64_t i0,
    int64_t lines, float* y) {
  const __m512i low4 = _mm512_set1_epi8(15);
  // 16-bit sums of the block, in the order the lines produce them: line l's rows 32 r .. 32 r + 31
  // at 4 l + r (r: low nibbles even/odd bytes, high nibbles even/odd); in L1
  __m512i sums[4 * kMaxLines];
  std::fill(y + i0, y + i0 + lines * kNeuronGroup, 0.f);
  LinesAhead ahead(L, active, n_active, i0, lines);
  for (int64_t k = 0; k < n_active;) {
    const int64_t b = active[k] / 32, end = block_end(active, n_active, k, b);
    for (int64_t r = 0; r < 4 * lines; ++r) sums[r] = _mm512_setzero_si512();
    int qsum = 0;
    for (int64_t n = k; n < end; ++n) {  // each active column read in one sequential run
      const int qa = a[b].qs[active[n] - 32 * b];
      qsum += qa;
      const __m512i e = _mm512_set1_epi32(low_bytes(qa)), o = _mm512_slli_epi16(e, 8);
      const uint8_t* c = L.q + active[n] * L.col + i0 / 2;
      for (int64_t l = 0; l < lines; ++l) {
        ahead.step();
        const __m512i v = _mm512_loadu_si512(c + 64 * l);
        const __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
        __m512i* acc = &sums[4 * l];
        acc[0] = _mm512_add_epi16(acc[0], _mm512_maddubs_epi16(lo, e));
        acc[1] = _mm512_add_epi16(acc[1], _mm512_maddubs_epi16(lo, o));
        acc[2] = _mm512_add_epi16(acc[2], _mm512_maddubs_epi16(hi, e));
        acc[3] = _mm512_add_epi16(acc[3], _mm512_maddubs_epi16(hi, o));
      }
    }
    const __m512i off = _mm512_set1_epi16(int16_t(8 * qsum));
    const __m512 da = _mm512_set1_ps(pmoe_fp16_to_fp32(a[b].d));
    for (int64_t r = 0; r < 4 * lines; ++r) {  // 32 rows each, in row order
      ahead.step();                              // 64 bytes of scales per r
      const __m512i t = _mm512_sub_epi16(sums[r], off);
      for (int part = 0; part < 2; ++part) {
        const int64_t row = i0 + 32 * r + 16 * part;
        const __m512i i32 = _mm512_cvtepi16_epi32(part ? _mm512_extracti64x4_epi64(t, 1) : _mm512_extracti64x4_epi64(t, 0));
        const __m512 d = _mm512_mul_ps(
            _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.d + b * n_out + row))), da);
        _mm512_storeu_ps(y + row, _mm512_fmadd_ps(_mm512_cvtepi32_ps(i32), d, _mm512_loadu_ps(y + row)));
      }
    }
    k = end;
  }
}
}  // namespace

void sparse_down_avx512(const uint8_t* w, int64_t n_out, int64_t n_in, const BlockQ8_0* a, const int32_t* active,
                        int64_t n_active, int64_t i0, int64_t i1, float* y) {
  by_passes<sparse_down_avx512_lines>(w, n_out, n_in, a, active, n_active, i0, i1, y);
}

SparseDownFn sparse_down_kernel() {
  switch (kernel_isa()) {
    case Isa::scalar: return sparse_down_scalar;
    case Isa::avx2: return sparse_down_avx2;
    default: return sparse_down_avx512;
  }
}

}  // namespace pmoe::cpu

