// Indexing kernels: index_select / index_add over [outer, size, inner] blocks,
// gather / scatter_add with torch.gather semantics, where, masked_fill, and the
// index range check the ops run before any of them reads through an index.
//
// Forward kernels move elements of any dtype (only the element width matters);
// the accumulating backward kernels (index_add, scatter_add) take f32 or f64.
// Index tensors are i64 and contiguous; outputs are contiguous.
#pragma once

#include <cstdint>

#include "kernels/cuda_stream.h"
#include "kernels/dtype.h"
#include "kernels/layout.h"

namespace vlmc::kernels {

// Where gather reads and scatter_add writes. The index (and the gather output,
// and its gradient) is contiguous with shape x.shape; element i of it pairs
// with the x element at x.offset_of(i) + index[i] * x_dim_stride, because
// x.strides holds the big tensor's strides with 0 at dim.
struct GatherGeometry {
  Layout x;              // the index's shape, the big tensor's strides, 0 at dim
  int dim = 0;           // the indexed dim
  int64_t x_dim_stride = 0;  // the big tensor's stride along dim
  int64_t x_dim_size = 0;    // the big tensor's size along dim: CUDA skips indices outside it
};

namespace cpu {
// first_bad = the lowest linear position i (in layout order) with index[i]
// outside [0, bound), or -1 when every index is in range.
void find_out_of_range(int64_t* first_bad, const int64_t* index, const Layout& layout, int64_t bound);

// x: [outer, size, inner] contiguous, index: [n] -> out: [outer, n, inner].
void index_select(void* out, DType dtype, const void* x, const int64_t* index, int64_t outer,
                  int64_t size, int64_t inner, int64_t n);
// dst: [outer, size, inner] += scattered src: [outer, n, inner] (f32/f64). Each
// dst element is summed by one thread in index order: deterministic.
void index_add(void* dst, DType dtype, const void* src, const int64_t* index, int64_t outer,
               int64_t size, int64_t inner, int64_t n);

// out[i] = x[geometry.x.offset_of(i) + index[i] * x_dim_stride] for i < numel.
void gather(void* out, DType dtype, const void* x, const int64_t* index, const GatherGeometry& geometry);
// The reverse of gather, accumulating (f32/f64): dst at the gathered positions
// += src[i]. Deterministic: one thread owns each line along dim.
void scatter_add(void* dst, DType dtype, const void* src, const int64_t* index,
                 const GatherGeometry& geometry);

// out[i] = cond[i] ? a[i] : b[i]; the three layouts are broadcast to out's shape.
void where(void* out, DType dtype, const uint8_t* cond, const Layout& cond_layout, const void* a,
           const Layout& a_layout, const void* b, const Layout& b_layout);
// out[i] = mask[i] ? value : x[i]; mask's layout is broadcast to x's shape.
void masked_fill(void* out, DType dtype, const void* x, const Layout& x_layout, const uint8_t* mask,
                 const Layout& mask_layout, double value);
}  // namespace cpu

namespace cuda {
// first_bad: two int64 the device can write (the ops pass a deferred-check
// record in mapped host memory), first_bad[0] = -1 on entry (the caller sets
// it). Afterwards first_bad[0] = the lowest bad position (as the CPU form) and
// first_bad[1] = the index found there; both stay as they were when all are in
// range. Nothing is read back here.
//
// The kernels below skip an index outside [0, size): gather and index_select
// write zero for it, index_add and scatter_add add nothing, so that ops may
// launch them before the range check has been read.
void find_out_of_range(int64_t* first_bad, const int64_t* index, const Layout& layout, int64_t bound,
                       cudaStream_t stream);
void index_select(void* out, DType dtype, const void* x, const int64_t* index, int64_t outer,
                  int64_t size, int64_t inner, int64_t n, cudaStream_t stream);
// atomicAdd: the summation order of repeated indices is not fixed.
void index_add(void* dst, DType dtype, const void* src, const int64_t* index, int64_t outer,
               int64_t size, int64_t inner, int64_t n, cudaStream_t stream);
void gather(void* out, DType dtype, const void* x, const int64_t* index, const GatherGeometry& geometry,
            cudaStream_t stream);
// atomicAdd: the summation order of repeated indices is not fixed.
void scatter_add(void* dst, DType dtype, const void* src, const int64_t* index,
                 const GatherGeometry& geometry, cudaStream_t stream);
void where(void* out, DType dtype, const uint8_t* cond, const Layout& cond_layout, const void* a,
           const Layout& a_layout, const void* b, const Layout& b_layout, cudaStream_t stream);
void masked_fill(void* out, DType dtype, const void* x, const Layout& x_layout, const uint8_t* mask,
                 const Layout& mask_layout, double value, cudaStream_t stream);
}  // namespace cuda

}  // namespace vlmc::kernels
