// CUDA dropout (see kernels/nn.h). Grid-stride over groups of four elements:
// one Philox4x32-10 call gives the four uniforms uniform_at(seed, offset, i)
// would, so the mask is the CPU's, element for element.
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests
//   build/tests/vlmc_cuda_tests "[nn]"          # this family against the CPU; also "[op_cases]"
#include "kernels/cuda/check.h"
#include "kernels/nn.h"
#include "kernels/philox.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kBlock = 256;

template <typename T>
__global__ void dropout_kernel(T* y, const T* x, int64_t n, double p, T scale, uint64_t seed,
                               uint64_t offset) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const Philox4 r = philox4x32(seed, offset + static_cast<uint64_t>(g));
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * g + lane;
      if (i < n) y[i] = uniform01(r.x[lane]) >= p ? x[i] * scale : T(0);
    }
  }
}

}  // namespace

template <typename T>
void dropout(T* y, const T* x, int64_t n, double p, uint64_t seed, uint64_t offset,
             cudaStream_t stream) {
  if (n == 0) return;
  const T scale = p < 1 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
  dropout_kernel<T>
      <<<grid_for((n + 3) / 4, kBlock), kBlock, 0, stream>>>(y, x, n, p, scale, seed, offset);
  VLMC_CUDA_CHECK_LAUNCH();
}

template void dropout<float>(float*, const float*, int64_t, double, uint64_t, uint64_t,
                             cudaStream_t);
template void dropout<double>(double*, const double*, int64_t, double, uint64_t, uint64_t,
                              cudaStream_t);

}  // namespace vlmc::kernels::cuda
