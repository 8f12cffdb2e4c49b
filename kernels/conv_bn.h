// Conv2d, and Conv2d + BatchNorm2d (+ GELU) fused, over channels-last grids.
//
// Layouts (all contiguous, row-major):
//   x      [B, H, W, Cin]          the token grid, channels last (NHWC)
//   w      [Cout, Cin, kh, kw]     PyTorch's weight layout (state_dict compatible)
//   z, y   [B, Ho, Wo, Cout]       = [M, Cout] with M = B*Ho*Wo rows
//   per-channel vectors [Cout]: conv bias, gamma, beta, mean, rstd, running stats
// Ho = (H + 2*pad_h - kh) / stride_h + 1, zero padding, dilation 1, groups 1.
//
// The convolution is the GEMM z[M, Cout] = patches[M, K] · wᵀ with K =
// Cin*kh*kw: patch row m holds the input window under output pixel m. The
// CPU builds that patch matrix (im2col); the CUDA forward gathers it tile by
// tile into shared memory and never writes it (implicit GEMM).
//
// The fused forward (exact PyTorch semantics, see docs/kernels/conv_bn.md):
//   z    = conv(x, w) + conv_bias                     kept for the backward
//   training: mean, var = per-channel batch statistics of z over the M rows
//             (biased var), rstd = 1/sqrt(var + eps); running_mean and
//             running_var move toward mean and the unbiased var by momentum;
//             *num_batches_tracked += 1
//   eval:     mean = running_mean, rstd = 1/sqrt(running_var + eps)
//   y    = gelu?(gamma * (z - mean) * rstd + beta)   exact-erf GELU
// mean and rstd are written out either way, so that one backward serves both
// modes. Statistics and gradient reductions accumulate in double, per
// channel in a fixed order: results do not depend on the thread count.
//
// Nullable pointers: conv bias, gamma (= 1), beta (= 0), running stats and
// num_batches_tracked in the forward; every gradient output in the backward
// (a null one is not computed). x is read by a backward only for dw, and w
// only for dx, so the other may be null. Training needs M > 1 (the unbiased
// variance divides by M - 1); the op checks it.
//
// Each call takes a scratch buffer of workspace_bytes(...) bytes, on the
// kernel's device, that it may overwrite (null when that is 0).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda_stream.h"
#include "kernels/dtype.h"

namespace vlmc::kernels {

struct ConvShape {
  int64_t batch = 0, in_h = 0, in_w = 0, in_c = 0;
  int64_t out_c = 0, k_h = 0, k_w = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int64_t out_h = 0, out_w = 0;

