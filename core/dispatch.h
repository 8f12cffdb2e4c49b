// Helpers shared by op implementations: argument checks that produce the
// standard error messages, dtype dispatch, and the CUDA dispatch guard.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>

#include "core/cuda/runtime.h"
#include "core/tensor.h"

namespace vlmc {

// Throws unless every defined tensor is on the first one's device:
//   "add: tensors on cpu and cuda:0 (a f32 [2,3] on cpu, b f32 [3] on cuda:0)"
void check_same_device(const char* op, std::initializer_list<Tensor> tensors);
// Throws unless every defined tensor has the first one's dtype.
void check_same_dtype(const char* op, std::initializer_list<Tensor> tensors);
// Throws unless t is f32 or f64 (the dtypes differentiable ops compute in).
void check_float(const char* op, const char* what, const Tensor& t);
// Throws unless t has the given dtype.
void check_dtype(const char* op, const char* what, const Tensor& t, DType dtype);

// Throws vlmc::Error(message(value)) for the first entry of `index` (i64,
// any layout) outside [0, bound), in row-major order. On the CPU at once; on
// CUDA at the next synchronisation (core/cuda/deferred_check.h), so the
// caller does not wait for the GPU: its kernels must not read through a bad
// index meanwhile.
void check_index_bound(const Tensor& index, int64_t bound, std::function<std::string(int64_t value)> message);

inline cudaStream_t stream_of(const Tensor& t) { return cuda::stream(t.device().index); }

// Calls f(T{}) with T = float or double by dtype.
template <typename F>
void dispatch_float(const char* op, DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    default: throw Error(str(op, ": dtype ", dtype_name(dtype), " is not supported (f32 or f64)"));
  }
}

// Typed pointer to a tensor's first element, or null for an undefined tensor
// (an optional argument such as a bias).
template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

// What a kernel reads: t detached from the graph and contiguous, or an
// undefined tensor for an undefined (optional) argument.
inline Tensor kernel_input(const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); }

}  // namespace vlmc

// Wraps a call into kernels::cuda so that a CPU-only build (where those
// symbols do not exist, and no CUDA tensor can be created) still links.
#if VLMC_WITH_CUDA
#define VLMC_CUDA_DISPATCH(...) __VA_ARGS__
#else
#define VLMC_CUDA_DISPATCH(...) \
  throw ::vlmc::Error("this vlmc was built without CUDA (configure with -DVLMC_CUDA=ON)")
#endif

namespace vlmc {

// Runs the CPU or the CUDA form of a kernel by the device of `like`, with
// T = float or double by its dtype: `cpu(T{})` or `gpu(T{}, stream)`.
template <typename Cpu, typename Gpu>
void run_float_kernel(const char* op, const Tensor& like, Cpu&& cpu, Gpu&& gpu) {
  dispatch_float(op, like.dtype(), [&](auto tag) {
    if (like.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(gpu(tag, stream_of(like)));
    } else {
      cpu(tag);
    }
  });
}

}  // namespace vlmc
