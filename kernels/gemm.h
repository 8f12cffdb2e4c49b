// General matrix multiply on row-major buffers, as BLAS defines it but with
// row-major storage (the layout every vlmc tensor uses):
//
//   C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C[m, n]
//
// op(X) is X, or X transposed when trans_x is set. Each matrix is stored
// row-major with a leading dimension (the distance between rows, in elements):
//   A is [m, k] with lda >= k, or [k, m] with lda >= m when trans_a;
//   B is [k, n] with ldb >= n, or [n, k] with ldb >= k when trans_b;
//   C is [m, n] with ldc >= n.
// When beta == 0, C is written without being read (it may hold garbage);
// k == 0 gives C = beta * C. C must not overlap A or B.
//
// The strided-batched form runs `batch` such products, matrix i of each
// operand starting at stride_x * i; a stride of 0 shares one matrix across
// the batch (broadcasting). C's matrices must not overlap.
//
// broadcast_rows sets every row of C [m, n] (leading dim ldc) to row [n]: the
// bias of y = x·Wᵀ + b laid into y before a GEMM with beta = 1, which costs
// one write of y (a bias add after the GEMM would cost a read and a write).
//
// gemm_bias (and gemm_bf16_bias, its bf16-operand form) is linear's product
// on the CPU: C = op(A)·op(B) + bias, the f32 row bias [n] added to every row,
// C written without being read. oneDNN adds the bias in its kernel's
// epilogue, so y is written once and never read back: laying the bias first
// and adding the product onto it (beta = 1) had cost 3.3-3.7 ms of a 48 ms
// bf16 [2304, 1024] x [1024, 4096] product on 2 threads (AMD EPYC, best of 8),
// the bias's write plus the product's read of C. Where oneDNN does not take
// the call, the bias is laid and the GEMM adds onto it; both give the same
// bits (one f32 addition of the same two values per element).
//
// CPU: f32 products go to oneDNN's matmul primitive where it has a JIT kernel
// for this CPU (kernels/cpu/onednn_matmul.h; VLMC_GEMM=openblas turns it
// off), everything else (f64, a build without oneDNN) to OpenBLAS's
// sgemm/dgemm through Eigen maps with EIGEN_USE_BLAS. Both thread on vlmc's
// OpenMP pool.
// CUDA: cuBLAS with a per-device handle, TF32 disabled so that f32 products
// are expected to match the CPU to ~1e-6 relative (tests/cuda/test_cuda_linalg.cpp
// checks 1e-5, growing as sqrt(K/4096) beyond 4096 terms; passed on an H200,
// 2026-12-04).
//
// gemm_bf16 is the mixed-precision form behind autocast (core/autocast.h): A
// and B hold bf16 bits (uint16_t), C, alpha and beta are f32, and every
// product is accumulated in f32, with the strided-batched conventions above.
// CPU (the oracle): oneDNN's bf16 matmul where the CPU has a bf16 dot
// product (AVX512-BF16, AMX); elsewhere the operands' matrices are widened to
// f32 (exact) into a scratch sized to them and handed to the f32 path. Either
// way the result is "bf16 operands, f32 accumulation" up to summation order. CUDA:
// cublasGemmStridedBatchedEx with bf16 A/B, f32 C and CUBLAS_COMPUTE_32F.
#pragma once

#include <cstdint>

#include "kernels/cuda_stream.h"

namespace vlmc::kernels {

namespace cpu {
template <typename T>  // float, double
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

template <typename T>
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                          const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, T beta, T* c, int64_t ldc, int64_t stride_c,
                          int64_t batch);

template <typename T>
void broadcast_rows(T* c, const T* row, int64_t m, int64_t n, int64_t ldc);

template <typename T>
void gemm_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
               const T* b, int64_t ldb, const T* bias, T* c, int64_t ldc);

void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const uint16_t* a, int64_t lda, int64_t stride_a, const uint16_t* b, int64_t ldb,
               int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c,
               int64_t batch);

void gemm_bf16_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const uint16_t* a,
                    int64_t lda, const uint16_t* b, int64_t ldb, const float* bias, float* c, int64_t ldc);
}  // namespace cpu

namespace cuda {
template <typename T>  // float, double
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc, cudaStream_t stream);

template <typename T>
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                          const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, T beta, T* c, int64_t ldc, int64_t stride_c,
                          int64_t batch, cudaStream_t stream);

template <typename T>
void broadcast_rows(T* c, const T* row, int64_t m, int64_t n, int64_t ldc, cudaStream_t stream);

void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const uint16_t* a, int64_t lda, int64_t stride_a, const uint16_t* b, int64_t ldb,
               int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c,
               int64_t batch, cudaStream_t stream);
}  // namespace cuda

}  // namespace vlmc::kernels
