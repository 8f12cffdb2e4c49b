// CUDA reductions over the middle dim of [outer, r, inner] (see kernels/reduce.h).
//
// Two kernel shapes:
//   rows    (inner == 1): a block (or, for short rows, a warp) reduces one row;
//           threads stride along the row, then warp shuffles and one shared-
//           memory step combine the block.
//   columns (inner > 1):  a 32 x 8 block covers 32 adjacent inner columns
//           (coalesced loads) and 8 strips of r, combined through shared memory.
// When the output has too few rows/columns to fill the GPU and r is long, r is
// split into chunks over a grid dimension; each chunk writes a partial result
// and a second launch of the same kernels reduces the partials. The partials
// live in the caller's workspace (sum_workspace_bytes / max_workspace_bytes),
// which the op takes from the caching allocator like any tensor.
//
// Accuracy: sums accumulate in T (f32 for f32). Each thread adds its strided
// run of elements with Kahan compensation, and threads, warps and chunks are
// combined by a tree, so the error is about (2 + log2 r) * eps * sum|x| rather
// than the r * eps * sum|x| of a naive loop: an expected ~1e-6 relative for millions of
// values (tests/cuda/test_cuda_reduce.cpp checks 1e-5 against an f64 sum of 4M
// values; passed on an H200, 2026-12-04). The CPU kernels accumulate in double
// and are the reference. No atomics: the result is designed to be the same on
// every run (not checked on a GPU).
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_ops
//   build/tests/vlmc_cuda_tests "[reduce]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_ops --cuda-only [--quick]   # validates each version, then times it
#include <algorithm>

#include "kernels/cuda/check.h"
#include "kernels/cuda/scratch.h"
#include "kernels/reduce.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kRowBlock = 256;      // threads per row in the block-per-row kernels
constexpr int kWarpsPerBlock = 8;   // rows per block in the warp-per-row kernels
constexpr int kColX = 32, kColY = 8;
constexpr int64_t kShortRow = 1024;     // rows up to this long get a warp, not a block
constexpr int64_t kMinChunk = 4096;     // never split r into chunks shorter than this
constexpr unsigned kMaxGridY = 65535;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks that keep every SM busy (a few waves), from the current device.
int64_t target_blocks() {
  int device = 0, sms = 0;
  VLMC_CUDA_CHECK(cudaGetDevice(&device));
  VLMC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return int64_t(std::max(sms, 1)) * 4;
}

// How many chunks to split r into, given the blocks the unsplit launch would have.
int64_t choose_splits(int64_t r, int64_t blocks) {
  const int64_t target = target_blocks();
  if (blocks >= target || r < 2 * kMinChunk) return 1;
  const int64_t by_fill = ceil_div(target, blocks);
  const int64_t by_length = r / kMinChunk;
  return std::max<int64_t>(1, std::min<int64_t>({by_fill, by_length, int64_t(kMaxGridY)}));
}

// One pass over [outer, r, inner] cuts r into `splits` chunks (1: uncut). A cut
// pass writes one partial per chunk, which the next pass reduces: rows' partials
// are [outer, splits] (reduced as [outer, splits, 1]), columns' [splits, outer *
// inner] (reduced as [1, splits, outer * inner]).
struct Pass {
  int64_t splits;
  int64_t next_outer, next_inner;
};

Pass plan_pass(int64_t outer, int64_t r, int64_t inner) {
  if (inner == 1) return {choose_splits(r, outer), outer, 1};
  return {choose_splits(r, ceil_div(inner, kColX) * outer), 1, outer * inner};
}

// Workspace bytes for the partials of every cut pass, taken in the order the
// launches below take them: per pass the values (elem_size bytes each), then
// for max their indices.
size_t partials_bytes(int64_t outer, int64_t r, int64_t inner, size_t elem_size, bool with_indices) {
  Scratch measure(nullptr);
  for (;;) {
    const Pass p = plan_pass(outer, r, inner);
    if (p.splits == 1) return measure.used();
    const int64_t count = p.splits * outer * inner;
    measure.take<char>(count * static_cast<int64_t>(elem_size));
    if (with_indices) measure.take<int64_t>(count);
    outer = p.next_outer;
    r = p.splits;
    inner = p.next_inner;
  }
}

