// The neuron-major layout of Q4_0 and Q4_K `down` matrices and the sparse down kernels
// (sparse_ffn.hpp).
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
//
// Q4_K takes the same column sums per sub-block of 32 neurons (its values are 0..15 too), then,
// as its dense gemv, per row and super-block the exact integers sum = sum_j scale_j * S_j and
// mins = sum_j min_j * A_j (S_j: the sub-block's sum of w * q_a, A_j: its sum of q_a), chained
// as fma(sum, d * d_a, acc) and fma(mins, dmin * d_a, acc_min), y = acc - acc_min.
#include "sparse_ffn.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 on its own AVX-512 intrinsics

namespace pmoe::cpu {

namespace {
struct Layout {
  const uint8_t* d;  // Q4_0: [block][row] f16 scales; Q4_K: [super-block][group] 2048-byte headers
  const uint8_t* q;  // per neuron n_out / 2 bytes
  int64_t col;       // bytes per neuron
};
/// Bytes of the scales or headers before the columns.
int64_t header_bytes(uint32_t type, int64_t n_out, int64_t n_in) {
  return type == PMOE_DTYPE_Q4_K ? n_in / 256 * n_out * 16 : n_in / 32 * n_out * 2;
}
Layout layout(uint32_t type, const uint8_t* w, int64_t n_out, int64_t n_in) {
  return {w, w + header_bytes(type, n_out, n_in), n_out / 2};
}
/// Q4_K: the headers of super-block k for the group of rows from `row`, and a field's bytes there.
constexpr int64_t kHeader = 2048, kHeaderD = 0, kHeaderDmin = 256, kHeaderScales = 512;
const uint8_t* header(const Layout& L, int64_t n_out, int64_t k, int64_t row) {
  return L.d + (k * (n_out / kNeuronGroup) + row / kNeuronGroup) * kHeader;
}
/// The row within its group of 128 that byte j's low nibble holds (its high nibble: 64 more).
constexpr int row_of_byte(int j) { return j % 2 == 0 ? j / 2 : 32 + j / 2; }
/// The end of the run of `active` entries from k that lie in block b of `size` neurons.
int64_t block_end(const int32_t* active, int64_t n_active, int64_t k, int64_t b, int64_t size = 32) {
  while (k < n_active && active[k] < size * (b + 1)) ++k;
  return k;
}
}  // namespace

bool neuron_major_supported(uint32_t type, int64_t n_out, int64_t n_in) {
  if (n_out <= 0 || n_out % kNeuronGroup != 0 || n_in <= 0) return false;
  if (type == PMOE_DTYPE_Q4_0) return n_in % 32 == 0;
  return type == PMOE_DTYPE_Q4_K && n_in % 256 == 0 && kernel_isa() >= Isa::avx2;
}

uint64_t sparse_act_bytes(uint32_t type, int64_t n_in) {
  return type == PMOE_DTYPE_Q4_K ? uint64_t(n_in / 256) * sizeof(BlockQ8K) : uint64_t(n_in / 32) * sizeof(BlockQ8_0);
}

void prepare_sparse_act(uint32_t type, const float* a, uint8_t* dst, int64_t n_in) {
  if (type == PMOE_DTYPE_Q4_K) return quantize_row_q8_k(a, reinterpret_cast<BlockQ8K*>(dst), n_in);
  quantize_row_q8_0(a, reinterpret_cast<BlockQ8_0*>(dst), n_in);
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

namespace {
/// Stores 32 neurons' columns for the group of 128 rows from g: pairs[h][m] byte j holds neuron
/// 16 h + j's value for row m (low nibble) and row 64 + m (high nibble).
void store_columns(const __m128i pairs[2][64], uint8_t* cols, int64_t first_neuron, int64_t col, int64_t g) {
  for (int h = 0; h < 2; ++h) {
    __m128i t[4][16];  // t[k][j]: neuron 16 h + j's bytes for rows 16 k .. 16 k + 15
    for (int k = 0; k < 4; ++k) transpose16x16(&pairs[h][16 * k], t[k]);
    for (int j = 0; j < 16; ++j) {
      // byte p holds row p / 2 (even p) or 32 + p / 2 (odd p): rows 0..31 interleaved with 32..63
      uint8_t* out = cols + (first_neuron + 16 * h + j) * col + g / 2;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_unpacklo_epi8(t[0][j], t[2][j]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm_unpackhi_epi8(t[0][j], t[2][j]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32), _mm_unpacklo_epi8(t[1][j], t[3][j]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 48), _mm_unpackhi_epi8(t[1][j], t[3][j]));
    }
  }
}

void relayout_q4_0(const uint8_t* src, uint8_t* dst, int64_t n_out, int64_t n_in) {
  const int64_t nb = n_in / 32;
  const uint64_t row_bytes = uint64_t(nb) * sizeof(BlockQ4_0);
  uint16_t* scales = reinterpret_cast<uint16_t*>(dst);
  uint8_t* cols = dst + header_bytes(PMOE_DTYPE_Q4_0, n_out, n_in);
  const __m128i low4 = _mm_set1_epi8(15), high4 = _mm_set1_epi8(char(0xF0));
  for (int64_t g = 0; g < n_out; g += kNeuronGroup)
    for (int64_t b = 0; b < nb; ++b) {
      // rows m and 64 + m of the group share a byte of each neuron's column: neurons j < 16 take
      // the low nibbles of both rows' byte j (Q4_0: value j low, value j + 16 high), the others
      // the high ones
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
      store_columns(pairs, cols, 32 * b, n_out / 2, g);
    }
}

void relayout_q4_k(const uint8_t* src, uint8_t* dst, int64_t n_out, int64_t n_in) {
  const int64_t nk = n_in / 256;
  const uint64_t row_bytes = uint64_t(nk) * sizeof(BlockQ4K);
  const Layout L = layout(PMOE_DTYPE_Q4_K, dst, n_out, n_in);
  uint8_t* cols = dst + header_bytes(PMOE_DTYPE_Q4_K, n_out, n_in);
  const __m128i low4 = _mm_set1_epi8(15);
  for (int64_t g = 0; g < n_out; g += kNeuronGroup)
    for (int64_t k = 0; k < nk; ++k) {
      uint8_t* h = const_cast<uint8_t*>(header(L, n_out, k, g));
      const BlockQ4K* blk[kNeuronGroup];
      for (int64_t m = 0; m < kNeuronGroup; ++m) {
        blk[m] = reinterpret_cast<const BlockQ4K*>(src + uint64_t(g + m) * row_bytes) + k;
        std::memcpy(h + kHeaderD + 2 * m, &blk[m]->d, 2);
        std::memcpy(h + kHeaderDmin + 2 * m, &blk[m]->dmin, 2);
        for (int f = 0; f < 12; ++f) h[kHeaderScales + 128 * f + m] = blk[m]->scales[f];
      }
      // 64 values per 32 bytes: value l (l < 32) in byte l's low nibble, value 32 + l in its high
      // one; sub-block 2 c of chunk c the low nibbles, 2 c + 1 the high ones
      for (int c = 0; c < 4; ++c)
        for (int nib = 0; nib < 2; ++nib) {
          __m128i pairs[2][64];
          for (int half = 0; half < 2; ++half)
            for (int64_t m = 0; m < 64; ++m) {
              const __m128i ql = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[m]->qs + 32 * c + 16 * half));
              const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[64 + m]->qs + 32 * c + 16 * half));
              const __m128i lo = _mm_and_si128(nib ? _mm_srli_epi16(ql, 4) : ql, low4);
              const __m128i hi = _mm_and_si128(nib ? _mm_srli_epi16(qh, 4) : qh, low4);
              pairs[half][m] = _mm_or_si128(lo, _mm_slli_epi16(hi, 4));
            }
          store_columns(pairs, cols, 256 * k + 64 * c + 32 * nib, n_out / 2, g);
        }
    }
}
}  // namespace

