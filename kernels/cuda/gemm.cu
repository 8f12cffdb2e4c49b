// CUDA GEMM (see kernels/gemm.h) through cuBLAS.
//
// cuBLAS is column-major. A row-major [m, n] matrix C has the bytes of a
// column-major [n, m] matrix, Cᵀ, so C = op(A)·op(B) is computed as
// Cᵀ = op(B)ᵀ·op(A)ᵀ: the operands swap places and m and n swap, while each
// keeps its own transpose flag and leading dimension.
//
// One cuBLAS handle per device, created on first use and kept for the life of
// the process (destroying it during static teardown would race the CUDA
// context's own teardown). The table's mutex is held across set-stream + the
// call so two host threads cannot retarget a handle under each other.
//
// Math mode: CUBLAS_DEFAULT_MATH, which never lowers f32 products to TF32
// (only CUBLAS_TF32_TENSOR_OP_MATH would), so f32 results agree with the CPU
// at ~1e-6 relative. The _64 entry points take 64-bit sizes.
//
// With VLMC_CUDA_SYNC=1 every cuBLAS call is followed by a device wait, as
// our own launches are (kernels/cuda/check.h).
//
// gemm_bf16 (autocast's products) goes through cublasGemmStridedBatchedEx with
// bf16 A and B, f32 C and CUBLAS_COMPUTE_32F: the operands are already bf16,
// so tensor cores may run it, and the accumulation stays f32 either way.
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_gemm
//   build/tests/vlmc_cuda_tests "[linalg],[autocast]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_gemm --cuda-only [--quick]   # validates each version, then times it
#include <algorithm>
#include <cublas_v2.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/gemm.h"

namespace vlmc::kernels::cuda {
namespace {

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS error: ") + cublasGetStatusName(status) + " (" +
                             cublasGetStatusString(status) + ") in " + what);
}

struct HandleTable {
  std::mutex mutex;
  std::vector<cublasHandle_t> handles;  // indexed by device; null until first use
};

HandleTable& handle_table() {
  static HandleTable* table = new HandleTable();  // never destroyed, see above
  return *table;
}

// Runs f(handle) with the current device's handle bound to stream.
template <typename F>
void with_handle(cudaStream_t stream, F&& f) {
  int device = 0;
  VLMC_CUDA_CHECK(cudaGetDevice(&device));
  HandleTable& table = handle_table();
  std::lock_guard<std::mutex> lock(table.mutex);
  if (static_cast<size_t>(device) >= table.handles.size())
    table.handles.resize(static_cast<size_t>(device) + 1, nullptr);
  cublasHandle_t& handle = table.handles[static_cast<size_t>(device)];
  if (handle == nullptr) {
    check_cublas(cublasCreate(&handle), "cublasCreate");
    check_cublas(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  }
  check_cublas(cublasSetStream(handle, stream), "cublasSetStream");
  f(handle);
}

cublasOperation_t op(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// cuBLAS rejects leading dimensions below 1 even where nothing is read.
int64_t ld_of(int64_t ld) { return ld < 1 ? 1 : ld; }

// Type-overloaded cuBLAS calls, already in the swapped (column-major) order.
cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t tb, cublasOperation_t ta, int64_t n,
                         int64_t m, int64_t k, const float* alpha, const float* b, int64_t ldb,
                         int64_t sb, const float* a, int64_t lda, int64_t sa, const float* beta,
                         float* c, int64_t ldc, int64_t sc, int64_t batch) {
  return cublasSgemmStridedBatched_64(h, tb, ta, n, m, k, alpha, b, ldb, sb, a, lda, sa, beta, c,
                                      ldc, sc, batch);
}

cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t tb, cublasOperation_t ta, int64_t n,
                         int64_t m, int64_t k, const double* alpha, const double* b, int64_t ldb,
                         int64_t sb, const double* a, int64_t lda, int64_t sa, const double* beta,
                         double* c, int64_t ldc, int64_t sc, int64_t batch) {
  return cublasDgemmStridedBatched_64(h, tb, ta, n, m, k, alpha, b, ldb, sb, a, lda, sa, beta, c,
                                      ldc, sc, batch);
}

cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t tb, cublasOperation_t ta, int64_t n,
                         int64_t m, int64_t k, const float* alpha, const float* b, int64_t ldb,
                         const float* a, int64_t lda, const float* beta, float* c, int64_t ldc) {
  return cublasSgemm_64(h, tb, ta, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
}

cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t tb, cublasOperation_t ta, int64_t n,
                         int64_t m, int64_t k, const double* alpha, const double* b, int64_t ldb,
                         const double* a, int64_t lda, const double* beta, double* c, int64_t ldc) {
  return cublasDgemm_64(h, tb, ta, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
}

// Block (x) over a tile of columns, rows strided over grid y: each thread
// reads its row element once and writes it down its column, coalesced across
// the warp, with no index division (the element-per-thread version spent
// 200 us on a 9216 x 4096 f32 output on an H200, 2026-12-04: a fifth of the
// copy bandwidth).
template <typename T>
__global__ void broadcast_rows_kernel(T* c, const T* row, int64_t m, int64_t n, int64_t ldc) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  const T value = row[j];
  for (int64_t i = blockIdx.y; i < m; i += gridDim.y) c[i * ldc + j] = value;
}

}  // namespace

