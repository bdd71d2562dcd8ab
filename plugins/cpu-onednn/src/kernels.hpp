// Vector kernels of the CPU backend: products of weight rows of any supported type with activation
// rows, row dequantization, and the quantization of activations.
//
// Quantized weights are multiplied with activations quantized first, as ggml's CPU backend does:
// Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants and IQ4_XS. The
// integer dot is the fast path and it reproduces llama.cpp's numbers.
//
// One kernel shape serves decode and prefill: a tile is one weight row against up to kTileCols
// activation rows. The weight block is decoded once and used for every column.
//
// Every kernel sums exactly as llama.cpp's CPU backend does on x86 (docs/quant-types.md): the
// same integer partial sums, converted and scaled in the same order, so the logits agree bit for
// bit wherever the rest of the graph does, and the scalar, AVX2 and AVX-512 sets give identical
// results. Random-weight MoE models are chaotic (a last-bit difference can flip an expert), so
// this is what makes the comparison with llama.cpp meaningful.
#pragma once

#include "blocks.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <type_traits>

namespace pmoe::cpu {

/// Kernel sets, each needing the CPU features of the one before and more.
enum class Isa { scalar, avx2, avx512_vnni, avx512_vbmi };
const char* isa_name(Isa isa);
std::optional<Isa> parse_isa(std::string_view name);

/// The kernel set in use: the best the CPU runs, capped by $PMOE_CPU_MAX_ISA when set (tests and
/// A/B runs use the cap to cover every set on one machine). Fixed for the life of the process.
Isa kernel_isa();

/// Activation rows prepared for one weight type, at most this many per kernel call.
constexpr int kTileCols = 4;

/// Which of llama.cpp's summation orders a product follows. Tensors of Q4_0, IQ4_NL, Q4_K and Q2_K
/// with a multiple of 8 rows are repacked by llama.cpp: one activation row then goes through its
/// gemv, and the first rows of a batch of 4 or more (all but n % 4) through its gemm; experts
/// (MUL_MAT_ID) always take the gemv. Every other type and shape uses vec_dot.
enum class Order : uint8_t { vec_dot, gemv, gemm };

/// The order for `weight_type` with `rows` output rows: vec_dot, or gemv for a repacked tensor
/// (the caller switches to gemm for batch columns where llama.cpp does).
Order sum_order(uint32_t weight_type, int64_t rows);

/// out[c] = W_row · X_c for c < nc (1 <= nc <= kTileCols): `w` one weight row of n values, `x` the
/// first of nc prepared activation rows `x_stride` bytes apart, summed in `order`.
using TileFn = void (*)(const uint8_t* w, const uint8_t* x, uint64_t x_stride, int nc, int64_t n, Order order,
                        float* out);

/// The kernel for `weight_type` summing in `order`, from the kernel set in use, or nullptr for a
/// type no set can multiply. A set's table answers nullptr for what it leaves to the set below
/// (rare vec_dot shapes with their own order), so no kernel forwards calls itself.
TileFn tile_kernel(uint32_t weight_type, Order order);

/// Two weight rows at once, `w_row` bytes apart: out[c] = W_row0 · X_c, out[kTileCols + c] =
/// W_row1 · X_c, same bits as two TileFn calls. Types whose single-row kernel is bound by loading
/// and converting activations get one: each activation block then serves both rows.
using PairTileFn = void (*)(const uint8_t* w, uint64_t w_row, const uint8_t* x, uint64_t x_stride, int nc, int64_t n,
                            Order order, float* out);

/// The two-row kernel for `weight_type` and `order` in the kernel set in use, or nullptr (one row
/// at a time).
PairTileFn pair_tile_kernel(uint32_t weight_type, Order order);

/// Sixteen weight rows against one prepared activation row (decode): out[k] = W_k · X, row k at
/// byte offset off[k] from `w`, same bits as TileFn per row. For the types llama.cpp repacks, whose
/// per-row chains then run side by side in SIMD lanes instead of being reduced block by block.
/// `next_off` (or null): the 16 rows the caller multiplies next, prefetched during this call
/// unless both are consecutive rows (then the region after these is).
using Rows16Fn = void (*)(const uint8_t* w, const int32_t* off, const int32_t* next_off, const uint8_t* x, int64_t n,
                          float* out);

/// The 16-row kernel for `weight_type` in `order` from the kernel set in use, or nullptr.
Rows16Fn rows16_kernel(uint32_t weight_type, Order order);

/// Sixteen weight rows (at byte offsets off[k] from `w`) against nc prepared activation rows
/// (1 <= nc <= kTileCols, `x_stride` bytes apart): out[16 c + k] = W_k · X_c, same bits as TileFn
/// per row in `order` (a prefill tile: each weight block is decoded once for all the columns).
using Rows16TileFn = void (*)(const uint8_t* w, const int32_t* off, const uint8_t* x, uint64_t x_stride, int nc,
                              int64_t n, float* out);

/// The 16-row tile kernel for `weight_type` in `order` from the kernel set in use, or nullptr
/// (AVX2 has one for Q4_0 and IQ4_NL, whose one-row tiles are bound by reducing every block).
Rows16TileFn rows16_tile_kernel(uint32_t weight_type, Order order);

/// Bytes of one activation row of `n` values prepared for `weight_type`'s kernel in `order`, for
/// kernel set `isa`: ggml's Q8_0, Q8_1 or Q8_K blocks, except that AVX-512 reads repacked
/// Q4_0/IQ4_NL (gemv, gemm) against GroupQ8x4 groups (then the n/32 % 4 last blocks as Q8_0)
/// and Q8_0 weights against BlockQ8U (the same values, stored for VNNI).
/// 0 when the kernel reads the floats as they are (F32, F16 weights). BF16 weights get bf16
/// activations, as in ggml, which is also what oneDNN's bf16 matmul takes.
uint64_t prepared_row_bytes(uint32_t weight_type, int64_t n, Order order, Isa isa = kernel_isa());

/// Convert `n` floats into prepared_row_bytes(weight_type, n, order, isa) bytes at `dst`.
void prepare_row(uint32_t weight_type, Order order, const float* x, uint8_t* dst, int64_t n, Isa isa = kernel_isa());

/// Dequantize one row of `n` values of `type` to floats.
void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n);