void relayout_neuron_major(uint32_t type, const uint8_t* src, uint8_t* dst, int64_t n_out, int64_t n_in) {
  if (type == PMOE_DTYPE_Q4_K) return relayout_q4_k(src, dst, n_out, n_in);
  relayout_q4_0(src, dst, n_out, n_in);
}

namespace {
uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
/// Sums (w - 8) * q_a over the listed neurons [k, end) for the group of 128 rows from g, the
/// scalar kernels' column loop. qa(n): neuron n's quantized activation.
template <class Qa>
void column_sums(const Layout& L, const int32_t* active, int64_t k, int64_t end, int64_t g, Qa qa,
                 int32_t isum[kNeuronGroup]) {
  std::fill(isum, isum + kNeuronGroup, 0);
  for (int64_t n = k; n < end; ++n) {
    const int q = qa(active[n]);
    const uint8_t* c = L.q + active[n] * L.col + g / 2;
    for (int p = 0; p < 64; ++p) {
      isum[row_of_byte(p)] += ((c[p] & 15) - 8) * q;
      isum[64 + row_of_byte(p)] += ((c[p] >> 4) - 8) * q;
    }
  }
}
}  // namespace

void sparse_down_scalar(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                        int64_t n_active, int64_t i0, int64_t i1, float* y) {
  const Layout L = layout(PMOE_DTYPE_Q4_0, w, n_out, n_in);
  const auto* a = reinterpret_cast<const BlockQ8_0*>(act);
  std::fill(y + i0, y + i1, 0.f);
  for (int64_t k = 0; k < n_active;) {
    const int64_t b = active[k] / 32, end = block_end(active, n_active, k, b);
    const float da = pmoe_fp16_to_fp32(a[b].d);
    for (int64_t g = i0; g < i1; g += kNeuronGroup) {
      int32_t isum[kNeuronGroup];
      column_sums(L, active, k, end, g, [&](int32_t n) { return int(a[b].qs[n - 32 * b]); }, isum);
      for (int i = 0; i < kNeuronGroup; ++i)
        y[g + i] = std::fma(float(isum[i]), pmoe_fp16_to_fp32(load_u16(L.d + 2 * (b * n_out + g + i))) * da, y[g + i]);
    }
    k = end;
  }
}

