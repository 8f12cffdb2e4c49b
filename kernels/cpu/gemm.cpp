// CPU GEMM (see kernels/gemm.h): oneDNN's matmul for f32 where it has a JIT
// implementation (kernels/cpu/onednn_matmul.h says why), else, and for f64,
// Eigen maps over the row-major buffers.
//
// The library compiles this file with EIGEN_USE_BLAS, so every plain
// `C.noalias() += alpha * op(A) * op(B)` below becomes one sgemm/dgemm call
// (gemv when a side is 1): Eigen extracts alpha and the transposes into the
// BLAS arguments instead of evaluating temporaries. beta is applied to C
// first because Eigen's BLAS binding always accumulates with beta = 1.
#include "kernels/gemm.h"

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>

#include "kernels/cpu/onednn_matmul.h"

namespace vlmc::kernels::cpu {
namespace {

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using MutableMap = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// Below this many multiply-adds per matrix, a batch is spread over threads
// (one matrix per thread); above it OpenBLAS threads each product itself.
constexpr int64_t kSmallProduct = int64_t(1) << 18;

template <typename T>
void gemm_one(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
              int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  MutableMap<T> C(c, m, n, Eigen::OuterStride<>(ldc));
  if (beta == T(0)) {
    C.setZero();  // never read C: it may hold NaNs from an uninitialised buffer
  } else if (beta != T(1)) {
    C *= beta;
  }
  if (k == 0 || alpha == T(0)) return;
  // Stored shapes: A is [m, k] or, transposed, [k, m]; B likewise.
  const ConstMap<T> A(a, trans_a ? k : m, trans_a ? m : k, Eigen::OuterStride<>(lda));
  const ConstMap<T> B(b, trans_b ? n : k, trans_b ? k : n, Eigen::OuterStride<>(ldb));
  if (!trans_a && !trans_b) {
    C.noalias() += alpha * A * B;
  } else if (trans_a && !trans_b) {
    C.noalias() += alpha * A.transpose() * B;
  } else if (!trans_a && trans_b) {
    C.noalias() += alpha * A * B.transpose();
  } else {
    C.noalias() += alpha * A.transpose() * B.transpose();
  }
}

// The f32 product through oneDNN; false when it is not the way (the caller
// runs OpenBLAS). beta is oneDNN's sum post-op, skipped (C not read) at 0.
template <typename T>
bool onednn_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                 int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b, T beta, T* c, int64_t ldc,
                 int64_t stride_c, int64_t batch) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;  // oneDNN has no f64 matmul
  } else {
    if (m == 0 || n == 0 || k == 0 || batch == 0 || alpha == 0.0f) return false;
    return onednn::matmul(onednn::Operands::f32, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb,
                          stride_b, beta, c, ldc, stride_c, batch);
  }
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (onednn_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1)) return;
  gemm_one(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename T>
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                          const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, T beta, T* c, int64_t ldc, int64_t stride_c,
                          int64_t batch) {
  if (onednn_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c,
                  batch))
    return;
  // Each matrix is computed whole by one thread (or by OpenBLAS's threads),
  // so the result does not depend on the thread count.
  const bool spread = batch > 1 && m * n * k <= kSmallProduct;
#pragma omp parallel for schedule(static) if (spread)
  for (int64_t i = 0; i < batch; ++i)
    gemm_one(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta,
             c + i * stride_c, ldc);
}

template <typename T>
void broadcast_rows(T* c, const T* row, int64_t m, int64_t n, int64_t ldc) {
#pragma omp parallel for schedule(static) if (m * n > (int64_t(1) << 15))
  for (int64_t i = 0; i < m; ++i) std::copy(row, row + n, c + i * ldc);
}

template <typename T>
void gemm_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
               const T* b, int64_t ldb, const T* bias, T* c, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    if (m > 0 && n > 0 && k > 0 &&
        onednn::matmul(onednn::Operands::f32, trans_a, trans_b, m, n, k, 1.0f, a, lda, 0, b, ldb, 0, 0.0f, c, ldc,
                       0, 1, bias))
      return;
  }
  broadcast_rows(c, bias, m, n, ldc);
  gemm(trans_a, trans_b, m, n, k, T(1), a, lda, b, ldb, T(1), c, ldc);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);
template void gemm_strided_batched<float>(bool, bool, int64_t, int64_t, int64_t, float,
                                          const float*, int64_t, int64_t, const float*, int64_t,
                                          int64_t, float, float*, int64_t, int64_t, int64_t);
template void gemm_strided_batched<double>(bool, bool, int64_t, int64_t, int64_t, double,
                                           const double*, int64_t, int64_t, const double*, int64_t,
                                           int64_t, double, double*, int64_t, int64_t, int64_t);
template void broadcast_rows<float>(float*, const float*, int64_t, int64_t, int64_t);
template void broadcast_rows<double>(double*, const double*, int64_t, int64_t, int64_t);
template void gemm_bias<float>(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                               int64_t, const float*, float*, int64_t);
template void gemm_bias<double>(bool, bool, int64_t, int64_t, int64_t, const double*, int64_t, const double*,
                                int64_t, const double*, double*, int64_t);

}  // namespace vlmc::kernels::cpu
