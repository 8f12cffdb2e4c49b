// CPU fused linear + bias + GELU (see kernels/fused_linear.h).
//
// Forward: the rows of x are taken in blocks whose output [rows, n] fits in
// the L3 cache (see block_rows for why not L2). Each block is one product
// (kernels::cpu::gemm: oneDNN's matmul where it has a kernel for this CPU,
// else OpenBLAS; gemm_bf16 under autocast) followed at
// once by the bias + GELU epilogue on the block it just wrote, while the block
// is still cached. So the epilogue costs its arithmetic, not another trip
// through memory, and the op runs close to the GEMM's speed
// (bench/bench_fused_linear.cpp measures it against plain sgemm).
//
// The f32 epilogue needs erf (exact GELU) or exp (tanh GELU, and both
// derivatives) for every element: std::erf is a call of ~7 ns per element,
// which would cost the op a third of its speed (the unfused gelu op does).
// erf_f32 and exp_f32 (kernels/cpu/fast_math.h) are branch-free polynomials on std::fma that GCC
// vectorizes with AVX2 (8 lanes), about 2 cycles per element for the exact
// GELU, ~5 % of the GEMM's time at K = 1024. f64 keeps std::erf and
// std::exp (kernels/elementwise.h's unary_value/unary_grad, the same formulas
// as the unfused gelu op): f64 serves gradient checks, where exactness counts.
//
// Backward: dz = dy ⊙ GELU'(z) by rows, then db = Σ_rows dz, each column summed
// down all rows in row order into a double accumulator, so db does not depend
// on the thread count.
#include "kernels/fused_linear.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/fast_math.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/reduce.h"

namespace vlmc::kernels::cpu {
namespace {

// ---- GELU: f32 through the fast polynomials, f64 exact ------------------------------

template <GeluKind K>
inline float gelu_value(float z) {
  return fast::gelu_value<K == GeluKind::tanh>(z);
}

template <GeluKind K>
inline float gelu_grad(float z) {
  return fast::gelu_grad<K == GeluKind::tanh>(z);
}

template <GeluKind K>
inline double gelu_value(double z) {
  return unary_value<K == GeluKind::erf ? UnaryOp::gelu : UnaryOp::gelu_tanh, double>(z, 0.0);
}

template <GeluKind K>
inline double gelu_grad(double z) {
  return unary_grad<K == GeluKind::erf ? UnaryOp::gelu : UnaryOp::gelu_tanh, double>(1.0, z, 0.0,
                                                                                      0.0);
}

// ---- forward epilogue -------------------------------------------------------------------

// One row: acc holds x·wᵀ for the row. With z: z = acc + b in place, y = GELU(z).
// Without z: y = GELU(acc + b), acc being y itself (in place).
template <typename T, GeluKind K, bool kBias, bool kKeepZ>
void epilogue_row(T* __restrict y, T* __restrict z, const T* __restrict b, int64_t n) {
  if constexpr (kKeepZ) {
    for (int64_t j = 0; j < n; ++j) {
      const T v = kBias ? z[j] + b[j] : z[j];
      z[j] = v;
      y[j] = gelu_value<K>(v);
    }
  } else {
    for (int64_t j = 0; j < n; ++j) y[j] = gelu_value<K>(kBias ? y[j] + b[j] : y[j]);
  }
}

template <typename T, GeluKind K, bool kBias, bool kKeepZ>
void epilogue_block(T* y, T* z, const T* b, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n > (int64_t(1) << 14))
  for (int64_t i = 0; i < rows; ++i)
    epilogue_row<T, K, kBias, kKeepZ>(y + i * n, kKeepZ ? z + i * n : nullptr, b, n);
}

template <typename T, GeluKind K>
void epilogue(T* y, T* z, const T* b, int64_t rows, int64_t n) {
  if (b != nullptr && z != nullptr) epilogue_block<T, K, true, true>(y, z, b, rows, n);
  else if (b != nullptr) epilogue_block<T, K, true, false>(y, z, b, rows, n);
  else if (z != nullptr) epilogue_block<T, K, false, true>(y, z, b, rows, n);
  else epilogue_block<T, K, false, false>(y, z, b, rows, n);
}

// Rows per block. Each block is one OpenBLAS call, and each call packs all of
// w again (16 MiB at 1024 -> 4096), while the block's output should still be
// in cache when the epilogue reads it: the blocks are sized for the shared L3
// (32 MiB on the machines this was tuned on) rather than for L2, whose 64-row
// blocks would spend more on repacking w than the epilogue costs (the sweep
// is in docs/kernels/fused_linear.md). The rows are split evenly between the
// blocks, so no block is a small remainder.
constexpr int64_t kBlockBytes = int64_t(16) << 20;
constexpr int64_t kMinBlockRows = 64;

int64_t block_rows(int64_t m, int64_t n, size_t elem) {
  const int64_t fit = kBlockBytes / std::max<int64_t>(n * static_cast<int64_t>(elem), 1);
  const int64_t rows = std::max(kMinBlockRows, fit);
  const int64_t blocks = (m + rows - 1) / rows;
  return (m + blocks - 1) / blocks;
}

// ---- backward ------------------------------------------------------------------------------

template <typename T, GeluKind K>
void backward_rows(T* dz, const T* dy, const T* z, int64_t m, int64_t n) {
  const int64_t total = m * n;
#pragma omp parallel for schedule(static) if (total > (int64_t(1) << 14))
  for (int64_t i = 0; i < m; ++i) {
    T* __restrict out = dz + i * n;
    const T* g = dy + i * n;
    const T* __restrict zi = z + i * n;
    for (int64_t j = 0; j < n; ++j) out[j] = g[j] * gelu_grad<K>(zi[j]);
  }
}

// dz row by row (split across threads by rows), then db from dz by
// column_sums (kernels/reduce.h: each thread sums a contiguous share of the
// columns down all rows, in row order, in double). One pass that
// summed as it went, threads owning chunks of 256 columns, was slower (AMD
// EPYC, m = 1088, erf, best of 200 calls; 1 thread: 382 against 350 µs at n =
// 256, 10.3 against 6.6 ms at n = 4096; 2 threads: 382 against 253 µs, 5.2-5.4
// against 3.2-3.6 ms): GCC ran its polynomials slower than in the plain row
// loop, and CLIP's fc1 (n = 256) was one chunk, so one thread did all of it
// while the other waited.
template <typename T, GeluKind K>
void backward_with_bias(T* dz, T* db, const T* dy, const T* z, int64_t m, int64_t n) {
  backward_rows<T, K>(dz, dy, z, m, n);
  column_sums<T>(db, dz, m, n);
}

template <typename T, GeluKind K>
void backward(T* dz, T* db, const T* dy, const T* z, int64_t m, int64_t n) {
  if (db == nullptr) {
    backward_rows<T, K>(dz, dy, z, m, n);
  } else {
    backward_with_bias<T, K>(dz, db, dy, z, m, n);
  }
}

// The row blocks both forms share: gemm_block(r0, rows, out) writes
// x[r0 : r0 + rows] · wᵀ into out [rows, n], then the epilogue runs on it.
template <typename T, typename GemmBlock>
void blocked_forward(T* y, T* z, const T* b, int64_t m, int64_t n, int64_t rows, GeluKind kind,
                     const GemmBlock& gemm_block) {
  for (int64_t r0 = 0; r0 < m; r0 += rows) {
    const int64_t mb = std::min(rows, m - r0);
    T* yb = y + r0 * n;
    T* zb = z != nullptr ? z + r0 * n : nullptr;
    // The GEMM writes x·wᵀ where the epilogue reads it: z when kept, else y.
    gemm_block(r0, mb, zb != nullptr ? zb : yb);
    if (kind == GeluKind::erf) {
      epilogue<T, GeluKind::erf>(yb, zb, b, mb, n);
    } else {
      epilogue<T, GeluKind::tanh>(yb, zb, b, mb, n);
    }
  }
}

}  // namespace

