// CUDA unary kernels and their fused backward (see kernels/elementwise.h):
// grid-stride loops over contiguous buffers, one instantiation per op, the
// per-element math shared with the CPU kernels.
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_ops
//   build/tests/vlmc_cuda_tests "[elementwise]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_ops --cuda-only [--quick]   # validates each version, then times it
#include "kernels/cuda/check.h"
#include "kernels/elementwise.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kBlock = 256;

template <UnaryOp Op, typename T>
__global__ void unary_kernel(T* y, const T* x, int64_t n, T s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = unary_value<Op>(x[i], s);
}

template <UnaryOp Op, typename T>
__global__ void unary_backward_kernel(T* gx, const T* g, const T* x, const T* y, int64_t n, T s) {
  constexpr UnarySaves saves = unary_saves(Op);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    gx[i] = unary_grad<Op>(g[i], saves.x ? x[i] : T(0), saves.y ? y[i] : T(0), s);
}

}  // namespace

template <typename T>
void unary(UnaryOp op, T* y, const T* x, int64_t n, double scalar, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned grid = grid_for(n, kBlock);
  const T s = static_cast<T>(scalar);
#define VLMC_CALL(OP) unary_kernel<OP, T><<<grid, kBlock, 0, stream>>>(y, x, n, s)
  VLMC_UNARY_OP_SWITCH(op, VLMC_CALL)
#undef VLMC_CALL
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void unary_backward(UnaryOp op, T* grad_in, const T* grad_out, const T* x, const T* y, int64_t n,
                    double scalar, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned grid = grid_for(n, kBlock);
  const T s = static_cast<T>(scalar);
#define VLMC_CALL(OP) \
  unary_backward_kernel<OP, T><<<grid, kBlock, 0, stream>>>(grad_in, grad_out, x, y, n, s)
  VLMC_UNARY_OP_SWITCH(op, VLMC_CALL)
#undef VLMC_CALL
  VLMC_CUDA_CHECK_LAUNCH();
}

template void unary<float>(UnaryOp, float*, const float*, int64_t, double, cudaStream_t);
template void unary<double>(UnaryOp, double*, const double*, int64_t, double, cudaStream_t);
template void unary_backward<float>(UnaryOp, float*, const float*, const float*, const float*,
                                    int64_t, double, cudaStream_t);
template void unary_backward<double>(UnaryOp, double*, const double*, const double*,
                                     const double*, int64_t, double, cudaStream_t);

}  // namespace vlmc::kernels::cuda
