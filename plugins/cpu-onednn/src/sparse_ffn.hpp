// Sparse ReGLU experts (docs/reglu-sparsity.md): `down` re-laid neuron-major, so that a neuron whose
// gate is not positive costs no memory traffic, and the kernel that sums over the active neurons
// only. The result is the dense gemv's, bit for bit: an inactive neuron's quantized activation is
// 0, a block's integer sum does not depend on which of its neurons are visited, and the blocks
// are chained in the dense order with the same fma.
#pragma once

#include "blocks.hpp"
#include "kernels.hpp"

#include <cstdint>

namespace pmoe::cpu {

/// Output rows per group of the neuron-major layout: one neuron's values for 128 rows are 64 bytes,
/// one cache line.
constexpr int64_t kNeuronGroup = 128;

/// Whether a `down` matrix of `type` with `n_out` rows of `n_in` neurons has a neuron-major layout:
/// Q4_0 (the dense path's gemv order, which the sparse sum reproduces), n_out a multiple of 128.
bool neuron_major_supported(uint32_t type, int64_t n_out, int64_t n_in);

/// Re-lays a dense Q4_0 `down` (`n_out` rows of n_in / 32 blocks) into `dst` (same size, not
/// overlapping `src`): first the f16 scales, block-major ([block][row]), then per neuron its n_out
/// 4-bit values, 64 bytes per group of 128 rows. Byte j of a group holds row p(j) in its low
/// nibble and row 64 + p(j) in its high one, p(j) = j / 2 for even j and 32 + j / 2 for odd j: the
/// order in which vpmaddubsw's even and odd byte pairs come out as rows in sequence. The same
/// quantized values and scales, only moved.
void relayout_neuron_major(uint32_t type, const uint8_t* src, uint8_t* dst, int64_t n_out, int64_t n_in);

/// y[i] = down_i · a for rows i in [i0, i1) (multiples of kNeuronGroup), summing only neurons in
/// `active` (ascending; every neuron whose activation is not 0 must be listed). `a` is the
/// activation row quantized as Q8_0, as the dense gemv takes it. Same bits as that gemv.
using SparseDownFn = void (*)(const uint8_t* w, int64_t n_out, int64_t n_in, const BlockQ8_0* a,
                              const int32_t* active, int64_t n_active, int64_t i0, int64_t i1, float* y);

/// The kernel from the set in use (scalar, AVX2 or AVX-512).
SparseDownFn sparse_down_kernel();
/// Each set's kernel, for the tests.
void sparse_down_scalar(const uint8_t* w, int64_t n_out, int64_t n_in, const BlockQ8_0* a, const int32_t* active,
                        int64_t n_active, int64_t i0, int64_t i1, float* y);
void sparse_down_avx2(const uint8_t* w, int64_t n_out, int64_t n_in, const BlockQ8_0* a, const int32_t* active,
                      int64_t n_active, int64_t i0, int64_t i1, float* y);
void sparse_down_avx512(const uint8_t* w, int64_t n_out, int64_t n_in, const BlockQ8_0* a, const int32_t* active,
                        int64_t n_active, int64_t i0, int64_t i1, float* y);

}  // namespace pmoe::cpu