// ---- sum ---------------------------------------------------------------------------

// Compensated running sum for one thread's sequential run.
template <typename T>
struct Kahan {
  T sum = 0, carry = 0;
  __device__ void add(T v) {
    const T y = v - carry;
    const T t = sum + y;
    // Once the sum is infinite the carry would turn it into NaN (inf - inf); drop it.
    carry = isfinite(t) ? (t - sum) - y : T(0);
    sum = t;
  }
};

template <typename T>
__device__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block; the result is valid in thread 0.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T warp_totals[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x >> 5) ? warp_totals[lane] : T(0);
    v = warp_sum(v);
  }
  return v;
}

// Rows of length r; chunk c = blockIdx.y covers [c*chunk, (c+1)*chunk).
// dst[o * splits + c] = scale * partial sum (splits = gridDim.y).
template <typename T>
__global__ void sum_rows_block_kernel(T* dst, const T* x, int64_t outer, int64_t r, int64_t chunk,
                                      T scale) {
  const int64_t splits = gridDim.y, c = blockIdx.y;
  const int64_t k0 = c * chunk, k1 = min(r, k0 + chunk);
  for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    const T* row = x + o * r;
    Kahan<T> run;
    for (int64_t k = k0 + threadIdx.x; k < k1; k += blockDim.x) run.add(row[k]);
    const T acc = block_sum(run.sum);
    if (threadIdx.x == 0) dst[o * splits + c] = acc * scale;
    __syncthreads();  // warp_totals is reused by the next row
  }
}

// Short rows, never split: one warp per row.
template <typename T>
__global__ void sum_rows_warp_kernel(T* dst, const T* x, int64_t outer, int64_t r, T scale) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t o = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); o < outer; o += warps) {
    const T* row = x + o * r;
    Kahan<T> run;
    for (int64_t k = lane; k < r; k += 32) run.add(row[k]);
    const T acc = warp_sum(run.sum);
    if (lane == 0) dst[o] = acc * scale;
  }
}

// [outer, r, inner]; block (32, 8) over inner columns blockIdx.x*32.., outer rows
// blockIdx.y (grid-stride), chunk blockIdx.z of r.
// dst[(c * outer + o) * inner + j] = scale * partial sum.
template <typename T>
__global__ void sum_columns_kernel(T* dst, const T* x, int64_t outer, int64_t r, int64_t inner,
                                   int64_t chunk, T scale) {
  __shared__ T strips[kColY][kColX + 1];
  const int64_t j = int64_t(blockIdx.x) * kColX + threadIdx.x;
  const int64_t c = blockIdx.z, k0 = c * chunk, k1 = min(r, k0 + chunk);
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    Kahan<T> run;
    if (j < inner)
      for (int64_t k = k0 + threadIdx.y; k < k1; k += kColY) run.add(x[(o * r + k) * inner + j]);
    strips[threadIdx.y][threadIdx.x] = run.sum;
    __syncthreads();
    if (threadIdx.y == 0 && j < inner) {
      T total = 0;
      for (int s = 0; s < kColY; ++s) total += strips[s][threadIdx.x];
      dst[(c * outer + o) * inner + j] = total * scale;
    }
    __syncthreads();
  }
}

template <typename T>
void launch_sum(T* out, const T* x, int64_t outer, int64_t r, int64_t inner, T scale, Scratch& ws,
                cudaStream_t stream);

