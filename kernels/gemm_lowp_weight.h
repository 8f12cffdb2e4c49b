// Products of f32 activations with a frozen low-precision weight (bf16 or
// f16, held as its 16-bit patterns), f32 accumulation and f32 output: the
// linear layers of a pretrained model kept in its file's dtype
// (docs/numerics.md). w is [n, k] as PyTorch stores a Linear's weight
// [out, in]; every buffer is row-major with a leading dimension.
//
//   gemm_lowp_weight_nt: y  [m, n] = x  [m, k] · w [n, k]ᵀ + beta * y    (linear's forward)
//   gemm_lowp_weight_nn: dx [m, k] = dy [m, n] · w [n, k]  + beta * dx   (its input gradient)
//
// beta == 0 writes the output without reading it. Widening bf16 or f16 to
// f32 is exact, so both compute "the weight's values, f32 accumulation" and
// differ from an f32 GEMM over the widened weight only in summation order.
//
// CPU, forward with m <= kLowpGemvRows (decode: one to a few tokens): our own
// AVX2/FMA kernel, OpenMP-parallel over blocks of output columns, each weight
// row widened in registers (bf16: a 16-bit shift; f16: F16C) as it streams
// from memory once; each output is summed by one thread in a fixed order,
// so its results do not depend on the thread count. Larger m (prefill,
// training) and the nn form: the weight is widened tile by tile (a few MB of
// scratch) and each tile goes to the f32 GEMM (kernels/gemm.h, OpenBLAS,
// whose sums may change with the thread count).
// The _bf16x forms take the activations (x, or dy) as bf16 too: linear under
// autocast with a bf16 weight, where torch.autocast also rounds the input.
// Both operands bf16, f32 accumulation and output: oneDNN's bf16 kernel
// where the CPU has one (kernels/cpu/onednn_matmul.h); elsewhere, and for
// m <= kLowpGemvRows, the activations are widened to f32 (an [m, k] scratch,
// exact) and the f32-activation forms above run.
// No CUDA form: core/ops widens the weight on the device instead.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace vlmc::kernels::cpu {

// Rows up to which the forward runs the streaming kernel (above: widened tiles).
inline constexpr int64_t kLowpGemvRows = 8;

void gemm_lowp_weight_nt(int64_t m, int64_t n, int64_t k, const float* x, int64_t ldx, const uint16_t* w,
                         int64_t ldw, DType w_dtype, float beta, float* y, int64_t ldy);

void gemm_lowp_weight_nn(int64_t m, int64_t n, int64_t k, const float* dy, int64_t lddy, const uint16_t* w,
                         int64_t ldw, DType w_dtype, float beta, float* dx, int64_t lddx);

void gemm_bf16_weight_nt_bf16x(int64_t m, int64_t n, int64_t k, const uint16_t* x, int64_t ldx, const uint16_t* w,
                               int64_t ldw, float beta, float* y, int64_t ldy);

void gemm_bf16_weight_nn_bf16x(int64_t m, int64_t n, int64_t k, const uint16_t* dy, int64_t lddy,
                               const uint16_t* w, int64_t ldw, float beta, float* dx, int64_t lddx);

}  // namespace vlmc::kernels::cpu
