// CUDA softmax / log_softmax over the rows of a [rows, n] buffer (see kernels/nn.h).
//
// v1 (this file): one block per row (32..256 threads by n), grid-stride over
// rows; the row max and the sum of exponentials are block reductions
// (warp shuffles + one shared slot per warp). Three passes over the row in
// global memory (max, sum, write); rows of a vision-language model (n up to a
// few thousand) are expected to stay in L1/L2 between passes (not measured).
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_ops
//   build/tests/vlmc_cuda_tests "[nn]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_ops --cuda-only [--quick]   # validates each version, then times it
#include <cmath>

#include "kernels/cuda/check.h"
#include "kernels/cuda/row_reduce.cuh"
#include "kernels/nn.h"

namespace vlmc::kernels::cuda {
namespace {

template <typename T>
__global__ void softmax_forward_kernel(T* y, const T* x, int64_t rows, int64_t n, bool is_log) {
  __shared__ T scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    T m = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = max(m, xr[j]);
    m = block_max(m, scratch);
    T s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += exp_of(xr[j] - m);
    s = block_sum(s, scratch);
    if (is_log) {
      const T log_sum = log_of(s);  // (x - m) - log_sum keeps log_sum's bits when m is large
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = (xr[j] - m) - log_sum;
    } else {
      const T inv = T(1) / s;
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = exp_of(xr[j] - m) * inv;
    }
  }
}

template <typename T>
__global__ void softmax_backward_kernel(T* dx, const T* y, const T* dy, int64_t rows, int64_t n,
                                        bool is_log) {
  __shared__ T scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* yr = y + r * n;
    const T* gr = dy + r * n;
    T* dr = dx + r * n;
    T s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += is_log ? gr[j] : gr[j] * yr[j];
    s = block_sum(s, scratch);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      dr[j] = is_log ? gr[j] - exp_of(yr[j]) * s : yr[j] * (gr[j] - s);
  }
}

}  // namespace

template <typename T>
void softmax_forward(T* y, const T* x, int64_t rows, int64_t n, bool log, cudaStream_t stream) {
  if (rows == 0 || n == 0) return;
  softmax_forward_kernel<T><<<row_grid(rows), row_block(n), 0, stream>>>(y, x, rows, n, log);
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void softmax_backward(T* dx, const T* y, const T* dy, int64_t rows, int64_t n, bool log,
                      cudaStream_t stream) {
  if (rows == 0 || n == 0) return;
  softmax_backward_kernel<T><<<row_grid(rows), row_block(n), 0, stream>>>(dx, y, dy, rows, n, log);
  VLMC_CUDA_CHECK_LAUNCH();
}

template void softmax_forward<float>(float*, const float*, int64_t, int64_t, bool, cudaStream_t);
template void softmax_forward<double>(double*, const double*, int64_t, int64_t, bool, cudaStream_t);
template void softmax_backward<float>(float*, const float*, const float*, int64_t, int64_t, bool,
                                      cudaStream_t);
template void softmax_backward<double>(double*, const double*, const double*, int64_t, int64_t,
                                       bool, cudaStream_t);

}  // namespace vlmc::kernels::cuda
