// CUDA embedding lookup and its backward (see kernels/nn.h).
//
// forward   grid-stride over the n*d output elements (consecutive threads copy
//           consecutive features of a row: coalesced). An out-of-range index is
//           never dereferenced: its row is written as zeros and the index is
//           reported through the device-side error slots, which the op reads
//           back and turns into an Error.
// backward  zero dweight, then atomicAdd each dout element into its row. The
//           order of the additions into a repeated row is unspecified, so the
//           low bits of such rows may vary from run to run.
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_ops
//   build/tests/vlmc_cuda_tests "[nn]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_ops --cuda-only [--quick]   # validates each version, then times it
#include "kernels/cuda/check.h"
#include "kernels/nn.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kBlock = 256;

template <typename T>
__global__ void embedding_forward_kernel(T* out, int64_t* error, const T* weight,
                                         const int64_t* indices, int64_t n, int64_t num,
                                         int64_t d) {
  const int64_t total = n * d;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / d, j = e - i * d;
    const int64_t row = indices[i];
    if (row < 0 || row >= num) {
      out[e] = T(0);
      if (j == 0) {  // one report per bad position; any bad value will do
        atomicExch(reinterpret_cast<unsigned long long*>(error + 1),
                   static_cast<unsigned long long>(row));
        atomicExch(reinterpret_cast<unsigned long long*>(error), 1ull);
      }
    } else {
      out[e] = weight[row * d + j];
    }
  }
}

template <typename T>
__global__ void embedding_backward_kernel(T* dweight, const T* dout, const int64_t* indices,
                                          int64_t n, int64_t num, int64_t d) {
  const int64_t total = n * d;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / d, j = e - i * d;
    const int64_t row = indices[i];
    if (row >= 0 && row < num) atomicAdd(dweight + row * d + j, dout[e]);
  }
}

}  // namespace

template <typename T>
void embedding_forward(T* out, int64_t* error, const T* weight, const int64_t* indices, int64_t n,
                       int64_t num, int64_t d, cudaStream_t stream) {
  const int64_t total = n * d;
  if (total == 0) return;
  embedding_forward_kernel<T>
      <<<grid_for(total, kBlock), kBlock, 0, stream>>>(out, error, weight, indices, n, num, d);
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void embedding_backward(T* dweight, const T* dout, const int64_t* indices, int64_t n, int64_t num,
                        int64_t d, cudaStream_t stream) {
  VLMC_CUDA_CHECK(cudaMemsetAsync(dweight, 0, static_cast<size_t>(num * d) * sizeof(T), stream));
  const int64_t total = n * d;
  if (total == 0) return;
  embedding_backward_kernel<T>
      <<<grid_for(total, kBlock), kBlock, 0, stream>>>(dweight, dout, indices, n, num, d);
  VLMC_CUDA_CHECK_LAUNCH();
}

template void embedding_forward<float>(float*, int64_t*, const float*, const int64_t*, int64_t,
                                       int64_t, int64_t, cudaStream_t);
template void embedding_forward<double>(double*, int64_t*, const double*, const int64_t*, int64_t,
                                        int64_t, int64_t, cudaStream_t);
template void embedding_backward<float>(float*, const float*, const int64_t*, int64_t, int64_t,
                                        int64_t, cudaStream_t);
template void embedding_backward<double>(double*, const double*, const int64_t*, int64_t, int64_t,
                                         int64_t, cudaStream_t);

}  // namespace vlmc::kernels::cuda
