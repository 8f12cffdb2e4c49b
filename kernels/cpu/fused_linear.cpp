// CPU fused linear + bias + GELU (see kernels/fused_linear.h).
//
// Forward: the rows of x are taken in blocks whose output [rows, n] fits in
// the L3 cache (see block_rows for why not L2). Each block is one sgemm
// (OpenBLAS, through kernels::cpu::gemm, threaded by OpenBLAS) followed at
// once by the bias + GELU epilogue on the block it just wrote, while the block
// is still cached. So the epilogue costs its arithmetic, not another trip
// through memory, and the op runs close to the GEMM's speed
// (bench/bench_fused_linear.cpp measures it against plain sgemm).
//
// The f32 epilogue needs erf (exact GELU) or exp (tanh GELU, and both
// derivatives) for every element: std::erf is a call of ~7 ns per element,
// which would cost the op a third of its speed (the unfused gelu op does).
// erf_f32 and exp_f32 below are branch-free polynomials on std::fma that GCC
// vectorizes with AVX2 (8 lanes), about 2 cycles per element for the exact
// GELU, ~5 % of the GEMM's time at K = 1024. f64 keeps std::erf and
// std::exp (kernels/elementwise.h's unary_value/unary_grad, the same formulas
// as the unfused gelu op): f64 serves gradient checks, where exactness counts.
//
// Backward: dz = dy ⊙ GELU'(z) and db = Σ_rows dz in one pass. Threads take
// column chunks, each sums its columns down all rows in row order into double
// accumulators, so db does not depend on the thread count.
#include "kernels/fused_linear.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace vlmc::kernels::cpu {
namespace {

// ---- f32 erf and exp -----------------------------------------------------------
//
// erf: two polynomials, both evaluated for every lane and one selected (no
// branch, so the loop vectorizes). Coefficients are minimax fits (Lawson's
// iteration on a Chebyshev basis, double precision, rounded to f32); the
// derivation is in docs/kernels/fused_linear.md. With f32 arithmetic on fma
// the largest error against the exact erf is 9e-8 (tested in
// tests/kernels/test_fused_linear.cpp over a dense sweep).
//   |x| < 1.1:   erf(x) = x·(c0 + R(x²)), c0 split as kErfC0 + R's constant
//                term so that the leading product is rounded once (fma).
//   1.1..3.92:   erf(x) = P(|x| - 2.51), degree 12.
//   >= 3.92:     1 - erf(3.92) = 3e-8 rounds to 1 in f32: |x| is clamped.
constexpr float kErfSplit = 1.1f;
constexpr float kErfClamp = 3.92f;
constexpr float kErfMid = 2.51f;
constexpr float kErfC0 = 1.12837911f;  // 2/√π rounded to f32; R[0] carries the rest
constexpr float kErfR[7] = {5.64938105e-08f,  -0.376126051f,    0.112833343f,     -0.0268429201f,
                            0.00516718952f,   -0.000782270683f, 7.23421035e-05f};
constexpr float kErfP[13] = {0.999614298f,     0.00207163976f,   -0.00520107197f,  0.00801441539f,
                             -0.00831494108f,  0.00593622494f,   -0.00277617294f,  0.000591149961f,
                             0.000260390516f,  -0.000271940138f, 6.47331835e-05f,  1.98102516e-05f,
                             -9.22491017e-06f};

// c[0] + t·(c[1] + t·(...)), written out at compile time: a loop here would
// leave an inner loop in the caller's loop body and stop GCC vectorizing it.
template <int I = 0, int N>
inline float horner(const float (&c)[N], float t) {
  if constexpr (I == N - 1) {
    return c[I];
  } else {
    return std::fma(horner<I + 1>(c, t), t, c[I]);
  }
}

// c ? a : b on the bits. Both operands are computed anyway; a plain ?: on a
// float comparison is kept as a branch (GCC will not speculate floating-point
// operations that might trap), which stops the loop from vectorizing.
inline float select(bool c, float a, float b) {
  const uint32_t mask = 0u - static_cast<uint32_t>(c);
  return std::bit_cast<float>((std::bit_cast<uint32_t>(a) & mask) |
                              (std::bit_cast<uint32_t>(b) & ~mask));
}

inline float erf_f32(float x) {
  const float a = std::fabs(x);
  const float t = a * a;
  const float small = std::fma(a, kErfC0, a * horner(kErfR, t));
  // The clamps are selects too (std::min here also blocks vectorization); a
  // NaN fails every comparison and so passes through.
  const float p = horner(kErfP, select(a > kErfClamp, kErfClamp, a) - kErfMid);
  const float large = select(p > 1.0f, 1.0f, p);
  return std::copysign(select(a < kErfSplit, small, large), x);
}

// exp: y = n·ln2 + r with |r| <= ln2/2 (n by the round-to-nearest magic
// constant, ln2 split in two so n·ln2_hi is exact), exp(r) by a degree-6
// minimax polynomial, 2^n put into the exponent bits. Inputs are clamped to
// [-87.3, 88.3] so that 2^n stays a normal f32 (n in [-126, 127]).
constexpr float kExpP[7] = {1.0f,          1.0f,         0.5f,         0.166664153f,
                            0.041666083f,  0.00837512873f, 0.00139560469f};
constexpr float kLog2e = 1.44269504f;
constexpr float kLn2Hi = 0.693145751953125f;  // 16 significant bits
constexpr float kLn2Lo = 1.42860682e-06f;
constexpr float kRoundMagic = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer

inline float exp_f32(float y) {
  y = std::min(std::max(y, -87.3f), 88.3f);
  const float n = std::fma(y, kLog2e, kRoundMagic) - kRoundMagic;
  float r = std::fma(-n, kLn2Hi, y);
  r = std::fma(-n, kLn2Lo, r);
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return horner(kExpP, r) * scale;
}

constexpr float kSqrt1_2f = static_cast<float>(kSqrt1_2);
constexpr float kInvSqrt2Pif = static_cast<float>(kInvSqrt2Pi);
constexpr float kTwoSqrt2OverPif = static_cast<float>(2 * kSqrt2OverPi);
constexpr float kGeluCubicf = static_cast<float>(kGeluCubic);

// ---- GELU and its derivative ---------------------------------------------------------
//
// f32, exact:  0.5·z·(1 + erf(z/√2)),  GELU' = Φ(z) + z·φ(z).
// f32, tanh:   0.5·z·(1 + tanh(u)) = z·sigmoid(2u) = z / (1 + exp(-2u)),
//              u = √(2/π)·(z + 0.044715·z³): one exp instead of a tanh, and no
//              cancellation in 1 + tanh(u) for negative z.
//              GELU' = s + z·s·(1 - s)·2u', s = sigmoid(2u), 1 - s = s·exp(-2u).
template <GeluKind K>
inline float gelu_value(float z) {
  if constexpr (K == GeluKind::erf) {
    return 0.5f * z * (1.0f + erf_f32(z * kSqrt1_2f));
  } else {
    const float v = kTwoSqrt2OverPif * std::fma(kGeluCubicf * z, z * z, z);
    return z / (1.0f + exp_f32(-v));
  }
}

template <GeluKind K>
inline float gelu_grad(float z) {
  if constexpr (K == GeluKind::erf) {
    const float cdf = 0.5f * (1.0f + erf_f32(z * kSqrt1_2f));
    const float pdf = kInvSqrt2Pif * exp_f32(-0.5f * z * z);
    return std::fma(z, pdf, cdf);
  } else {
    const float z2 = z * z;
    const float v = kTwoSqrt2OverPif * std::fma(kGeluCubicf * z, z2, z);
    const float dv = kTwoSqrt2OverPif * std::fma(3.0f * kGeluCubicf, z2, 1.0f);
    const float e = exp_f32(-v);
    const float s = 1.0f / (1.0f + e);
    return std::fma(z * s * (s * e), dv, s);
  }
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

// Column chunks: one thread owns columns [c0, c0 + width) of every row and
// sums them in row order, in double.
constexpr int64_t kChunk = 256;

template <typename T, GeluKind K>
void backward_with_bias(T* dz, T* db, const T* dy, const T* z, int64_t m, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1 && m * n > (int64_t(1) << 14))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t c0 = c * kChunk, width = std::min(kChunk, n - c0);
    double acc[kChunk] = {};
    for (int64_t i = 0; i < m; ++i) {
      T* __restrict out = dz + i * n + c0;
      const T* g = dy + i * n + c0;
      const T* __restrict zi = z + i * n + c0;
      for (int64_t j = 0; j < width; ++j) {
        const T d = g[j] * gelu_grad<K>(zi[j]);
        out[j] = d;
        acc[j] += static_cast<double>(d);
      }
    }
    for (int64_t j = 0; j < width; ++j) db[c0 + j] = static_cast<T>(acc[j]);
  }
}