template <typename T>
void launch_sum_rows(T* out, const T* x, int64_t outer, int64_t r, T scale, Scratch& ws,
                     cudaStream_t stream) {
  const int64_t splits = plan_pass(outer, r, 1).splits;
  if (splits == 1 && r <= kShortRow) {
    const unsigned grid = static_cast<unsigned>(
        std::min<int64_t>(ceil_div(outer, kWarpsPerBlock), 65535LL * 8));
    sum_rows_warp_kernel<T><<<grid, kWarpsPerBlock * 32, 0, stream>>>(out, x, outer, r, scale);
    VLMC_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t chunk = ceil_div(r, splits);
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(outer, 65535LL * 8)),
                  static_cast<unsigned>(splits));
  if (splits == 1) {
    sum_rows_block_kernel<T><<<grid, kRowBlock, 0, stream>>>(out, x, outer, r, chunk, scale);
    VLMC_CUDA_CHECK_LAUNCH();
    return;
  }
  T* partial = ws.take<T>(outer * splits);  // [outer, splits]
  sum_rows_block_kernel<T><<<grid, kRowBlock, 0, stream>>>(partial, x, outer, r, chunk, T(1));
  VLMC_CUDA_CHECK_LAUNCH();
  launch_sum_rows<T>(out, partial, outer, splits, scale, ws, stream);
}

template <typename T>
void launch_sum_columns(T* out, const T* x, int64_t outer, int64_t r, int64_t inner, T scale,
                        Scratch& ws, cudaStream_t stream) {
  const int64_t col_blocks = ceil_div(inner, kColX);
  const int64_t splits = plan_pass(outer, r, inner).splits;
  const int64_t chunk = ceil_div(r, splits);
  const dim3 block(kColX, kColY);
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(col_blocks, 0x7fffffffLL)),
                  static_cast<unsigned>(std::min<int64_t>(outer, kMaxGridY)),
                  static_cast<unsigned>(splits));
  if (splits == 1) {
    sum_columns_kernel<T><<<grid, block, 0, stream>>>(out, x, outer, r, inner, chunk, scale);
    VLMC_CUDA_CHECK_LAUNCH();
    return;
  }
  T* partial = ws.take<T>(splits * outer * inner);  // [splits, outer * inner]
  sum_columns_kernel<T><<<grid, block, 0, stream>>>(partial, x, outer, r, inner, chunk, T(1));
  VLMC_CUDA_CHECK_LAUNCH();
  launch_sum<T>(out, partial, 1, splits, outer * inner, scale, ws, stream);
}

template <typename T>
void launch_sum(T* out, const T* x, int64_t outer, int64_t r, int64_t inner, T scale, Scratch& ws,
                cudaStream_t stream) {
  if (inner == 1) {
    launch_sum_rows(out, x, outer, r, scale, ws, stream);
  } else {
    launch_sum_columns(out, x, outer, r, inner, scale, ws, stream);
  }
}

// ---- max ----------------------------------------------------------------------------
// Candidates are (value, index) pairs combined with max_better, which is
// order-independent, so any tree gives the sequential scan's answer. The index
// of an element is its k, or idx[k] when reducing partials (which carry the
// original k).

template <typename T>
struct Best {
  T v;
  int64_t i;  // -1: no candidate yet
};

template <typename T>
__device__ void consider(Best<T>& b, T v, int64_t i) {
  if (i < 0) return;  // an empty partial
  if (b.i < 0 || max_better(v, i, b.v, b.i)) {
    b.v = v;
    b.i = i;
  }
}

template <typename T>
__device__ Best<T> warp_max(Best<T> b) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const T v = __shfl_down_sync(0xffffffffu, b.v, offset);
    const long long i = __shfl_down_sync(0xffffffffu, static_cast<long long>(b.i), offset);
    consider(b, v, static_cast<int64_t>(i));
  }
  return b;
}