  VLMC_HOST_DEVICE int64_t rows() const { return batch * out_h * out_w; }  // GEMM M
  VLMC_HOST_DEVICE int64_t patch() const { return in_c * k_h * k_w; }      // GEMM K
  // 1x1, stride 1, no padding: x itself is the patch matrix [M, Cin].
  VLMC_HOST_DEVICE bool pointwise() const {
    return k_h == 1 && k_w == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
  }
};

// A ConvShape with out_h/out_w filled in; the caller has checked that the
// padded input is at least the kernel's size and that strides are >= 1.
inline ConvShape make_conv_shape(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c,
                                 int64_t out_c, int64_t k_h, int64_t k_w, int64_t stride_h,
                                 int64_t stride_w, int64_t pad_h, int64_t pad_w) {
  ConvShape s;
  s.batch = batch, s.in_h = in_h, s.in_w = in_w, s.in_c = in_c;
  s.out_c = out_c, s.k_h = k_h, s.k_w = k_w;
  s.stride_h = stride_h, s.stride_w = stride_w, s.pad_h = pad_h, s.pad_w = pad_w;
  s.out_h = (in_h + 2 * pad_h - k_h) / stride_h + 1;
  s.out_w = (in_w + 2 * pad_w - k_w) / stride_w + 1;
  return s;
}

struct BatchNormParams {
  bool training = true;  // batch statistics and running-stat updates, else running statistics
  double momentum = 0.1;
  double eps = 1e-5;
  bool gelu = false;     // exact-erf GELU after the affine
  // CUDA forward version (see kernels/cuda/conv_bn.cu): 0 = the default
  // (newest), 1 and 2 select one; the CPU ignores it.
  int cuda_version = 0;
};

enum class ConvPass { forward, backward };

namespace cpu {

// bf16_products (f32 only; autocast, core/autocast.h): every GEMM of the call
// takes its two operands rounded to bf16 (the patches or x, w, and in the
// backward dz) and accumulates in f32 through gemm_bf16 (oneDNN's bf16 kernel
// where the CPU has one), as torch.autocast runs conv2d. Outputs, the bias,
// BatchNorm, GELU and the bias gradient stay f32. The rounded copies live in
// the workspace, which is larger by their bytes.

// Scratch bytes that any conv2d_* / conv_bn_* call of that pass needs.
size_t workspace_bytes(const ConvShape& s, size_t elem_size, ConvPass pass, bool bf16_products = false);

// z [M, Cout] = conv(x, w) + bias.
template <typename T>
void conv2d_forward(T* z, const T* x, const T* w, const T* bias, const ConvShape& s, void* workspace,
                    bool bf16_products = false);
// From dz [M, Cout]: dx [B, H, W, Cin], dw [Cout, Cin, kh, kw], dbias [Cout].
template <typename T>
void conv2d_backward(T* dx, T* dw, T* dbias, const T* dz, const T* x, const T* w, const ConvShape& s,
                     void* workspace, bool bf16_products = false);

// The fused forward described above; y, z [M, Cout], mean and rstd [Cout].
template <typename T>
void conv_bn_forward(T* y, T* z, T* mean, T* rstd, T* running_mean, T* running_var,
                     int64_t* num_batches_tracked, const T* x, const T* w, const T* conv_bias,
                     const T* gamma, const T* beta, const ConvShape& s, const BatchNormParams& p,
                     void* workspace, bool bf16_products = false);
// From dy [M, Cout] and the forward's z, mean, rstd: every gradient.
// training: dz = gamma*rstd*(du - mean(du) - xhat*mean(du*xhat)) over the M rows;
// eval: dz = gamma*rstd*du; du = dy (times gelu'(u) with GELU), xhat = (z - mean)*rstd.
template <typename T>
void conv_bn_backward(T* dx, T* dw, T* dconv_bias, T* dgamma, T* dbeta, const T* dy, const T* x,
                      const T* w, const T* z, const T* mean, const T* rstd, const T* gamma,
                      const T* beta, const ConvShape& s, const BatchNormParams& p, void* workspace,
                      bool bf16_products = false);

}  // namespace cpu

namespace cuda {

size_t workspace_bytes(const ConvShape& s, size_t elem_size, ConvPass pass);

template <typename T>
void conv2d_forward(T* z, const T* x, const T* w, const T* bias, const ConvShape& s, void* workspace,
                    cudaStream_t stream);
template <typename T>
void conv2d_backward(T* dx, T* dw, T* dbias, const T* dz, const T* x, const T* w, const ConvShape& s,
                     void* workspace, cudaStream_t stream);
template <typename T>
void conv_bn_forward(T* y, T* z, T* mean, T* rstd, T* running_mean, T* running_var,
                     int64_t* num_batches_tracked, const T* x, const T* w, const T* conv_bias,
                     const T* gamma, const T* beta, const ConvShape& s, const BatchNormParams& p,
                     void* workspace, cudaStream_t stream);
template <typename T>
void conv_bn_backward(T* dx, T* dw, T* dconv_bias, T* dgamma, T* dbeta, const T* dy, const T* x,
                      const T* w, const T* z, const T* mean, const T* rstd, const T* gamma,
                      const T* beta, const ConvShape& s, const BatchNormParams& p, void* workspace,
                      cudaStream_t stream);

}  // namespace cuda

}  // namespace vlmc::kernels