void sparse_down_q4k_scalar(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                            int64_t n_active, int64_t i0, int64_t i1, float* y) {
  const Layout L = layout(PMOE_DTYPE_Q4_K, w, n_out, n_in);
  const auto* a = reinterpret_cast<const BlockQ8K*>(act);
  std::fill(y + i0, y + i1, 0.f);
  for (int64_t g = i0; g < i1; g += kNeuronGroup) {
    float acc_min[kNeuronGroup] = {};
    for (int64_t k = 0; k < n_active;) {
      const int64_t sb = active[k] / 256, sb_end = block_end(active, n_active, k, sb, 256);
      const uint8_t* h = header(L, n_out, sb, g);
      int32_t sum[kNeuronGroup] = {}, mins[kNeuronGroup] = {};
      for (int64_t n = k; n < sb_end;) {  // the super-block's sub-blocks with an active neuron
        const int64_t b = active[n] / 32, end = block_end(active, sb_end, n, b);
        auto qa = [&](int32_t i) { return int(a[sb].qs[i - 256 * sb]); };
        int32_t isum[kNeuronGroup], A = 0;
        column_sums(L, active, n, end, g, qa, isum);
        for (int64_t i = n; i < end; ++i) A += qa(active[i]);
        for (int i = 0; i < kNeuronGroup; ++i) {
          uint8_t packed[12], sm[16];
          for (int f = 0; f < 12; ++f) packed[f] = h[kHeaderScales + 128 * f + i];
          q4k_scales_mins(packed, sm);
          const int64_t j = b - 8 * sb;
          sum[i] += int32_t(sm[j]) * (isum[i] + 8 * A), mins[i] += int32_t(sm[8 + j]) * A;
        }
        n = end;
      }
      for (int i = 0; i < kNeuronGroup; ++i) {
        const float d = pmoe_fp16_to_fp32(load_u16(h + kHeaderD + 2 * i)), dmin = pmoe_fp16_to_fp32(load_u16(h + kHeaderDmin + 2 * i));
        y[g + i] = std::fma(float(sum[i]), d * a[sb].d, y[g + i]);
        acc_min[i] = std::fma(float(mins[i]), dmin * a[sb].d, acc_min[i]);
      }
      k = sb_end;
    }
    for (int i = 0; i < kNeuronGroup; ++i) y[g + i] -= acc_min[i];
  }
}

namespace {
constexpr int64_t kMaxLines = 16;  // lines of 128 rows per kernel pass (Q4_0: its 16-bit sums in L1)

/// Lines the kernels prefetch ahead of the one they read (6 KiB): DRAM latency is hidden only some
/// 48 lines ahead, and the block ends, where the kernels read scales and compute without loading
/// columns, need as many again in flight (measured on Zen 4, 2 threads at 36% active: 0.87x -> 0.70x
/// of the dense gemv's time).
constexpr int kLinesAhead = 96;

/// Prefetches the lines a kernel pass reads, in the order it reads them, kLinesAhead lines ahead:
/// each active neuron's column (`lines` lines from row i0); Q4_0: after a block's last active
/// neuron that block's scales for the pass' rows; Q4_K: from a super-block's first active neuron
/// on, two lines of its headers for those rows with each column line (into L2: they are read
/// throughout the super-block). The kernel calls step() once per line it reads (Q4_K: per column
/// line), so the distance holds across skipped columns, which break the hardware prefetchers' streams.
class LinesAhead {
 public:
  LinesAhead(uint32_t type, const Layout& L, int64_t n_out, const int32_t* active, int64_t n_active, int64_t i0,
             int64_t lines)
      : q4k_(type == PMOE_DTYPE_Q4_K), L_(L), n_out_(n_out), active_(active), n_active_(n_active), i0_(i0), lines_(lines) {
    if (q4k_ && n_active > 0) headers(active[0] / 256);
    for (int k = 0; k < kLinesAhead; ++k) step();
  }
  void step() {
    if (region_left_ > 0 && q4k_) {  // two header lines along with each column line (the kernel steps on columns only)
      _mm_prefetch(region_, _MM_HINT_T1);
      _mm_prefetch(region_ + 64, _MM_HINT_T1);
      region_ += 128, region_left_ -= 2;
    } else if (region_left_ > 0) {
      _mm_prefetch(region_, _MM_HINT_T0);
      region_ += 64, --region_left_;
      return;
    }
    if (n_ >= n_active_) return;
    _mm_prefetch(reinterpret_cast<const char*>(L_.q + active_[n_] * L_.col + i0_ / 2 + 64 * line_), _MM_HINT_T0);
    if (++line_ < lines_) return;
    line_ = 0, ++n_;
    if (q4k_) {
      if (n_ < n_active_ && active_[n_] / 256 != active_[n_ - 1] / 256) headers(active_[n_] / 256);
    } else if (n_ == n_active_ || active_[n_] / 32 != active_[n_ - 1] / 32) {  // the block's scales (the last one's too)
      region_ = reinterpret_cast<const char*>(L_.d + 2 * ((active_[n_ - 1] / 32) * n_out_ + i0_));
      region_left_ = lines_ * kNeuronGroup * 2 / 64;
    }
  }

