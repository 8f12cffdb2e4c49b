// CUDA broadcasting binary kernels, their fused backward, and the in-place
// scaled add (see kernels/elementwise.h). Grid-stride loops; the per-element
// math is the same inline code the CPU kernels use.
//
// Two forms per op: a contiguous one (both operands dense over the output,
// plain indexing) and a strided one that maps each output index through the
// operands' broadcast layouts.
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

template <BinaryOp Op, typename T>
__global__ void binary_contiguous_kernel(T* out, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = binary_value<Op>(a[i], b[i]);
}

template <BinaryOp Op, typename T>
__global__ void binary_strided_kernel(T* out, const T* a, Layout la, const T* b, Layout lb,
                                      int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = binary_value<Op>(a[la.offset_of(i)], b[lb.offset_of(i)]);
}

template <BinaryOp Op, typename T>
__global__ void binary_backward_kernel(T* ga, T* gb, const T* g, const T* a, Layout la, const T* b,
                                       Layout lb, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    T da, db;
    binary_grads<Op>(g[i], a[la.offset_of(i)], b[lb.offset_of(i)], da, db);
    if (ga) ga[i] = da;
    if (gb) gb[i] = db;
  }
}

template <typename T>
__global__ void add_scaled_kernel(T* self, const T* other, Layout lo, T alpha, int64_t n,
                                  bool contiguous) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    self[i] += alpha * other[contiguous ? i : lo.offset_of(i)];
}

}  // namespace

template <typename T>
void binary(BinaryOp op, T* out, const T* a, const Layout& la_in, const T* b, const Layout& lb_in,
            cudaStream_t stream) {
  Layout la = la_in, lb = lb_in;
  coalesce_dims(la, lb);
  const int64_t n = la.numel();
  if (n == 0) return;
  const unsigned grid = grid_for(n, kBlock);
  if (la.is_contiguous() && lb.is_contiguous()) {
#define VLMC_CALL(OP) binary_contiguous_kernel<OP, T><<<grid, kBlock, 0, stream>>>(out, a, b, n)
    VLMC_BINARY_OP_SWITCH(op, VLMC_CALL)
#undef VLMC_CALL
    VLMC_CUDA_CHECK_LAUNCH();
  } else {
#define VLMC_CALL(OP) binary_strided_kernel<OP, T><<<grid, kBlock, 0, stream>>>(out, a, la, b, lb, n)
    VLMC_BINARY_OP_SWITCH(op, VLMC_CALL)
#undef VLMC_CALL
    VLMC_CUDA_CHECK_LAUNCH();
  }
}

template <typename T>
void binary_backward(BinaryOp op, T* grad_a, T* grad_b, const T* grad_out, const T* a,
                     const Layout& la_in, const T* b, const Layout& lb_in, cudaStream_t stream) {
  Layout la = la_in, lb = lb_in;
  coalesce_dims(la, lb);
  const int64_t n = la.numel();
  if (n == 0 || (!grad_a && !grad_b)) return;
  const unsigned grid = grid_for(n, kBlock);
#define VLMC_CALL(OP)                                                                 \
  binary_backward_kernel<OP, T><<<grid, kBlock, 0, stream>>>(grad_a, grad_b, grad_out, a, la, b, \
                                                             lb, n)
  VLMC_BINARY_OP_SWITCH(op, VLMC_CALL)
#undef VLMC_CALL
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void add_scaled_inplace(T* self, const T* other, const Layout& lo_in, double alpha,
                        cudaStream_t stream) {
  // self is contiguous, so only other's strides limit the merge (the copy is a stand-in).
  Layout lo = lo_in, self_layout = lo_in;
  coalesce_dims(lo, self_layout);
  const int64_t n = lo.numel();
  if (n == 0) return;
  add_scaled_kernel<T><<<grid_for(n, kBlock), kBlock, 0, stream>>>(
      self, other, lo, static_cast<T>(alpha), n, lo.is_contiguous());
  VLMC_CUDA_CHECK_LAUNCH();
}

#define VLMC_INSTANTIATE(T)                                                                   \
  template void binary<T>(BinaryOp, T*, const T*, const Layout&, const T*, const Layout&,     \
                          cudaStream_t);                                                      \
  template void binary_backward<T>(BinaryOp, T*, T*, const T*, const T*, const Layout&,       \
                                   const T*, const Layout&, cudaStream_t);                    \
  template void add_scaled_inplace<T>(T*, const T*, const Layout&, double, cudaStream_t);
VLMC_INSTANTIATE(float)
VLMC_INSTANTIATE(double)
#undef VLMC_INSTANTIATE

}  // namespace vlmc::kernels::cuda