/// Activation quantizers, bit-identical to ggml's on x86 (round half to even):
/// Q8_0/Q8_1: d = amax/127 (f16), q = round(x * 127/amax); Q8_1 adds s = f16(d * sum(q)).
/// Q8_K: per 256, the value of largest magnitude `max` gives iscale = -127/max, q = min(127,
/// round(iscale * x)), d = 1/iscale (float), and bsums the sums of each 16 q.
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n);
void quantize_row_q8_1(const float* x, BlockQ8_1* y, int64_t n);
void quantize_row_q8_k(const float* x, BlockQ8K* y, int64_t n);

/// exp of 16 floats as ggml's softmax computes it on an AVX-512 build (ggml_v_expf: a polynomial
/// within 1.5 ulp of expf, 0 below -103.97, inf above 88.38), bit for bit on every kernel set.
void expf16(const float* x, float* y);

/// Sparse ReGLU's lists (docs/reglu-sparsity.md). A neuron is active where its gate is not <= 0
/// (positive, or NaN: the dense path passes a NaN on). `list` needs room for n_ff + 16 entries
/// (the vector kernels store whole registers); both return the count listed, in ascending order.
/// active_neurons: the neurons active for any of R tokens, their gate rows `stride` floats apart.
int64_t active_neurons(const float* gate, int64_t R, int64_t stride, int64_t n_ff, int32_t* list);
/// reglu_listed: one token's g = relu(g) * u with inactive neurons exactly +0 (their u not used:
/// rows of a sparse `up` not computed hold stale values), and its active neurons.
int64_t reglu_listed(float* g, const float* u, int64_t n_ff, int32_t* list);
/// ... and their AVX-512 kernels (the others use the scalar loops).
int64_t active_neurons_avx512(const float* gate, int64_t R, int64_t stride, int64_t n_ff, int32_t* list);
int64_t reglu_listed_avx512(float* g, const float* u, int64_t n_ff, int32_t* list);