// Result valid in thread 0.
template <typename T>
__device__ Best<T> block_max(Best<T> b) {
  __shared__ T warp_v[32];
  __shared__ int64_t warp_i[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  b = warp_max(b);
  if (lane == 0) {
    warp_v[warp] = b.v;
    warp_i[warp] = b.i;
  }
  __syncthreads();
  if (warp == 0) {
    b = lane < int(blockDim.x >> 5) ? Best<T>{warp_v[lane], warp_i[lane]} : Best<T>{T(0), -1};
    b = warp_max(b);
  }
  return b;
}

// Rows (inner == 1), chunk blockIdx.y; writes dv/di[o * splits + c].
template <typename T>
__global__ void max_rows_block_kernel(T* dv, int64_t* di, const T* x, const int64_t* xi,
                                      int64_t outer, int64_t r, int64_t chunk) {
  const int64_t splits = gridDim.y, c = blockIdx.y;
  const int64_t k0 = c * chunk, k1 = min(r, k0 + chunk);
  for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    Best<T> b{T(0), -1};
    for (int64_t k = k0 + threadIdx.x; k < k1; k += blockDim.x)
      consider(b, x[o * r + k], xi ? xi[o * r + k] : k);
    b = block_max(b);
    if (threadIdx.x == 0) {
      dv[o * splits + c] = b.v;
      if (di) di[o * splits + c] = b.i;
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void max_rows_warp_kernel(T* dv, int64_t* di, const T* x, const int64_t* xi,
                                     int64_t outer, int64_t r) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t o = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); o < outer; o += warps) {
    Best<T> b{T(0), -1};
    for (int64_t k = lane; k < r; k += 32) consider(b, x[o * r + k], xi ? xi[o * r + k] : k);
    b = warp_max(b);
    if (lane == 0) {
      dv[o] = b.v;
      if (di) di[o] = b.i;
    }
  }
}

// Columns; writes dv/di[(c * outer + o) * inner + j].
template <typename T>
__global__ void max_columns_kernel(T* dv, int64_t* di, const T* x, const int64_t* xi, int64_t outer,
                                   int64_t r, int64_t inner, int64_t chunk) {
  __shared__ T strip_v[kColY][kColX + 1];
  __shared__ int64_t strip_i[kColY][kColX + 1];
  const int64_t j = int64_t(blockIdx.x) * kColX + threadIdx.x;
  const int64_t c = blockIdx.z, k0 = c * chunk, k1 = min(r, k0 + chunk);
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    Best<T> b{T(0), -1};
    if (j < inner)
      for (int64_t k = k0 + threadIdx.y; k < k1; k += kColY) {
        const int64_t at = (o * r + k) * inner + j;
        consider(b, x[at], xi ? xi[at] : k);
      }
    strip_v[threadIdx.y][threadIdx.x] = b.v;
    strip_i[threadIdx.y][threadIdx.x] = b.i;
    __syncthreads();
    if (threadIdx.y == 0 && j < inner) {
      Best<T> total{T(0), -1};
      for (int s = 0; s < kColY; ++s)
        consider(total, strip_v[s][threadIdx.x], strip_i[s][threadIdx.x]);
      dv[(c * outer + o) * inner + j] = total.v;
      if (di) di[(c * outer + o) * inner + j] = total.i;
    }
    __syncthreads();
  }
}

