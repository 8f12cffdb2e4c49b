// CUDA error checks that name the failing call, file and line.
// Host code only. Throws std::runtime_error (kernels/ does not see vlmc::Error).
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace vlmc::kernels::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(err) + " (" +
                           cudaGetErrorName(err) + ") in " + what + " at " + file + ":" +
                           std::to_string(line));
}

}  // namespace vlmc::kernels::cuda

#define VLMC_CUDA_CHECK(expr)                                                                \
  do {                                                                                       \
    cudaError_t vlmc_err_ = (expr);                                                          \
    if (vlmc_err_ != cudaSuccess)                                                            \
      ::vlmc::kernels::cuda::throw_cuda_error(vlmc_err_, #expr, __FILE__, __LINE__);         \
  } while (0)

// After a kernel launch: catches bad launch configurations at the launch site.
#define VLMC_CUDA_CHECK_LAUNCH() VLMC_CUDA_CHECK(cudaGetLastError())

// Grid size for n elements at block threads, capped so the grid-stride loop covers the rest.
namespace vlmc::kernels::cuda {
inline unsigned grid_for(long long n, int block, long long cap = 65535LL * 8) {
  long long g = (n + block - 1) / block;
  if (g < 1) g = 1;
  return static_cast<unsigned>(g < cap ? g : cap);
}
}  // namespace vlmc::kernels::cuda
