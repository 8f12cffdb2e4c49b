// CUDA cross entropy over logits [n, c] with i64 targets (see kernels/nn.h).
//
// forward   (1) one block per row: lse[r] = logsumexp of the row (max, then
//           the sum of exponentials, as in softmax.cu) and the row's loss
//           nll[r] = (max - logit[target]) + log(sum); (2) one block of 1024
//           threads over all rows: the sum of nll and the count of kept
//           rows, reduced in a fixed order, then loss = sum /
//           count (NaN when count is 0). A target outside [0, c) that is not
//           ignore_index is never read through; it goes to the error slots.
// backward  grid-stride over n*c: (softmax - onehot) * grad / count, with
//           grad and count read from device memory (no host round trip).
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

constexpr int kBlock = 256;
constexpr int kReduceBlock = 1024;

template <typename T>
__global__ void row_lse_kernel(T* lse, T* nll, const T* logits, const int64_t* targets, int64_t n,
                               int64_t c, int64_t ignore_index) {
  __shared__ T scratch[32];
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const T* xr = logits + r * c;
    T m = -INFINITY;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) m = max(m, xr[j]);
    m = block_max(m, scratch);
    T s = 0;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) s += exp_of(xr[j] - m);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
      const T log_sum = log_of(s);
      lse[r] = m + log_sum;
      const int64_t t = targets[r];
      nll[r] = (t != ignore_index && t >= 0 && t < c) ? (m - xr[t]) + log_sum : T(0);
    }
  }
}

template <typename T>
__global__ void mean_loss_kernel(T* loss, T* count, int64_t* error, const T* nll,
                                 const int64_t* targets, int64_t n, int64_t c,
                                 int64_t ignore_index) {
  __shared__ T scratch[32];
  T total = 0, kept = 0;
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) {
    const int64_t t = targets[r];
    if (t == ignore_index) continue;
    if (t < 0 || t >= c) {
      atomicExch(reinterpret_cast<unsigned long long*>(error + 1),
                 static_cast<unsigned long long>(t));
      atomicExch(reinterpret_cast<unsigned long long*>(error), 1ull);
      continue;
    }
    total += nll[r];
    kept += T(1);
  }
  total = block_sum(total, scratch);
  kept = block_sum(kept, scratch);
  if (threadIdx.x == 0) {
    count[0] = kept;
    loss[0] = kept > T(0) ? total / kept : T(NAN);
  }
}

template <typename T>
__global__ void cross_entropy_backward_kernel(T* dlogits, const T* grad, const T* count,
                                              const T* logits, const T* lse, const int64_t* targets,
                                              int64_t n, int64_t c, int64_t ignore_index) {
  const int64_t total = n * c;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / c, j = e - r * c;
    const int64_t t = targets[r];
    if (t == ignore_index || t < 0 || t >= c) {
      dlogits[e] = T(0);
      continue;
    }
    const T scale = grad[0] / count[0];
    const T p = exp_of(logits[e] - lse[r]);
    dlogits[e] = (j == t ? p - T(1) : p) * scale;
  }
}

}  // namespace

template <typename T>
void cross_entropy_forward(T* loss, T* count, T* lse, T* nll, int64_t* error, const T* logits,
                           const int64_t* targets, int64_t n, int64_t c, int64_t ignore_index,
                           cudaStream_t stream) {
  if (n > 0) {
    row_lse_kernel<T>
        <<<row_grid(n), row_block(c), 0, stream>>>(lse, nll, logits, targets, n, c, ignore_index);
    VLMC_CUDA_CHECK_LAUNCH();
  }
  // Runs even for n == 0, to write the NaN loss and the zero count.
  mean_loss_kernel<T>
      <<<1, kReduceBlock, 0, stream>>>(loss, count, error, nll, targets, n, c, ignore_index);
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* grad, const T* count, const T* logits,
                            const T* lse, const int64_t* targets, int64_t n, int64_t c,
                            int64_t ignore_index, cudaStream_t stream) {
  const int64_t total = n * c;
  if (total == 0) return;
  cross_entropy_backward_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(
      dlogits, grad, count, logits, lse, targets, n, c, ignore_index);
  VLMC_CUDA_CHECK_LAUNCH();
}

template void cross_entropy_forward<float>(float*, float*, float*, float*, int64_t*, const float*,
                                           const int64_t*, int64_t, int64_t, int64_t, cudaStream_t);
template void cross_entropy_forward<double>(double*, double*, double*, double*, int64_t*,
                                            const double*, const int64_t*, int64_t, int64_t,
                                            int64_t, cudaStream_t);
template void cross_entropy_backward<float>(float*, const float*, const float*, const float*,
                                            const float*, const int64_t*, int64_t, int64_t, int64_t,
                                            cudaStream_t);
template void cross_entropy_backward<double>(double*, const double*, const double*, const double*,
                                             const double*, const int64_t*, int64_t, int64_t,
                                             int64_t, cudaStream_t);

}  // namespace vlmc::kernels::cuda
