// Sparse ReGLU experts (docs/reglu-sparsity.md): `down` re-laid neuron-major, so that a neuron whose
// gate is not positive costs no memory traffic, and the kernel that sums over the active neurons
// only. The result is the dense gemv's, bit for bit: an inactive neuron's quantized activation is
// 0, a block's (super-block's) integer sums do not depend on which of its neurons are visited,
// and the blocks are chained in the dense order with the same fma.
#pragma once

#include "blocks.hpp"
#include "kernels.hpp"

#include <cstdint>

namespace pmoe::cpu {

/// Output rows per group of the neuron-major layout: one neuron's values for 128 rows are 64 bytes,
/// one cache line.
constexpr int64_t kNeuronGroup = 128;

/// Whether a `down` matrix of `type` with `n_out` rows of `n_in` neurons has a neuron-major layout
/// here: Q4_0, and Q4_K where the AVX2 or AVX-512 kernels run (scalar: Q4_K keeps its dense `down`);
/// n_out a multiple of 128 and n_in of the type's block.
bool neuron_major_supported(uint32_t type, int64_t n_out, int64_t n_in);

/// Re-lays a dense `down` (`n_out` rows of n_in neurons) into `dst` (same size, not overlapping
/// `src`); the same quantized values and scales, only moved. Each neuron's 4-bit values for every
/// row, 64 bytes per group of 128 rows: byte j of a group holds row p(j) in its low nibble and row
/// 64 + p(j) in its high one, p(j) = j / 2 for even j and 32 + j / 2 for odd j (the order in
/// which vpmaddubsw's even and odd byte pairs come out as rows in sequence). Before them:
///   Q4_0: the f16 scales, block-major ([block of 32 neurons][row]);
///   Q4_K: each super-block's headers by groups of 128 rows ([super-block][group], 2048 bytes):
///         the rows' f16 d, then their f16 dmin, then byte f (0..11) of their packed 6-bit scales
///         and mins, each field 128 bytes, one per row.
void relayout_neuron_major(uint32_t type, const uint8_t* src, uint8_t* dst, int64_t n_out, int64_t n_in);

/// Bytes of one activation row as type's sparse down kernel takes it: Q8_0 blocks for Q4_0 (the
/// dense gemv's values), Q8_K for Q4_K (as its dense gemv).
uint64_t sparse_act_bytes(uint32_t type, int64_t n_in);
/// The activation row `a` (n_in floats) quantized for type's sparse down kernel.
void prepare_sparse_act(uint32_t type, const float* a, uint8_t* dst, int64_t n_in);

/// y[i] = down_i · a for rows i in [i0, i1) (multiples of kNeuronGroup), summing only neurons in
/// `active` (ascending; every neuron whose activation is not 0 must be listed). `act`: the row
/// from prepare_sparse_act. Same bits as the dense gemv.
using SparseDownFn = void (*)(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act,
                              const int32_t* active, int64_t n_active, int64_t i0, int64_t i1, float* y);

/// The kernel for `type` (Q4_0 or Q4_K, else null) from the set in use (scalar, AVX2 or AVX-512).
SparseDownFn sparse_down_kernel(uint32_t type);
/// Each set's kernel, for the tests: Q4_0 ...
void sparse_down_scalar(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                        int64_t n_active, int64_t i0, int64_t i1, float* y);
void sparse_down_avx2(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                      int64_t n_active, int64_t i0, int64_t i1, float* y);
void sparse_down_avx512(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                        int64_t n_active, int64_t i0, int64_t i1, float* y);
/// ... and Q4_K.
void sparse_down_q4k_scalar(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                            int64_t n_active, int64_t i0, int64_t i1, float* y);
void sparse_down_q4k_avx2(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                          int64_t n_active, int64_t i0, int64_t i1, float* y);
void sparse_down_q4k_avx512(const uint8_t* w, int64_t n_out, int64_t n_in, const uint8_t* act, const int32_t* active,
                            int64_t n_active, int64_t i0, int64_t i1, float* y);

}  // namespace pmoe::cpu
