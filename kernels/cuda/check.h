// CUDA error checks that name the failing call, file and line.
// Host code only. Throws std::runtime_error (kernels/ does not see vlmc::Error).
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace vlmc::kernels::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(err) + " (" +
                           cudaGetErrorName(err) + ") in " + what + " at " + file + ":" +
                           std::to_string(line));
}

// VLMC_CUDA_SYNC=1: every launch waits for the device, so that a fault inside
// a kernel is reported at the launch that caused it instead of at some later
// call. For debugging: it serialises host and device. Read once.
inline bool sync_after_launch() {
  static const bool on = [] {
    const char* env = std::getenv("VLMC_CUDA_SYNC");
    if (env == nullptr || *env == '\0' || std::strcmp(env, "0") == 0) return false;
    if (std::strcmp(env, "1") == 0) return true;
    throw std::runtime_error(std::string("VLMC_CUDA_SYNC: expected 0 or 1, got '") + env + "'");
  }();
  return on;
}

}  // namespace vlmc::kernels::cuda

#define VLMC_CUDA_CHECK(expr)                                                                \
  do {                                                                                       \
    cudaError_t vlmc_err_ = (expr);                                                          \
    if (vlmc_err_ != cudaSuccess)                                                            \
      ::vlmc::kernels::cuda::throw_cuda_error(vlmc_err_, #expr, __FILE__, __LINE__);         \
  } while (0)

// With VLMC_CUDA_SYNC=1: waits for the device and reports a fault of the work
// just issued (a kernel, a cuBLAS call) here. Otherwise nothing. The wait does
// not read core's deferred index checks (kernels/ cannot reach core/): they
// stay pending for the next host wait of core/cuda/runtime.h.
#define VLMC_CUDA_SYNC_CHECK()                                                             \
  do {                                                                                     \
    if (::vlmc::kernels::cuda::sync_after_launch()) {                                      \
      cudaError_t vlmc_err_ = cudaDeviceSynchronize();                                     \
      if (vlmc_err_ != cudaSuccess)                                                        \
        ::vlmc::kernels::cuda::throw_cuda_error(                                           \
            vlmc_err_, "the work issued here (VLMC_CUDA_SYNC=1)", __FILE__, __LINE__);     \
    }                                                                                      \
  } while (0)

// After every kernel launch: catches bad launch configurations at the launch
// site, and with VLMC_CUDA_SYNC=1 faults inside the kernel too.
#define VLMC_CUDA_CHECK_LAUNCH()          \
  do {                                    \
    VLMC_CUDA_CHECK(cudaGetLastError());  \
    VLMC_CUDA_SYNC_CHECK();               \
  } while (0)

// Grid size for n elements at block threads, capped so the grid-stride loop
// covers the rest. Never 0 (an invalid configuration); callers still return
// before launching when there is no work.
namespace vlmc::kernels::cuda {
inline unsigned grid_for(long long n, int block, long long cap = 65535LL * 8) {
  long long g = (n + block - 1) / block;
  if (g < 1) g = 1;
  return static_cast<unsigned>(g < cap ? g : cap);
}
}  // namespace vlmc::kernels::cuda