 private:
  void headers(int64_t k) {
    region_ = reinterpret_cast<const char*>(header(L_, n_out_, k, i0_));
    region_left_ = lines_ * kHeader / 64;
  }
  bool q4k_;
  const Layout& L_;
  int64_t n_out_;
  const int32_t* active_;
  int64_t n_active_, i0_, lines_;
  int64_t n_ = 0, line_ = 0;     // the next column line: line_ of neuron active_[n_]
  const char* region_ = nullptr;  // or first, region_left_ lines of scales or headers
  int64_t region_left_ = 0;
};

/// q_a in the low byte of both 16-bit halves, 0 in the high ones: vpmaddubsw's multiplier for the
/// even bytes (shifted left by 8: for the odd ones).
int32_t low_bytes(int qa) { return int32_t(uint32_t(uint8_t(qa)) * 0x00010001u); }

using LinesFn = void (*)(const Layout& L, int64_t n_out, const uint8_t* act, const int32_t* active, int64_t n_active,
                         int64_t i0, int64_t lines, float* y);
/// Rows i0..i1 as passes of at most kMaxLines lines of 128 rows (the 16-bit sums stay in L1).
template <uint32_t Type, LinesFn Pass>
void by_passes(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
               int64_t n_active, int64_t i0, int64_t i1, float* y) {
  const Layout L = layout(Type, w, n_out, n_in);
  for (int64_t i = i0; i < i1; i += kMaxLines * kNeuronGroup)
    Pass(L, n_out, act, active, n_active, i, std::min(kMaxLines, (i1 - i) / kNeuronGroup), y);
}

#define PMOE_AVX2 __attribute__((target("avx2,fma,f16c")))

/// The AVX2 kernels' column loop: the listed neurons [k, end) of one block of 32 into `sums`
/// (16-bit, wrapping: w * q_a, w = 0..15; line l's 16 rows from 128 l + 64 q + 32 e + 16 h at
/// 8 l + 4 h + 2 q + e: half h of the line, low (q = 0) or high nibbles, even or odd bytes).
/// Returns the block's sum of q_a. qa(n): neuron n's quantized activation.
template <class Qa>
PMOE_AVX2 inline int block_columns_avx2(const Layout& L, const int32_t* active, int64_t k, int64_t end, int64_t i0,
                                        int64_t lines, Qa qa, __m256i* sums, LinesAhead& ahead) {
  const __m256i low4 = _mm256_set1_epi8(15);
  for (int64_t r = 0; r < 8 * lines; ++r) sums[r] = _mm256_setzero_si256();
  int qsum = 0;
  for (int64_t n = k; n < end; ++n) {  // each active column read in one sequential run
    const int q = qa(active[n]);
    qsum += q;
    const __m256i e = _mm256_set1_epi32(low_bytes(q)), o = _mm256_slli_epi16(e, 8);
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
  return qsum;
}
/// Row (from i0) of the AVX2 kernels' 16-bit sums r.
inline int64_t avx2_row(int64_t r) { return kNeuronGroup * (r / 8) + 64 * ((r / 2) % 2) + 32 * (r % 2) + 16 * ((r / 4) % 2); }

/// Rows i0 .. i0 + 128 lines of the AVX2 Q4_0 kernel (lines <= kMaxLines).
PMOE_AVX2 void sparse_down_avx2_lines(const Layout& L, int64_t n_out, const uint8_t* act, const int32_t* active,
                                      int64_t n_active, int64_t i0, int64_t lines, float* y) {
  const auto* a = reinterpret_cast<const BlockQ8_0*>(act);
  __m256i sums[8 * kMaxLines];
  std::fill(y + i0, y + i0 + lines * kNeuronGroup, 0.f);
  LinesAhead ahead(PMOE_DTYPE_Q4_0, L, n_out, active, n_active, i0, lines);
  for (int64_t k = 0; k < n_active;) {
    const int64_t b = active[k] / 32, end = block_end(active, n_active, k, b);
    const int qsum =
        block_columns_avx2(L, active, k, end, i0, lines, [&](int32_t n) { return int(a[b].qs[n - 32 * b]); }, sums, ahead);
    const __m256i off = _mm256_set1_epi16(int16_t(8 * qsum));
    const __m256 da = _mm256_set1_ps(pmoe_fp16_to_fp32(a[b].d));
    for (int64_t r = 0; r < 8 * lines; ++r) {
      if (r % 2 == 0) ahead.step();  // 32 bytes of scales per r
      const int64_t row = i0 + avx2_row(r);
      const __m256i t = _mm256_sub_epi16(sums[r], off);
      for (int part = 0; part < 2; ++part) {
        const __m256i i32 = _mm256_cvtepi16_epi32(part ? _mm256_extracti128_si256(t, 1) : _mm256_castsi256_si128(t));
        const __m256 d = _mm256_mul_ps(
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(L.d + 2 * (b * n_out + row + 8 * part)))), da);
        float* yr = y + row + 8 * part;
        _mm256_storeu_ps(yr, _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), d, _mm256_loadu_ps(yr)));
      }
    }
    k = end;
  }
}

