// Fused linear + bias + GELU, the MLP connector's first layer:
//
//   z [m, n] = x [m, k] · w [n, k]ᵀ + b [n]      (w in PyTorch's [out, in] layout)
//   y [m, n] = GELU(z)
//
// and the backward's elementwise half, with the bias gradient fused into it:
//
//   dz [m, n] = dy ⊙ GELU'(z),   db [n] = Σ_rows dz
//
// (the op finishes the backward with two GEMMs: dx = dz·w, dw = dzᵀ·x).
//
// Conventions: destination first; every buffer contiguous row-major; b, z and
// db may be null (no bias, pre-activation not wanted, bias gradient not
// wanted). z, when given, receives x·wᵀ + b, the value the backward needs.
// GeluKind::erf is the exact 0.5·z·(1 + erf(z/√2)) (PyTorch's default),
// GeluKind::tanh is PyTorch's approximate='tanh'.
//
// CPU (the oracle): kernels::cpu::gemm (oneDNN's matmul for f32 where it has
// a kernel for this CPU, else OpenBLAS's sgemm/dgemm) on row blocks sized for the cache, each block's bias + GELU applied right after its
// GEMM while it is still cached. f32 uses erf_fast / exp_fast below (branch-free,
// auto-vectorized); f64 uses std::erf / std::exp so gradient checks are exact.
// CUDA: our own kernels, versions v1..v3 documented in kernels/cuda/fused_linear.cu.
// Results never depend on the thread count.
#pragma once

#include <cstdint>

#include "kernels/cuda_stream.h"
#include "kernels/dtype.h"

namespace vlmc::kernels {

enum class GeluKind : uint8_t { erf, tanh };

namespace cpu {

template <typename T>  // float, double
void linear_gelu(T* y, T* z, const T* x, const T* w, const T* b, int64_t m, int64_t n, int64_t k,
                 GeluKind kind);

// Autocast's form: x, w and b hold bf16 bits, y and z are f32. Each row
// block is one gemm_bf16 (f32 accumulation; oneDNN's bf16 kernel where the
// CPU has one), then the same f32 epilogue, with b widened (exactly) to f32.
// core/ops/fused_linear.cpp uses it where bf16 products are native
// (cpu_bf16_products_native); elsewhere it widens x and w once and calls the
// f32 form, rather than have gemm_bf16 widen w again for every block.
void linear_gelu_bf16(float* y, float* z, const uint16_t* x, const uint16_t* w, const uint16_t* b, int64_t m,
                      int64_t n, int64_t k, GeluKind kind);

// z is the forward's pre-activation; dz must not overlap dy or z.
template <typename T>
void linear_gelu_backward(T* dz, T* db, const T* dy, const T* z, int64_t m, int64_t n,
                          GeluKind kind);

// The f32 erf and exp the CPU epilogues use, over arrays (for tests and
// benchmarks). erf_fast: |error| <= 1e-7 against the exact erf for every
// finite f32 (NaN in, NaN out). exp_fast: relative error <= 2e-7 on
// [-87.3, 88.3]; inputs outside are clamped to that range.
void erf_fast(float* out, const float* in, int64_t n);
void exp_fast(float* out, const float* in, int64_t n);

}  // namespace cpu

namespace cuda {

// The kernel versions of kernels/cuda/fused_linear.cu.
enum class LinearGeluVersion : uint8_t {
  v1_simt,  // f32/f64 SIMT tiles, exact: designed to match the CPU to ~1e-6
            // (the CUDA suite checks 1e-5; passed on an H200, 2026-12-04)
  v2_tf32,  // f32 in, TF32 tensor cores (wmma 16x16x8), f32 accumulation
  v3_bf16,  // bf16 in, bf16 tensor cores (wmma 16x16x16), f32 accumulation
};

// The dispatcher: v1 for f32 and f64 (the exact path; the numerics contract
// asks f32 to match the CPU to 1e-5, which TF32 cannot).
template <typename T>  // float, double
void linear_gelu(T* y, T* z, const T* x, const T* w, const T* b, int64_t m, int64_t n, int64_t k,
                 GeluKind kind, cudaStream_t stream);

// f32 inputs through a chosen version (v1_simt or v2_tf32).
void linear_gelu_f32(LinearGeluVersion version, float* y, float* z, const float* x, const float* w,
                     const float* b, int64_t m, int64_t n, int64_t k, GeluKind kind,
                     cudaStream_t stream);

// v3: x, w, b hold bf16 bits; y is bf16 (y_dtype bf16) or f32 (y_dtype f32);
// z (optional) is f32, the accumulator before rounding.
void linear_gelu_bf16(void* y, DType y_dtype, float* z, const uint16_t* x, const uint16_t* w,
                      const uint16_t* b, int64_t m, int64_t n, int64_t k, GeluKind kind,
                      cudaStream_t stream);

template <typename T>  // float, double
void linear_gelu_backward(T* dz, T* db, const T* dy, const T* z, int64_t m, int64_t n,
                          GeluKind kind, cudaStream_t stream);

}  // namespace cuda

}  // namespace vlmc::kernels