template <typename T>
void linear_gelu(T* y, T* z, const T* x, const T* w, const T* b, int64_t m, int64_t n, int64_t k,
                 GeluKind kind) {
  if (m == 0 || n == 0) return;
  blocked_forward(y, z, b, m, n, block_rows(m, n, sizeof(T)), kind, [&](int64_t r0, int64_t mb, T* out) {
    gemm<T>(false, true, mb, n, k, T(1), x + r0 * k, k, w, k, T(0), out, n);
  });
}

void linear_gelu_bf16(float* y, float* z, const uint16_t* x, const uint16_t* w, const uint16_t* b, int64_t m,
                      int64_t n, int64_t k, GeluKind kind) {
  if (m == 0 || n == 0) return;
  std::vector<float> bias;  // b widened: exact, and the epilogue's f32 add as in the widened path
  if (b != nullptr) {
    bias.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) bias[static_cast<size_t>(j)] = bf16_bits_to_float(b[j]);
  }
  blocked_forward(y, z, b != nullptr ? bias.data() : nullptr, m, n, block_rows(m, n, sizeof(float)), kind,
                  [&](int64_t r0, int64_t mb, float* out) {
                    gemm_bf16(false, true, mb, n, k, 1.0f, x + r0 * k, k, 0, w, k, 0, 0.0f, out, n, 0, 1);
                  });
}

template <typename T>
void linear_gelu_backward(T* dz, T* db, const T* dy, const T* z, int64_t m, int64_t n,
                          GeluKind kind) {
  if (n == 0) return;
  if (m == 0) {
    if (db != nullptr) std::fill(db, db + n, T(0));
    return;
  }
  if (kind == GeluKind::erf) {
    backward<T, GeluKind::erf>(dz, db, dy, z, m, n);
  } else {
    backward<T, GeluKind::tanh>(dz, db, dy, z, m, n);
  }
}

void erf_fast(float* out, const float* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = fast::erf_f32(in[i]);
}

void exp_fast(float* out, const float* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = fast::exp_f32(in[i]);
}

template void linear_gelu<float>(float*, float*, const float*, const float*, const float*, int64_t,
                                 int64_t, int64_t, GeluKind);
template void linear_gelu<double>(double*, double*, const double*, const double*, const double*,
                                  int64_t, int64_t, int64_t, GeluKind);
template void linear_gelu_backward<float>(float*, float*, const float*, const float*, int64_t,
                                          int64_t, GeluKind);
template void linear_gelu_backward<double>(double*, double*, const double*, const double*,
                                           int64_t, int64_t, GeluKind);

}  // namespace vlmc::kernels::cpu
