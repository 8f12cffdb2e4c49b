// CPU dropout (see kernels/nn.h): the keep decision for element i is a pure
// function of (seed, offset, i), so forward, backward and any thread count
// agree without storing a mask, and the CUDA kernel is designed to agree too
// (outputs and gradients equal to the CPU's in tests/cuda/test_cuda_nn.cpp, on
// an H200, 2026-12-04).
#include "kernels/nn.h"
#include "kernels/philox.h"

namespace vlmc::kernels::cpu {
namespace {
constexpr int64_t kParallelGrain = 1 << 10;  // in groups of 4; Philox costs ~10 rounds a group
}  // namespace

template <typename T>
void dropout(T* y, const T* x, int64_t n, double p, uint64_t seed, uint64_t offset) {
  const T scale = p < 1 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
  // One Philox call yields the uniforms of elements 4g .. 4g+3, exactly as
  // uniform_at(seed, offset, i) draws them.
  const int64_t groups = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (groups > kParallelGrain)
  for (int64_t g = 0; g < groups; ++g) {
    const Philox4 r = philox4x32(seed, offset + static_cast<uint64_t>(g));
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * g + lane;
      if (i >= n) break;
      y[i] = uniform01(r.x[lane]) >= p ? x[i] * scale : T(0);
    }
  }
}

template void dropout<float>(float*, const float*, int64_t, double, uint64_t, uint64_t);
template void dropout<double>(double*, const double*, int64_t, double, uint64_t, uint64_t);

}  // namespace vlmc::kernels::cpu
