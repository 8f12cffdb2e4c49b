// Multi-tensor AdamW and the global gradient norm, over raw buffers.
//
// One call updates a whole LIST of tensors (all of an optimizer's parameters on
// one device), instead of ~10 elementwise ops and temporaries per parameter.
// Per element, in T, exactly the order of torch.optim.AdamW (and of the
// unfused optim::AdamW, which uses the same scalar roundings):
//   g  = grad * grad_scale                (only when grad_scale is non-null)
//   p  = p * decay_factor                 (decay_factor = 1 - lr * wd)
//   m  = m * beta1 + one_minus_beta1 * g
//   v  = v * beta2 + one_minus_beta2 * (g * g)
//   p  = p + neg_step_size * (m / (sqrt(v) / sqrt_bc2 + eps))
// The scalars are computed on the host in double by the caller (bias
// corrections per tensor: each has its own step count) and rounded to T once.
//
// grad_scale points to ONE float in the buffers' memory (device memory for
// CUDA) or is null for 1. It is read inside the kernel, so a clipping
// coefficient computed on the device is applied without a host sync and
// without rewriting the gradients.
//
// The norm: sum_squares writes total_sq = sum over the list of sum(g^2) (double
// accumulation, fixed partials combined in a fixed order, no float atomics:
// designed to give the same bits on every run; on an H200, 2026-12-04, the
// CUDA kernel matched the CPU to 1e-6 and gave the same bits on a second call,
// tests/cuda/test_cuda_optim.cpp); clip_coefficient then writes
// norm = sqrt(total_sq) and coef = min(1, max_norm / (norm + 1e-6)) (NaN stays
// NaN, as clip_grad_norm_). All pointers of one call live on one device; the
// CUDA calls never allocate and never synchronise.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/cuda_stream.h"
#include "kernels/dtype.h"

namespace vlmc::kernels {

// One parameter tensor of an AdamW update: contiguous buffers of numel elements.
template <typename T>
struct AdamWTensor {
  T* param = nullptr;
  const T* grad = nullptr;
  T* exp_avg = nullptr;
  T* exp_avg_sq = nullptr;
  int64_t numel = 0;
  T decay_factor = 1;      // 1 - lr * weight_decay
  T beta1 = 0, one_minus_beta1 = 1;
  T beta2 = 0, one_minus_beta2 = 1;
  T neg_step_size = 0;     // -lr / (1 - beta1^t)
  T sqrt_bc2 = 1;          // sqrt(1 - beta2^t)
  T eps = 0;
};

// One gradient of a norm computation.
template <typename T>
struct SquareSumTensor {
  const T* data = nullptr;
  int64_t numel = 0;
};

// The per-element update, shared by the CPU and CUDA kernels (one source of truth).
template <typename T>
VLMC_HOST_DEVICE inline void adamw_element(T& p, T& m, T& v, T g, const AdamWTensor<T>& t) {
  p = p * t.decay_factor;
  m = m * t.beta1 + t.one_minus_beta1 * g;
  v = v * t.beta2 + t.one_minus_beta2 * (g * g);
#if defined(__CUDA_ARCH__)
  const T root = sqrt(v);
#else
  const T root = std::sqrt(v);
#endif
  p = p + t.neg_step_size * (m / (root / t.sqrt_bc2 + t.eps));
}

namespace cuda {
// Tensors whose metadata one launch carries in its kernel arguments (by value).
inline constexpr int kAdamWTensorsPerLaunch = 24;
inline constexpr int kSquareSumTensorsPerLaunch = 96;
// Blocks of one sum_squares launch; each writes one partial.
inline constexpr int kSquareSumBlocks = 256;
// Doubles of scratch sum_squares needs for a list of count tensors: one partial
// per block per launch (at least one launch's worth).
inline constexpr int64_t sum_squares_scratch_size(int64_t count) {
  const int64_t launches =
      count <= 0 ? 1 : (count + kSquareSumTensorsPerLaunch - 1) / kSquareSumTensorsPerLaunch;
  return launches * kSquareSumBlocks;
}
}  // namespace cuda

namespace cpu {
// Updates every tensor of the list in place. T is float or double.
template <typename T>
void adamw(const AdamWTensor<T>* tensors, int64_t count, const float* grad_scale);

// *total_sq = sum over the list of sum(data^2), accumulated in double.
template <typename T>
void sum_squares(float* total_sq, const SquareSumTensor<T>* tensors, int64_t count);

// *norm = sqrt(*total_sq); *coef = min(1, max_norm / (*norm + 1e-6)).
void clip_coefficient(float* norm, float* coef, const float* total_sq, double max_norm);
}  // namespace cpu

namespace cuda {
// tensors is a HOST array; its entries point to device memory. f32 only.
void adamw(const AdamWTensor<float>* tensors, int64_t count, const float* grad_scale,
           cudaStream_t stream);

// scratch: device buffer of sum_squares_scratch_size(count) doubles.
void sum_squares(float* total_sq, const SquareSumTensor<float>* tensors, int64_t count,
                 double* scratch, cudaStream_t stream);

void clip_coefficient(float* norm, float* coef, const float* total_sq, double max_norm,
                      cudaStream_t stream);
}  // namespace cuda

}  // namespace vlmc::kernels