template <typename T>
void launch_max(T* values, int64_t* indices, const T* x, const int64_t* xi, int64_t outer,
                int64_t r, int64_t inner, Scratch& ws, cudaStream_t stream) {
  const bool rows = inner == 1;
  const int64_t splits = plan_pass(outer, r, inner).splits;
  if (rows && splits == 1 && r <= kShortRow) {
    const unsigned grid = static_cast<unsigned>(
        std::min<int64_t>(ceil_div(outer, kWarpsPerBlock), 65535LL * 8));
    max_rows_warp_kernel<T><<<grid, kWarpsPerBlock * 32, 0, stream>>>(values, indices, x, xi, outer, r);
    VLMC_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t chunk = ceil_div(r, splits);
  // Partials always carry indices: the second pass needs them even when the caller does not.
  T* pv = values;
  int64_t* pi = indices;
  if (splits > 1) {
    pv = ws.take<T>(splits * outer * inner);
    pi = ws.take<int64_t>(splits * outer * inner);
  }
  if (rows) {
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>(outer, 65535LL * 8)),
                    static_cast<unsigned>(splits));
    max_rows_block_kernel<T><<<grid, kRowBlock, 0, stream>>>(pv, pi, x, xi, outer, r, chunk);
    VLMC_CUDA_CHECK_LAUNCH();
  } else {
    const dim3 block(kColX, kColY);
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>(ceil_div(inner, kColX), 0x7fffffffLL)),
                    static_cast<unsigned>(std::min<int64_t>(outer, kMaxGridY)),
                    static_cast<unsigned>(splits));
    max_columns_kernel<T><<<grid, block, 0, stream>>>(pv, pi, x, xi, outer, r, inner, chunk);
    VLMC_CUDA_CHECK_LAUNCH();
  }
  if (splits > 1) {
    // Rows: partials are [outer, splits]; columns: [splits, outer * inner].
    if (rows) {
      launch_max<T>(values, indices, pv, pi, outer, splits, 1, ws, stream);
    } else {
      launch_max<T>(values, indices, pv, pi, 1, splits, outer * inner, ws, stream);
    }
  }
}

// ---- backward of max ----------------------------------------------------------------

template <typename T>
__global__ void scatter_kernel(T* grad_x, const T* grad, const int64_t* indices, int64_t r,
                               int64_t inner, int64_t n) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, j = t % inner;
    grad_x[(o * r + indices[t]) * inner + j] = grad[t];
  }
}

}  // namespace

size_t sum_workspace_bytes(int64_t outer, int64_t r, int64_t inner, size_t elem_size) {
  if (outer * inner == 0) return 0;
  return partials_bytes(outer, r, inner, elem_size, false);
}

size_t max_workspace_bytes(int64_t outer, int64_t r, int64_t inner, size_t elem_size) {
  if (outer * inner == 0 || r == 0) return 0;
  return partials_bytes(outer, r, inner, elem_size, true);
}

template <typename T>
void sum(T* out, const T* x, int64_t outer, int64_t r, int64_t inner, double scale, void* workspace,
         cudaStream_t stream) {
  if (outer * inner == 0) return;
  // r == 0 needs no special case: every thread adds nothing, and 0 * scale is 0
  // for a sum and NaN (scale = inf) for the mean of nothing, as in PyTorch.
  Scratch ws(workspace);
  launch_sum<T>(out, x, outer, r, inner, static_cast<T>(scale), ws, stream);
}

template <typename T>
void max(T* values, int64_t* indices, const T* x, int64_t outer, int64_t r, int64_t inner,
         void* workspace, cudaStream_t stream) {
  if (outer * inner == 0 || r == 0) return;
  Scratch ws(workspace);
  launch_max<T>(values, indices, x, nullptr, outer, r, inner, ws, stream);
}

template <typename T>
void scatter_reduced(T* grad_x, const T* grad, const int64_t* indices, int64_t outer, int64_t r,
                     int64_t inner, cudaStream_t stream) {
  const int64_t n = outer * inner;
  if (n * r == 0) return;
  VLMC_CUDA_CHECK(cudaMemsetAsync(grad_x, 0, sizeof(T) * n * r, stream));
  scatter_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(grad_x, grad, indices, r, inner, n);
  VLMC_CUDA_CHECK_LAUNCH();
}

#define VLMC_INSTANTIATE(T)                                                                     \
  template void sum<T>(T*, const T*, int64_t, int64_t, int64_t, double, void*, cudaStream_t);   \
  template void max<T>(T*, int64_t*, const T*, int64_t, int64_t, int64_t, void*, cudaStream_t); \
  template void scatter_reduced<T>(T*, const T*, const int64_t*, int64_t, int64_t, int64_t,     \
                                   cudaStream_t);
VLMC_INSTANTIATE(float)
VLMC_INSTANTIATE(double)
#undef VLMC_INSTANTIATE

}  // namespace vlmc::kernels::cuda
