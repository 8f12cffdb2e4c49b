// CUDA layer norm and RMS norm over the rows of a [rows, d] buffer (see kernels/nn.h).
//
// v1 (this file):
//   forward   one block per row: mean, then the biased variance about it (two
//             passes over the row, no E[x²]-E[x]² cancellation), then y.
//   dx        one block per row: the two row sums of the backward, then dx.
//   dw, db    column sums: a block owns 32 columns and its 32x8 threads walk
//             all rows (coalesced 32-wide reads), then reduce the 8 partial
//             sums in shared memory. Fixed order: deterministic, no atomics.
// RMS norm is the same code without centring and without a bias.
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_ops
//   build/tests/vlmc_cuda_tests "[nn]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_ops --cuda-only [--quick]   # validates each version, then times it
#include "kernels/cuda/check.h"
#include "kernels/cuda/row_reduce.cuh"
#include "kernels/nn.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kColumnsPerBlock = 32;
constexpr int kRowThreads = 8;

template <bool kCenter, typename T>
__global__ void norm_forward_kernel(T* y, T* mean, T* rstd, const T* x, const T* weight,
                                    const T* bias, int64_t rows, int64_t d, T eps) {
  __shared__ T scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    T mu = 0;
    if (kCenter) {
      for (int64_t j = threadIdx.x; j < d; j += blockDim.x) mu += xr[j];
      mu = block_sum(mu, scratch) / T(d);
    }
    T var = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      const T c = xr[j] - mu;
      var += c * c;
    }
    var = block_sum(var, scratch) / T(d);
    const T rs = rsqrt_of(var + eps);
    if (threadIdx.x == 0) {
      if (kCenter) mean[r] = mu;
      rstd[r] = rs;
    }
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      T v = (xr[j] - mu) * rs;
      if (weight) v *= weight[j];
      if (bias) v += bias[j];
      yr[j] = v;
    }
  }
}

// dx = rstd * (wdy - mean(wdy) - xhat * mean(wdy * xhat)), without mean(wdy) for RMS norm.
template <bool kCenter, typename T>
__global__ void norm_backward_dx_kernel(T* dx, const T* dy, const T* x, const T* mean,
                                        const T* rstd, const T* weight, int64_t rows, int64_t d) {
  __shared__ T scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    const T* gr = dy + r * d;
    T* dr = dx + r * d;
    const T m = kCenter ? mean[r] : T(0);
    const T rs = rstd[r];
    T sum_wdy = 0, sum_wdy_xhat = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      const T wdy = weight ? gr[j] * weight[j] : gr[j];
      sum_wdy += wdy;
      sum_wdy_xhat += wdy * ((xr[j] - m) * rs);
    }
    const T a = kCenter ? block_sum(sum_wdy, scratch) / T(d) : T(0);
    const T b = block_sum(sum_wdy_xhat, scratch) / T(d);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      const T wdy = weight ? gr[j] * weight[j] : gr[j];
      dr[j] = rs * (wdy - a - (xr[j] - m) * rs * b);
    }
  }
}

// dweight[j] = sum_r dy[r, j] * xhat[r, j], dbias[j] = sum_r dy[r, j].
template <bool kCenter, typename T>
__global__ void norm_backward_dw_kernel(T* dweight, T* dbias, const T* dy, const T* x,
                                        const T* mean, const T* rstd, int64_t rows, int64_t d) {
  __shared__ T partial_w[kRowThreads][kColumnsPerBlock + 1];
  __shared__ T partial_b[kRowThreads][kColumnsPerBlock + 1];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColumnsPerBlock + threadIdx.x;
  T sw = 0, sb = 0;
  if (j < d) {
    for (int64_t r = threadIdx.y; r < rows; r += kRowThreads) {
      const T g = dy[r * d + j];
      const T m = kCenter ? mean[r] : T(0);
      sw += g * ((x[r * d + j] - m) * rstd[r]);
      sb += g;
    }
  }
  partial_w[threadIdx.y][threadIdx.x] = sw;
  partial_b[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && j < d) {
    for (int i = 1; i < kRowThreads; ++i) {
      sw += partial_w[i][threadIdx.x];
      sb += partial_b[i][threadIdx.x];
    }
    if (dweight) dweight[j] = sw;
    if (dbias) dbias[j] = sb;
  }
}

template <bool kCenter, typename T>
void norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean,
                   const T* rstd, const T* weight, int64_t rows, int64_t d, cudaStream_t stream) {
  if (d == 0) return;  // every output is empty
  if (dx && rows > 0) {
    norm_backward_dx_kernel<kCenter, T>
        <<<row_grid(rows), row_block(d), 0, stream>>>(dx, dy, x, mean, rstd, weight, rows, d);
    VLMC_CUDA_CHECK_LAUNCH();
  }
  if (dweight || dbias) {
    // Also for rows == 0: the column sums of an empty batch are zeros, as on the CPU.
    const unsigned blocks = static_cast<unsigned>((d + kColumnsPerBlock - 1) / kColumnsPerBlock);
    norm_backward_dw_kernel<kCenter, T><<<blocks, dim3(kColumnsPerBlock, kRowThreads), 0, stream>>>(
        dweight, dbias, dy, x, mean, rstd, rows, d);
    VLMC_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

template <typename T>
void layer_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* weight, const T* bias,
                        int64_t rows, int64_t d, double eps, cudaStream_t stream) {
  if (rows == 0) return;  // d == 0 still writes mean and rstd (NaN, as on the CPU)
  norm_forward_kernel<true, T><<<row_grid(rows), row_block(d), 0, stream>>>(
      y, mean, rstd, x, weight, bias, rows, d, static_cast<T>(eps));
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void layer_norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* weight, int64_t rows, int64_t d,
                         cudaStream_t stream) {
  norm_backward<true>(dx, dweight, dbias, dy, x, mean, rstd, weight, rows, d, stream);
}

template <typename T>
void rms_norm_forward(T* y, T* rstd, const T* x, const T* weight, int64_t rows, int64_t d,
                      double eps, cudaStream_t stream) {
  if (rows == 0) return;  // d == 0 still writes rstd (NaN, as on the CPU)
  norm_forward_kernel<false, T><<<row_grid(rows), row_block(d), 0, stream>>>(
      y, nullptr, rstd, x, weight, nullptr, rows, d, static_cast<T>(eps));
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void rms_norm_backward(T* dx, T* dweight, const T* dy, const T* x, const T* rstd, const T* weight,
                       int64_t rows, int64_t d, cudaStream_t stream) {
  norm_backward<false>(dx, dweight, static_cast<T*>(nullptr), dy, x, static_cast<const T*>(nullptr),
                       rstd, weight, rows, d, stream);
}

#define VLMC_NORM_INSTANTIATE(T)                                                                  \
  template void layer_norm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, \
                                      double, cudaStream_t);                                      \
  template void layer_norm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                       const T*, int64_t, int64_t, cudaStream_t);                 \
  template void rms_norm_forward<T>(T*, T*, const T*, const T*, int64_t, int64_t, double,         \
                                    cudaStream_t);                                                \
  template void rms_norm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t,     \
                                     int64_t, cudaStream_t);
VLMC_NORM_INSTANTIATE(float)
VLMC_NORM_INSTANTIATE(double)
#undef VLMC_NORM_INSTANTIATE

}  // namespace vlmc::kernels::cuda