/// Q4_K sub-block j's (0..7) 6-bit scales and mins of 16 rows, widened to 16 bits (as
/// q4k_scales_mins32 below, on 16 rows).
PMOE_AVX2 inline void q4k_scales_mins16(const uint8_t* fields, int64_t j, __m256i& sc, __m256i& mn) {
  const auto F = [fields](int64_t f) PMOE_AVX2 { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(fields + 128 * f)); };
  const __m128i m63 = _mm_set1_epi8(63), m15 = _mm_set1_epi8(15), top2 = _mm_set1_epi8(0x30);
  __m128i s8, m8;
  if (j < 4) {
    s8 = _mm_and_si128(F(j), m63), m8 = _mm_and_si128(F(4 + j), m63);
  } else {
    const __m128i low = F(4 + j);  // bytes 8..11: the low 4 bits of scale and min 4..7
    s8 = _mm_or_si128(_mm_and_si128(low, m15), _mm_and_si128(_mm_srli_epi16(F(j - 4), 2), top2));
    m8 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(low, 4), m15), _mm_and_si128(_mm_srli_epi16(F(j), 2), top2));
  }
  sc = _mm256_cvtepu8_epi16(s8), mn = _mm256_cvtepu8_epi16(m8);
}

/// Rows i0 .. i0 + 128 lines of the AVX2 Q4_K kernel (lines <= kMaxLines): the AVX-512 kernel's
/// steps (below) on 16 rows a register. vpunpck{l,h}wd leave rows 0-3 and 8-11, then 4-7 and
/// 12-15, of 16 in the 32-bit sums; the 128-bit halves are put back in order once per super-block.
PMOE_AVX2 void sparse_down_q4k_avx2_lines(const Layout& L, int64_t n_out, const uint8_t* act, const int32_t* active,
                                          int64_t n_active, int64_t i0, int64_t lines, float* y) {
  const auto* a = reinterpret_cast<const BlockQ8K*>(act);
  const int64_t rows = lines * kNeuronGroup;
  __m256i sums[2][8 * kMaxLines];
  alignas(32) int32_t sum[kMaxLines * kNeuronGroup], mins[kMaxLines * kNeuronGroup];
  alignas(32) float acc_min[kMaxLines * kNeuronGroup];
  std::fill(y + i0, y + i0 + rows, 0.f);
  std::fill(acc_min, acc_min + rows, 0.f);
  LinesAhead ahead(PMOE_DTYPE_Q4_K, L, n_out, active, n_active, i0, lines);
  for (int64_t k = 0; k < n_active;) {
    const int64_t sb = active[k] / 256, sb_end = block_end(active, n_active, k, sb, 256);
    std::fill(sum, sum + rows, 0), std::fill(mins, mins + rows, 0);
    auto qa = [&](int32_t i) { return int(a[sb].qs[i - 256 * sb]); };
    for (int64_t n = k; n < sb_end;) {  // the super-block's pairs of sub-blocks with an active neuron
      const int64_t pair = (active[n] - 256 * sb) / 64;
      int qsum[2] = {0, 0};
      for (int h = 0; h < 2; ++h) {
        const int64_t b = 8 * sb + 2 * pair + h, end = block_end(active, sb_end, n, b);
        if (end > n) {
          qsum[h] = block_columns_avx2(L, active, n, end, i0, lines, qa, sums[h], ahead);
        } else {
          for (int64_t r = 0; r < 8 * lines; ++r) sums[h][r] = _mm256_setzero_si256();
        }
        n = end;
      }
      const __m256i off0 = _mm256_set1_epi16(int16_t(8 * qsum[0])), off1 = _mm256_set1_epi16(int16_t(8 * qsum[1]));
      const __m256i A = _mm256_set1_epi32(int32_t(uint32_t(uint16_t(qsum[0])) | uint32_t(qsum[1]) << 16));
      const __m256i A8 = _mm256_slli_epi16(A, 3);
      for (int64_t r = 0; r < 8 * lines; ++r) {
        const int64_t row = avx2_row(r);
        const uint8_t* fields = header(L, n_out, sb, i0 + row) + kHeaderScales + row % kNeuronGroup;
        __m256i sc0, m0, sc1, m1;
        q4k_scales_mins16(fields, 2 * pair, sc0, m0);
        q4k_scales_mins16(fields, 2 * pair + 1, sc1, m1);
        const __m256i t0 = _mm256_sub_epi16(sums[0][r], off0), t1 = _mm256_sub_epi16(sums[1][r], off1);
        int32_t* s = sum + row;
        int32_t* m = mins + row;
        for (int half = 0; half < 2; ++half) {
          const __m256i t = half ? _mm256_unpackhi_epi16(t0, t1) : _mm256_unpacklo_epi16(t0, t1);
          const __m256i sc = half ? _mm256_unpackhi_epi16(sc0, sc1) : _mm256_unpacklo_epi16(sc0, sc1);
          const __m256i mn = half ? _mm256_unpackhi_epi16(m0, m1) : _mm256_unpacklo_epi16(m0, m1);
          auto* sp = reinterpret_cast<__m256i*>(s + 8 * half);
          auto* mp = reinterpret_cast<__m256i*>(m + 8 * half);
          const __m256i v = _mm256_add_epi32(_mm256_load_si256(sp), _mm256_madd_epi16(t, sc));
          _mm256_store_si256(sp, _mm256_add_epi32(v, _mm256_madd_epi16(sc, A8)));
          _mm256_store_si256(mp, _mm256_add_epi32(_mm256_load_si256(mp), _mm256_madd_epi16(mn, A)));
        }
      }
    }
    const __m256 dx = _mm256_set1_ps(a[sb].d);
    for (int64_t row = 0; row < rows; row += 16) {
      const uint8_t* h = header(L, n_out, sb, i0 + row);
      const int64_t g = row % kNeuronGroup;
      const __m256i s_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(sum + row)),
                    s_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(sum + row + 8));
      const __m256i m_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(mins + row)),
                    m_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(mins + row + 8));
      for (int part = 0; part < 2; ++part) {  // rows 0-7, then 8-15
        const __m256i S = part ? _mm256_permute2x128_si256(s_lo, s_hi, 0x31) : _mm256_permute2x128_si256(s_lo, s_hi, 0x20);
        const __m256i M = part ? _mm256_permute2x128_si256(m_lo, m_hi, 0x31) : _mm256_permute2x128_si256(m_lo, m_hi, 0x20);
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + kHeaderD + 2 * (g + 8 * part))));
        const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + kHeaderDmin + 2 * (g + 8 * part))));
        float* yr = y + i0 + row + 8 * part;
        _mm256_storeu_ps(yr, _mm256_fmadd_ps(_mm256_cvtepi32_ps(S), _mm256_mul_ps(d, dx), _mm256_loadu_ps(yr)));
        float* am = acc_min + row + 8 * part;
        _mm256_store_ps(am, _mm256_fmadd_ps(_mm256_cvtepi32_ps(M), _mm256_mul_ps(dmin, dx), _mm256_load_ps(am)));
      }
    }
    k = sb_end;
  }
  for (int64_t row = 0; row < rows; row += 8)
    _mm256_storeu_ps(y + i0 + row, _mm256_sub_ps(_mm256_loadu_ps(y + i0 + row), _mm256_load_ps(acc_min + row)));
}
}  // namespace

