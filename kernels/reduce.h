// Reduction kernels. The input is contiguous and viewed as [outer, r, inner];
// each reduces the middle dim to an output [outer, inner] (contiguous). Any
// reduction over several dims is brought to this form by the caller (permute
// the reduced dims to the end and make it contiguous: inner = 1).
//
// Accuracy of sums: the CPU accumulates f32 in double (rounded once at the
// end); the CUDA kernels accumulate in T, compensated (Kahan) within a thread
// and by a tree (warp shuffles) across threads, whose error grows like
// log2(r) * eps rather than r * eps.
//
// max follows torch.max(dim): the first index of the maximum on ties, and NaN
// counts as larger than every number (the first NaN wins).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda_stream.h"
#include "kernels/dtype.h"

namespace vlmc::kernels {

// True when candidate (v, i) should replace the current best (bv, bi) in a max
// reduction. Independent of visiting order, so parallel reductions agree with
// the sequential scan: larger wins, NaN beats numbers, ties go to the lower index.
template <typename T>
VLMC_HOST_DEVICE inline bool max_better(T v, int64_t i, T bv, int64_t bi) {
  const bool v_nan = v != v, b_nan = bv != bv;
  if (v_nan || b_nan) return v_nan && (!b_nan || i < bi);
  return v > bv || (v == bv && i < bi);
}

namespace cpu {
// out[o, j] = scale * sum_k x[o, k, j]  (scale = 1/r gives the mean).
template <typename T>
void sum(T* out, const T* x, int64_t outer, int64_t r, int64_t inner, double scale);

// out[j] = sum_k x[k, j] over x [rows, cols], each column summed down the rows in
// row order, in double, for any cols (sum's cols == 1 path sums in lanes
// instead): linear_gelu's bias gradient.
template <typename T>
void column_sums(T* out, const T* x, int64_t rows, int64_t cols);

// values[o, j] = max_k x[o, k, j]; indices[o, j] = that k (indices may be null). r >= 1.
template <typename T>
void max(T* values, int64_t* indices, const T* x, int64_t outer, int64_t r, int64_t inner);

// autocast's biased-linear backward in one pass over g [rows, cols] (f32):
// rounded [rows, cols] = g rounded to bf16 (nearest even), the GEMMs'
// operand, as bits (R = uint16_t) or as f32 values (R = float, for the f32
// GEMM; kernels/dtype.h rounded_to_bf16), and col_sums [cols] = Σ_rows g, the
// bias gradient, summed as sum(g, rows, cols) sums them (down the rows in
// order, in double): the same bits, one read of g instead of two.
template <typename R>
void round_bf16_with_column_sums(R* rounded, float* col_sums, const float* g, int64_t rows, int64_t cols);

// The backward of max over the middle dim: grad_x = 0 except
// grad_x[o, indices[o, j], j] = grad[o, j].
template <typename T>
void scatter_reduced(T* grad_x, const T* grad, const int64_t* indices, int64_t outer, int64_t r,
                     int64_t inner);
}  // namespace cpu

namespace cuda {
// Scratch bytes sum / max need for [outer, r, inner] of elem_size-byte values
// on the current device: the partial results of a long r split over the GPU
// when the output alone would not fill it, 0 otherwise. The op allocates them
// (on the kernel's device, through the caching allocator so that its peak
// counts them) and passes them as workspace (null when 0).
size_t sum_workspace_bytes(int64_t outer, int64_t r, int64_t inner, size_t elem_size);
size_t max_workspace_bytes(int64_t outer, int64_t r, int64_t inner, size_t elem_size);

template <typename T>
void sum(T* out, const T* x, int64_t outer, int64_t r, int64_t inner, double scale, void* workspace,
         cudaStream_t stream);
template <typename T>
void max(T* values, int64_t* indices, const T* x, int64_t outer, int64_t r, int64_t inner,
         void* workspace, cudaStream_t stream);
template <typename T>
void scatter_reduced(T* grad_x, const T* grad, const int64_t* indices, int64_t outer, int64_t r,
                     int64_t inner, cudaStream_t stream);
}  // namespace cuda

}  // namespace vlmc::kernels
