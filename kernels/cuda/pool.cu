// CUDA adaptive average pooling, channels last (see kernels/pool.h).
// v1: one thread per output element (forward) or input element (backward);
// consecutive threads walk the channel dim, so every load is coalesced.
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_pool
//   build/tests/vlmc_cuda_tests "[pool]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_pool --cuda-only [--quick]   # validates each version, then times it
#include "kernels/cuda/check.h"
#include "kernels/pool.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kBlock = 256;

template <typename T>
__global__ void pool_forward_kernel(T* y, const T* x, PoolShape s, int64_t n) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = idx % s.channels;
    int64_t rest = idx / s.channels;
    const int64_t oj = rest % s.out_w;
    rest /= s.out_w;
    const int64_t oi = rest % s.out_h;
    const int64_t b = rest / s.out_h;
    const int64_t i0 = pool_start(oi, s.in_h, s.out_h), i1 = pool_end(oi, s.in_h, s.out_h);
    const int64_t j0 = pool_start(oj, s.in_w, s.out_w), j1 = pool_end(oj, s.in_w, s.out_w);
    T acc = T(0);
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) acc += x[((b * s.in_h + i) * s.in_w + j) * s.channels + c];
    y[idx] = acc / static_cast<T>((i1 - i0) * (j1 - j0));
  }
}

template <typename T>
__global__ void pool_backward_kernel(T* grad_x, const T* grad_y, PoolShape s, int64_t n) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = idx % s.channels;
    int64_t rest = idx / s.channels;
    const int64_t j = rest % s.in_w;
    rest /= s.in_w;
    const int64_t i = rest % s.in_h;
    const int64_t b = rest / s.in_h;
    T acc = T(0);
    const int64_t oi1 = pool_last_window(i, s.in_h, s.out_h);
    const int64_t oj1 = pool_last_window(j, s.in_w, s.out_w);
    for (int64_t oi = pool_first_window(i, s.in_h, s.out_h); oi <= oi1; ++oi) {
      const int64_t rows = pool_end(oi, s.in_h, s.out_h) - pool_start(oi, s.in_h, s.out_h);
      for (int64_t oj = pool_first_window(j, s.in_w, s.out_w); oj <= oj1; ++oj) {
        const int64_t cols = pool_end(oj, s.in_w, s.out_w) - pool_start(oj, s.in_w, s.out_w);
        acc += grad_y[((b * s.out_h + oi) * s.out_w + oj) * s.channels + c] / static_cast<T>(rows * cols);
      }
    }
    grad_x[idx] = acc;
  }
}

}  // namespace

template <typename T>
void adaptive_avg_pool2d(T* y, const T* x, const PoolShape& s, cudaStream_t stream) {
  const int64_t n = s.batch * s.out_h * s.out_w * s.channels;
  if (n == 0) return;
  pool_forward_kernel<T><<<grid_for(n, kBlock), kBlock, 0, stream>>>(y, x, s, n);
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void adaptive_avg_pool2d_backward(T* grad_x, const T* grad_y, const PoolShape& s, cudaStream_t stream) {
  const int64_t n = s.batch * s.in_h * s.in_w * s.channels;
  if (n == 0) return;
  pool_backward_kernel<T><<<grid_for(n, kBlock), kBlock, 0, stream>>>(grad_x, grad_y, s, n);
  VLMC_CUDA_CHECK_LAUNCH();
}

template void adaptive_avg_pool2d<float>(float*, const float*, const PoolShape&, cudaStream_t);
template void adaptive_avg_pool2d<double>(double*, const double*, const PoolShape&, cudaStream_t);
template void adaptive_avg_pool2d_backward<float>(float*, const float*, const PoolShape&, cudaStream_t);
template void adaptive_avg_pool2d_backward<double>(double*, const double*, const PoolShape&, cudaStream_t);

}  // namespace vlmc::kernels::cuda