template <typename T, GeluKind K>
void backward(T* dz, T* db, const T* dy, const T* z, int64_t m, int64_t n) {
  if (db == nullptr) {
    backward_rows<T, K>(dz, dy, z, m, n);
  } else {
    backward_with_bias<T, K>(dz, db, dy, z, m, n);
  }
}

}  // namespace

template <typename T>
void linear_gelu(T* y, T* z, const T* x, const T* w, const T* b, int64_t m, int64_t n, int64_t k,
                 GeluKind kind) {
  if (m == 0 || n == 0) return;
  const int64_t rows = block_rows(m, n, sizeof(T));
  for (int64_t r0 = 0; r0 < m; r0 += rows) {
    const int64_t mb = std::min(rows, m - r0);
    T* yb = y + r0 * n;
    T* zb = z != nullptr ? z + r0 * n : nullptr;
    // The GEMM writes x·wᵀ where the epilogue reads it: z when kept, else y.
    gemm<T>(false, true, mb, n, k, T(1), x + r0 * k, k, w, k, T(0), zb != nullptr ? zb : yb, n);
    if (kind == GeluKind::erf) {
      epilogue<T, GeluKind::erf>(yb, zb, b, mb, n);
    } else {
      epilogue<T, GeluKind::tanh>(yb, zb, b, mb, n);
    }
  }
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
  for (int64_t i = 0; i < n; ++i) out[i] = erf_f32(in[i]);
}

void exp_fast(float* out, const float* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = exp_f32(in[i]);
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