/// Work memory of attend(): w n_keys + 16 floats, lanes 64 * hd floats, wide hd doubles.
struct AttendScratch {
  float* w;
  float* lanes;
  double* wide;
};
/// One query head's attention as llama.cpp computes it without flash attention: the scores
/// q . k_j of keys j0..p (vec_dot order: llamafile passes over the non-contiguous permuted q) times
/// `scale`; the softmax over blocks of 16 keys with ggml's exp, keys outside j0..p exact zeros; the
/// sum of the v rows weighted by it, in tinyBLAS order for a query of a batch (`batch`) and in
/// vec_dot order over llama.cpp's `n_vec` (padded) keys for a single one. k and v rows are `ks`
/// and `vs` floats apart; `hd` values are used from each.
using AttendFn = void (*)(const float* q, const float* k, int64_t ks, const float* v, int64_t vs, int64_t hd, int64_t j0,
                          int64_t p, float scale, bool batch, int64_t n_vec, float* out, const AttendScratch& s);
AttendFn attend_kernel();
void attend_scalar(const float* q, const float* k, int64_t ks, const float* v, int64_t vs, int64_t hd, int64_t j0,
                   int64_t p, float scale, bool batch, int64_t n_vec, float* out, const AttendScratch& s);
void attend_avx2(const float* q, const float* k, int64_t ks, const float* v, int64_t vs, int64_t hd, int64_t j0,
                 int64_t p, float scale, bool batch, int64_t n_vec, float* out, const AttendScratch& s);
void attend_avx512(const float* q, const float* k, int64_t ks, const float* v, int64_t vs, int64_t hd, int64_t j0,
                   int64_t p, float scale, bool batch, int64_t n_vec, float* out, const AttendScratch& s);
void expf16_avx2(const float* x, float* y);

// ---- per-ISA kernel tables (kernels_*.cpp) ------------------------------------------------------
/// The tile kernel of each set for a type; nullptr where the set has none (the next lower set's
/// kernel is used then).
TileFn scalar_tile(uint32_t type);
TileFn avx2_tile(uint32_t type, Order order);
TileFn avx512_tile(uint32_t type, Order order);
PairTileFn avx512_pair_tile(uint32_t type, Order order);
Rows16Fn avx2_rows16(uint32_t type, Order order);
Rows16TileFn avx2_rows16_tile(uint32_t type, Order order);
Rows16Fn avx512_rows16(uint32_t type, Order order);

// ---- for the kernel files -------------------------------------------------------------------------
/// f(std::integral_constant<int, NC>{}) with NC = nc: a run-time column count (1..kTileCols) made
/// a compile-time one for the kernel templates.
template <class F>
void with_cols(int nc, F&& f) {
  static_assert(kTileCols == 4, "with_cols covers 1..4 columns");
  switch (nc) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    default: return f(std::integral_constant<int, 4>{});
  }
}
/// K<NC>::run(w, x, x_stride, n, order, out) for NC = 1..kTileCols; by_cols<K> picks it from nc.
using FixedTileFn = void (*)(const uint8_t* w, const uint8_t* x, uint64_t x_stride, int64_t n, Order order, float* out);
template <template <int> class K>
void tile_by_cols(const uint8_t* w, const uint8_t* x, uint64_t xs, int nc, int64_t n, Order order, float* out) {
  with_cols(nc, [&](auto c) { K<c>::run(w, x, xs, n, order, out); });
}
template <template <int> class K>
constexpr TileFn by_cols = tile_by_cols<K>;

/// ggml's hsum_float_8: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
inline float hsum8(const float a[8]) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }
/// _mm512_reduce_add_ps as GCC builds it: halves added down to 4 lanes, then (0 + 2) + (1 + 3).
inline float hsum16(const float a[16]) {
  float t[4];
  for (int i = 0; i < 4; ++i) t[i] = (a[i + 12] + a[i + 4]) + (a[i + 8] + a[i]);
  return (t[0] + t[2]) + (t[1] + t[3]);
}

}  // namespace pmoe::cpu