void sparse_down_avx2(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                      int64_t n_active, int64_t i0, int64_t i1, float* y) {
  by_passes<PMOE_DTYPE_Q4_0, sparse_down_avx2_lines>(w, n_out, n_in, act, active, n_active, i0, i1, y);
}

void sparse_down_q4k_avx2(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                          int64_t n_active, int64_t i0, int64_t i1, float* y) {
  by_passes<PMOE_DTYPE_Q4_K, sparse_down_q4k_avx2_lines>(w, n_out, n_in, act, active, n_active, i0, i1, y);
}

namespace {
#define PMOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

/// The AVX-512 kernels' column loop: the listed neurons [k, end) of one block of 32 into `sums`
/// (16-bit, wrapping: w * q_a, w = 0..15; line l's rows 32 r .. 32 r + 31 at 4 l + r, r: low
/// nibbles even/odd bytes, high nibbles even/odd). Returns the block's sum of q_a. qa(n): neuron
/// n's quantized activation.
template <class Qa>
PMOE_AVX512 inline int block_columns_avx512(const Layout& L, const int32_t* active, int64_t k, int64_t end, int64_t i0,
                                            int64_t lines, Qa qa, __m512i* sums, LinesAhead& ahead) {
  const __m512i low4 = _mm512_set1_epi8(15);
  for (int64_t r = 0; r < 4 * lines; ++r) sums[r] = _mm512_setzero_si512();
  int qsum = 0;
  for (int64_t n = k; n < end; ++n) {  // each active column read in one sequential run
    const int q = qa(active[n]);
    qsum += q;
    const __m512i e = _mm512_set1_epi32(low_bytes(q)), o = _mm512_slli_epi16(e, 8);
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
  return qsum;
}

/// Rows i0 .. i0 + 128 lines of the AVX-512 Q4_0 kernel (lines <= kMaxLines).
PMOE_AVX512 void sparse_down_avx512_lines(const Layout& L, int64_t n_out, const uint8_t* act, const int32_t* active,
                                          int64_t n_active, int64_t i0, int64_t lines, float* y) {
  const auto* a = reinterpret_cast<const BlockQ8_0*>(act);
  __m512i sums[4 * kMaxLines];  // 16-bit sums of the block, in L1
  std::fill(y + i0, y + i0 + lines * kNeuronGroup, 0.f);
  LinesAhead ahead(PMOE_DTYPE_Q4_0, L, n_out, active, n_active, i0, lines);
  for (int64_t k = 0; k < n_active;) {
    const int64_t b = active[k] / 32, end = block_end(active, n_active, k, b);
    const int qsum =
        block_columns_avx512(L, active, k, end, i0, lines, [&](int32_t n) { return int(a[b].qs[n - 32 * b]); }, sums, ahead);
    const __m512i off = _mm512_set1_epi16(int16_t(8 * qsum));
    const __m512 da = _mm512_set1_ps(pmoe_fp16_to_fp32(a[b].d));
    for (int64_t r = 0; r < 4 * lines; ++r) {  // 32 rows each, in row order
      ahead.step();                              // 64 bytes of scales per r
      const __m512i t = _mm512_sub_epi16(sums[r], off);
      for (int part = 0; part < 2; ++part) {
        const int64_t row = i0 + 32 * r + 16 * part;
        const __m512i i32 = _mm512_cvtepi16_epi32(part ? _mm512_extracti64x4_epi64(t, 1) : _mm512_extracti64x4_epi64(t, 0));
        const __m512 d = _mm512_mul_ps(
            _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.d + 2 * (b * n_out + row)))), da);
        _mm512_storeu_ps(y + row, _mm512_fmadd_ps(_mm512_cvtepi32_ps(i32), d, _mm512_loadu_ps(y + row)));
      }
    }
    k = end;
  }
}