template <typename T>
void broadcast_rows(T* c, const T* row, int64_t m, int64_t n, int64_t ldc, cudaStream_t stream) {
  const int64_t total = m * n;
  if (total == 0) return;
  constexpr int kBlock = 256;
  const dim3 grid(static_cast<unsigned>((n + kBlock - 1) / kBlock), static_cast<unsigned>(std::min<int64_t>(m, 1024)));
  broadcast_rows_kernel<T><<<grid, kBlock, 0, stream>>>(c, row, m, n, ldc);
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc, cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  with_handle(stream, [&](cublasHandle_t h) {
    check_cublas(gemm_call(h, op(trans_b), op(trans_a), n, m, k, &alpha, b, ld_of(ldb), a,
                           ld_of(lda), &beta, c, ld_of(ldc)),
                 "gemm");
  });
  VLMC_CUDA_SYNC_CHECK();
}

template <typename T>
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                          const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, T beta, T* c, int64_t ldc, int64_t stride_c,
                          int64_t batch, cudaStream_t stream) {
  if (m == 0 || n == 0 || batch == 0) return;
  if (batch == 1) {
    gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, stream);
    return;
  }
  with_handle(stream, [&](cublasHandle_t h) {
    check_cublas(gemm_call(h, op(trans_b), op(trans_a), n, m, k, &alpha, b, ld_of(ldb), stride_b, a,
                           ld_of(lda), stride_a, &beta, c, ld_of(ldc), stride_c, batch),
                 "gemm_strided_batched");
  });
  VLMC_CUDA_SYNC_CHECK();
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const uint16_t* a, int64_t lda, int64_t stride_a, const uint16_t* b, int64_t ldb,
               int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c,
               int64_t batch, cudaStream_t stream) {
  if (m == 0 || n == 0 || batch == 0) return;
  // Same swap as gemm_call: Cᵀ = op(B)ᵀ·op(A)ᵀ in cuBLAS's column-major terms.
  with_handle(stream, [&](cublasHandle_t h) {
    check_cublas(cublasGemmStridedBatchedEx_64(h, op(trans_b), op(trans_a), n, m, k, &alpha, b,
                                               CUDA_R_16BF, ld_of(ldb), stride_b, a, CUDA_R_16BF,
                                               ld_of(lda), stride_a, &beta, c, CUDA_R_32F,
                                               ld_of(ldc), stride_c, batch, CUBLAS_COMPUTE_32F,
                                               CUBLAS_GEMM_DEFAULT),
                 "gemm_bf16");
  });
  VLMC_CUDA_SYNC_CHECK();
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t, cudaStream_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t, cudaStream_t);
template void gemm_strided_batched<float>(bool, bool, int64_t, int64_t, int64_t, float,
                                          const float*, int64_t, int64_t, const float*, int64_t,
                                          int64_t, float, float*, int64_t, int64_t, int64_t,
                                          cudaStream_t);
template void gemm_strided_batched<double>(bool, bool, int64_t, int64_t, int64_t, double,
                                           const double*, int64_t, int64_t, const double*, int64_t,
                                           int64_t, double, double*, int64_t, int64_t, int64_t,
                                           cudaStream_t);
template void broadcast_rows<float>(float*, const float*, int64_t, int64_t, int64_t, cudaStream_t);
template void broadcast_rows<double>(double*, const double*, int64_t, int64_t, int64_t,
                                     cudaStream_t);

}  // namespace vlmc::kernels::cuda
