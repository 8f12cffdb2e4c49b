// CPU bf16 GEMM (see kernels/gemm.h), the oracle of autocast's products.
//
// oneDNN multiplies the bf16 operands directly where this CPU has a JIT
// kernel for them (AVX512-BF16, AMX; kernels/cpu/onednn_matmul.h).
//
// Elsewhere (an AVX2-only CPU, a build without oneDNN, VLMC_GEMM=openblas):
// widening bf16 to f32 is exact (a bf16 is the top half of an f32), so
// widening the operands and running the f32 GEMM computes exactly "bf16
// operands, f32 accumulation" up to summation order, at f32 GEMM speed, with
// no second GEMM implementation to trust. Each operand's distinct matrices
// (one when its batch stride is 0) are packed densely into one f32 scratch,
// so the scratch is the size of the data read, whatever the leading
// dimensions and strides, and padding between rows is never touched. The
// scratch is the calling thread's, kept between calls up to 64 MiB an operand
// (scratch() below).
#include <memory>

#include "kernels/cpu/onednn_matmul.h"
#include "kernels/dtype.h"
#include "kernels/gemm.h"

namespace vlmc::kernels::cpu {
namespace {

// The widened operands' memory. Up to kKeptBytes per operand it is this
// thread's scratch (slot 0: A, 1: B), grown to the largest asked for and kept:
// a fresh allocation per product came from mmap and faulted in every page
// again (78,854 faults, 323 MB, per step of the MLP connector with
// VLMC_GEMM_BF16=widened; docs/perf.md). Larger operands (a 32000-row
// lm_head) get a buffer of their own for the call, so that what a run keeps
// beyond its tensors stays bounded (2 x 64 MiB per calling thread).
constexpr int64_t kKeptBytes = int64_t(64) << 20;

// A stored operand ([rows, cols] per matrix, leading dim ld, batch stride) widened
// to f32, packed: matrix i at data + i * stride, rows of cols elements.
struct Widened {
  float* data = nullptr;
  std::unique_ptr<float[]> own;  // set when the operand is too large for the kept scratch
  int64_t ld = 1;
  int64_t stride = 0;
};

float* scratch(int slot, int64_t elements, std::unique_ptr<float[]>& own) {
  if (elements * static_cast<int64_t>(sizeof(float)) > kKeptBytes) {
    own.reset(new float[static_cast<size_t>(elements)]);  // uninitialised: every element is written
    return own.get();
  }
  struct Buffer {
    std::unique_ptr<float[]> data;
    int64_t size = 0;
  };
  thread_local Buffer buffers[2];
  Buffer& b = buffers[slot];
  if (elements > b.size) {
    b.data.reset();  // the old one goes first: the peak holds one buffer, not two
    b.data.reset(new float[static_cast<size_t>(elements)]);
    b.size = elements;
  }
  return b.data.get();
}

Widened widen(int slot, const uint16_t* src, int64_t rows, int64_t cols, int64_t ld, int64_t stride,
              int64_t batch) {
  const int64_t matrices = stride == 0 ? 1 : batch;
  const int64_t per_matrix = rows * cols;
  Widened w;
  w.ld = cols < 1 ? 1 : cols;
  w.stride = stride == 0 ? 0 : per_matrix;
  w.data = scratch(slot, matrices * per_matrix > 0 ? matrices * per_matrix : 1, w.own);
  float* dst = w.data;
  const int64_t total_rows = matrices * rows;
#pragma omp parallel for schedule(static) if (matrices * per_matrix > (int64_t(1) << 15))
  for (int64_t r = 0; r < total_rows; ++r) {
    const int64_t i = r / rows, row = r - i * rows;
    const uint16_t* in = src + i * stride + row * ld;
    float* out = dst + r * cols;
    for (int64_t j = 0; j < cols; ++j) out[j] = bf16_bits_to_float(in[j]);
  }
  return w;
}

}  // namespace

void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const uint16_t* a, int64_t lda, int64_t stride_a, const uint16_t* b, int64_t ldb,
               int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c,
               int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {  // C = beta * C: the f32 path never reads the operands
    gemm_strided_batched<float>(trans_a, trans_b, m, n, 0, alpha, nullptr, 1, 0, nullptr, 1, 0,
                                beta, c, ldc, stride_c, batch);
    return;
  }
  if (alpha != 0.0f && onednn::matmul(onednn::Operands::bf16, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a,
                                        b, ldb, stride_b, beta, c, ldc, stride_c, batch))
    return;
  // Stored shapes: A is [m, k] or, transposed, [k, m]; B is [k, n] or [n, k].
  const Widened wa = widen(0, a, trans_a ? k : m, trans_a ? m : k, lda, stride_a, batch);
  const Widened wb = widen(1, b, trans_b ? n : k, trans_b ? k : n, ldb, stride_b, batch);
  gemm_strided_batched<float>(trans_a, trans_b, m, n, k, alpha, wa.data, wa.ld, wa.stride, wb.data, wb.ld,
                              wb.stride, beta, c, ldc, stride_c, batch);
}

void gemm_bf16_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const uint16_t* a,
                    int64_t lda, const uint16_t* b, int64_t ldb, const float* bias, float* c, int64_t ldc) {
  if (m > 0 && n > 0 && k > 0 &&
      onednn::matmul(onednn::Operands::bf16, trans_a, trans_b, m, n, k, 1.0f, a, lda, 0, b, ldb, 0, 0.0f, c, ldc, 0,
                     1, bias))
    return;
  broadcast_rows<float>(c, bias, m, n, ldc);
  gemm_bf16(trans_a, trans_b, m, n, k, 1.0f, a, lda, 0, b, ldb, 0, 1.0f, c, ldc, 0, 1);
}

}  // namespace vlmc::kernels::cpu