/// Q4_K sub-block j's (0..7) 6-bit scales and mins of 32 rows, widened to 16 bits, from their
/// header's packed bytes (GGML's get_scale_min_k4 on 32 rows at once: a field holds a byte per row).
PMOE_AVX512 inline __m256i header_field32(const uint8_t* fields, int64_t f) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(fields + 128 * f));
}
PMOE_AVX512 inline void q4k_scales_mins32(const uint8_t* fields, int64_t j, __m512i& sc, __m512i& mn) {
  const auto F = [fields](int64_t f) PMOE_AVX512 { return header_field32(fields, f); };
  const __m256i m63 = _mm256_set1_epi8(63), m15 = _mm256_set1_epi8(15), top2 = _mm256_set1_epi8(0x30);
  __m256i s8, m8;
  if (j < 4) {
    s8 = _mm256_and_si256(F(j), m63), m8 = _mm256_and_si256(F(4 + j), m63);
  } else {
    const __m256i low = F(4 + j);  // bytes 8..11: the low 4 bits of scale and min 4..7
    s8 = _mm256_or_si256(_mm256_and_si256(low, m15), _mm256_and_si256(_mm256_srli_epi16(F(j - 4), 2), top2));
    m8 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low, 4), m15), _mm256_and_si256(_mm256_srli_epi16(F(j), 2), top2));
  }
  sc = _mm512_cvtepu8_epi16(s8), mn = _mm512_cvtepu8_epi16(m8);
}

/// Rows i0 .. i0 + 128 lines of the AVX-512 Q4_K kernel (lines <= kMaxLines): per super-block
/// with an active neuron the rows' exact sums and mins (32-bit), then their fma chains. The 16-bit
/// bounds (|sum (w - 8) q_a| and |8 A| at most 32 * 8 * 127) rely on Q8_K's |q_a| <= 127.
/// Sub-blocks go by in pairs (2 p, 2 p + 1): their 16-bit sums and scales interleaved per row,
/// one vpmaddwd adds both products. The 32-bit values of 32 rows then sit as vpunpck{l,h}wd leave
/// them (rows 0-3, 8-11, 16-19, 24-27, then 4-7, ...) and are put back in order once per super-block.
PMOE_AVX512 void sparse_down_q4k_avx512_lines(const Layout& L, int64_t n_out, const uint8_t* act, const int32_t* active,
                                              int64_t n_active, int64_t i0, int64_t lines, float* y) {
  const auto* a = reinterpret_cast<const BlockQ8K*>(act);
  const int64_t rows = lines * kNeuronGroup;
  __m512i sums[2][4 * kMaxLines];  // the pair's 16-bit sums, as sparse_down_avx512_lines
  alignas(64) int32_t sum[kMaxLines * kNeuronGroup], mins[kMaxLines * kNeuronGroup];
  alignas(64) float acc_min[kMaxLines * kNeuronGroup];
  std::fill(y + i0, y + i0 + rows, 0.f);
  std::fill(acc_min, acc_min + rows, 0.f);
  LinesAhead ahead(PMOE_DTYPE_Q4_K, L, n_out, active, n_active, i0, lines);
  const __m512i lo_rows = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i hi_rows = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int64_t k = 0; k < n_active;) {
    const int64_t sb = active[k] / 256, sb_end = block_end(active, n_active, k, sb, 256);
    std::fill(sum, sum + rows, 0), std::fill(mins, mins + rows, 0);
    auto qa = [&](int32_t i) { return int(a[sb].qs[i - 256 * sb]); };
    for (int64_t n = k; n < sb_end;) {  // the super-block's pairs of sub-blocks with an active neuron
      const int64_t pair = (active[n] - 256 * sb) / 64;
      int qsum[2] = {0, 0};
      for (int h = 0; h < 2; ++h) {
        const int64_t b = 8 * sb + 2 * pair + h, end = block_end(active, sb_end, n, b);
        if (end > n) {
          qsum[h] = block_columns_avx512(L, active, n, end, i0, lines, qa, sums[h], ahead);
        } else {
          for (int64_t r = 0; r < 4 * lines; ++r) sums[h][r] = _mm512_setzero_si512();
        }
        n = end;
      }
      // per row: S_j = sum (w - 8) q_a (16 bits) + 8 A_j, A_j = sum q_a; sum += sc_j S_j, mins += m_j A_j
      const __m512i off0 = _mm512_set1_epi16(int16_t(8 * qsum[0])), off1 = _mm512_set1_epi16(int16_t(8 * qsum[1]));
      const __m512i A = _mm512_set1_epi32(int32_t(uint32_t(uint16_t(qsum[0])) | uint32_t(qsum[1]) << 16));
      const __m512i A8 = _mm512_slli_epi16(A, 3);
      for (int64_t r = 0; r < 4 * lines; ++r) {
        const uint8_t* fields = header(L, n_out, sb, i0 + 32 * r) + kHeaderScales + (32 * r) % kNeuronGroup;
        __m512i sc0, m0, sc1, m1;
        q4k_scales_mins32(fields, 2 * pair, sc0, m0);
        q4k_scales_mins32(fields, 2 * pair + 1, sc1, m1);
        const __m512i t0 = _mm512_sub_epi16(sums[0][r], off0), t1 = _mm512_sub_epi16(sums[1][r], off1);
        int32_t* s = sum + 32 * r;
        int32_t* m = mins + 32 * r;
        for (int half = 0; half < 2; ++half) {
          const __m512i t = half ? _mm512_unpackhi_epi16(t0, t1) : _mm512_unpacklo_epi16(t0, t1);
          const __m512i sc = half ? _mm512_unpackhi_epi16(sc0, sc1) : _mm512_unpacklo_epi16(sc0, sc1);
          const __m512i mn = half ? _mm512_unpackhi_epi16(m0, m1) : _mm512_unpacklo_epi16(m0, m1);
          __m512i v = _mm512_add_epi32(_mm512_load_si512(s + 16 * half), _mm512_madd_epi16(t, sc));
          _mm512_store_si512(s + 16 * half, _mm512_add_epi32(v, _mm512_madd_epi16(sc, A8)));
          _mm512_store_si512(m + 16 * half, _mm512_add_epi32(_mm512_load_si512(m + 16 * half), _mm512_madd_epi16(mn, A)));
        }
      }
    }
    const __m512 dx = _mm512_set1_ps(a[sb].d);
    for (int64_t row = 0; row < rows; row += 16) {
      const uint8_t* h = header(L, n_out, sb, i0 + row);
      const int64_t g = row % kNeuronGroup, base = row / 32 * 32;
      const __m512i idx = row % 32 ? hi_rows : lo_rows;  // rows in order from the pair layout
      const __m512i S = _mm512_permutex2var_epi32(_mm512_load_si512(sum + base), idx, _mm512_load_si512(sum + base + 16));
      const __m512i M = _mm512_permutex2var_epi32(_mm512_load_si512(mins + base), idx, _mm512_load_si512(mins + base + 16));
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + kHeaderD + 2 * g)));
      const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + kHeaderDmin + 2 * g)));
      _mm512_storeu_ps(y + i0 + row, _mm512_fmadd_ps(_mm512_cvtepi32_ps(S), _mm512_mul_ps(d, dx), _mm512_loadu_ps(y + i0 + row)));
      _mm512_store_ps(acc_min + row, _mm512_fmadd_ps(_mm512_cvtepi32_ps(M), _mm512_mul_ps(dmin, dx), _mm512_load_ps(acc_min + row)));
    }
    k = sb_end;
  }
  for (int64_t row = 0; row < rows; row += 16)
    _mm512_storeu_ps(y + i0 + row, _mm512_sub_ps(_mm512_loadu_ps(y + i0 + row), _mm512_load_ps(acc_min + row)));
}
}  // namespace

void sparse_down_avx512(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                        int64_t n_active, int64_t i0, int64_t i1, float* y) {
  by_passes<PMOE_DTYPE_Q4_0, sparse_down_avx512_lines>(w, n_out, n_in, act, active, n_active, i0, i1, y);
}

void sparse_down_q4k_avx512(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                            int64_t n_active, int64_t i0, int64_t i1, float* y) {
  by_passes<PMOE_DTYPE_Q4_K, sparse_down_q4k_avx512_lines>(w, n_out, n_in, act, active, n_active, i0, i1, y);
}

SparseDownFn sparse_down_kernel(uint32_t type) {
  if (type == PMOE_DTYPE_Q4_K)
    return kernel_isa() >= Isa::avx512_vnni ? sparse_down_q4k_avx512
           : kernel_isa() == Isa::avx2      ? sparse_down_q4k_avx2
                                            : sparse_down_q4k_scalar;
  if (type != PMOE_DTYPE_Q4_0) return nullptr;
  switch (kernel_isa()) {
    case Isa::scalar: return sparse_down_scalar;
    case Isa::avx2: return sparse_down_avx2;
    default: return sparse_down_avx512;
  }
}

}  // namespace pmoe::cpu

