// CPU products with a bf16 / f16 weight (see kernels/gemm_lowp_weight.h).
//
// The streaming kernel (m <= kLowpGemvRows): decode multiplies one or a few
// activation rows by every weight, so the time is the time to read the
// weight once; f32 weights read 4 bytes per element, these read 2. A task
// owns 4 consecutive output columns (4 weight rows) and walks k in steps of
// 8: each weight vector is loaded, widened in a register (bf16 -> f32 is the
// 16 bits shifted up; f16 -> f32 is F16C's vcvtph2ps) and multiplied into
// 4 (one row) or 8 (two rows) independent f32 accumulators, which the 4
// memory streams and the FMA latency both need. Rows beyond 2 go round
// again over the same 4 weight rows, by then in L1/L2. The k tail (k % 8)
// and the column tail (n % 4) use the same per-element order in scalar code.
//
// Everything else widens the weight tile by tile into an f32 scratch and
// hands the tile to the f32 GEMM (kernels/cpu/gemm.cpp: oneDNN, else
// OpenBLAS): compute-bound shapes run at sgemm speed, and the scratch stays a
// few MB whatever the weight's size.
#include "kernels/gemm_lowp_weight.h"

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernels/cpu/onednn_matmul.h"
#include "kernels/gemm.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define VLMC_LOWP_AVX2 1
#endif

namespace vlmc::kernels::cpu {
namespace {

template <DType D>
inline float widen1(uint16_t h) {
  if constexpr (D == DType::bf16) {
    return bf16_bits_to_float(h);
  } else {
    return f16_bits_to_float(h);
  }
}

#ifdef VLMC_LOWP_AVX2
template <DType D>
inline __m256 widen8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (D == DType::bf16) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_cvtph_ps(h);
  }
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// y[r, c] (+ beta * y) for R activation rows and C weight rows (output columns).
template <DType D, int R, int C>
void tile(const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, int64_t k, float beta, float* y,
          int64_t ldy) {
  float sums[R][C] = {};
  int64_t i = 0;
#ifdef VLMC_LOWP_AVX2
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  // One cache line (32 elements) of each weight row per step, the same line
  // of the next C rows prefetched: a row of a few KB is about one page, so
  // the hardware prefetcher, which stops at page boundaries, would restart
  // on every row.
  for (; i + 32 <= k; i += 32) {
    for (int c = 0; c < C; ++c)
      _mm_prefetch(reinterpret_cast<const char*>(w + (C + c) * ldw + i), _MM_HINT_T0);
    for (int u = 0; u < 32; u += 8) {
      __m256 xv[R];
      for (int r = 0; r < R; ++r) xv[r] = _mm256_loadu_ps(x + r * ldx + i + u);
      for (int c = 0; c < C; ++c) {
        const __m256 wv = widen8<D>(w + c * ldw + i + u);
        for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
      }
    }
  }
  for (; i + 8 <= k; i += 8) {
    __m256 xv[R];
    for (int r = 0; r < R; ++r) xv[r] = _mm256_loadu_ps(x + r * ldx + i);
    for (int c = 0; c < C; ++c) {
      const __m256 wv = widen8<D>(w + c * ldw + i);
      for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) sums[r][c] = hsum(acc[r][c]);
#endif
  for (; i < k; ++i)
    for (int c = 0; c < C; ++c) {
      const float wv = widen1<D>(w[c * ldw + i]);
      for (int r = 0; r < R; ++r) sums[r][c] += x[r * ldx + i] * wv;
    }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float& out = y[r * ldy + c];
      out = beta == 0.0f ? sums[r][c] : sums[r][c] + beta * out;
    }
}

template <DType D, int C>
void rows(int64_t m, const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, int64_t k, float beta, float* y,
          int64_t ldy) {
  int64_t r = 0;
  for (; r + 2 <= m; r += 2) tile<D, 2, C>(x + r * ldx, ldx, w, ldw, k, beta, y + r * ldy, ldy);
  if (r < m) tile<D, 1, C>(x + r * ldx, ldx, w, ldw, k, beta, y + r * ldy, ldy);
}

template <DType D>
void gemv_nt(int64_t m, int64_t n, int64_t k, const float* x, int64_t ldx, const uint16_t* w, int64_t ldw,
             float beta, float* y, int64_t ldy) {
  const int64_t blocks = (n + 3) / 4;
  // Below ~64 K weights the fork costs more than the work. Dynamic chunks of
  // 64 columns: on a shared machine a thread that loses its core would
  // otherwise hold up the whole product (each output is still summed by one
  // thread, in a fixed order).
#pragma omp parallel for schedule(dynamic, 16) if (n * k >= (int64_t(1) << 16) && blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j = b * 4;
    if (j + 4 <= n) {
      rows<D, 4>(m, x, ldx, w + j * ldw, ldw, k, beta, y + j, ldy);
    } else {
      for (int64_t c = j; c < n; ++c) rows<D, 1>(m, x, ldx, w + c * ldw, ldw, k, beta, y + c, ldy);
    }
  }
}

// Rows [row0, row0 + count) of w [*, k] widened into dst [count, k].
void widen_rows(float* dst, const uint16_t* w, int64_t ldw, DType w_dtype, int64_t row0, int64_t count, int64_t k) {
#pragma omp parallel for schedule(static) if (count * k >= (int64_t(1) << 15))
  for (int64_t r = 0; r < count; ++r) {
    const uint16_t* in = w + (row0 + r) * ldw;
    float* out = dst + r * k;
    if (w_dtype == DType::bf16) {
      for (int64_t i = 0; i < k; ++i) out[i] = bf16_bits_to_float(in[i]);
    } else {
      for (int64_t i = 0; i < k; ++i) out[i] = f16_bits_to_float(in[i]);
    }
  }
}

// Weight rows per widened tile: about 4 MB of f32.
int64_t tile_rows(int64_t n, int64_t k) {
  return std::clamp<int64_t>((int64_t(1) << 20) / std::max<int64_t>(k, 1), 1, std::max<int64_t>(n, 1));
}

void check_dtype(DType w_dtype, const char* what) {
  if (w_dtype != DType::bf16 && w_dtype != DType::f16)
    throw std::invalid_argument(std::string(what) + ": the weight must be bf16 or f16, got " + dtype_name(w_dtype));
}

// rows x cols bf16 (leading dim ld) widened into a dense f32 [rows, cols].
std::unique_ptr<float[]> widen_bf16(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld) {
  std::unique_ptr<float[]> out(new float[static_cast<size_t>(std::max<int64_t>(rows * cols, 1))]);
  widen_rows(out.get(), src, ld, DType::bf16, 0, rows, cols);
  return out;
}

// out [m, n] (+ beta) = act [m, k_act] · op(w) through oneDNN's bf16 kernel;
// false when oneDNN is not the way here.
bool onednn_bf16(bool trans_w, int64_t m, int64_t n, int64_t k, const uint16_t* act, int64_t ld_act,
                 const uint16_t* w, int64_t ldw, float beta, float* out, int64_t ld_out) {
  return onednn::matmul(onednn::Operands::bf16, false, trans_w, m, n, k, 1.0f, act, ld_act, 0, w, ldw, 0, beta, out,
                        ld_out, 0, 1);
}

}  // namespace

void gemm_bf16_weight_nt_bf16x(int64_t m, int64_t n, int64_t k, const uint16_t* x, int64_t ldx, const uint16_t* w,
                               int64_t ldw, float beta, float* y, int64_t ldy) {
  if (m == 0 || n == 0) return;
  // y [m, n] = x [m, k] · w [n, k]ᵀ
  if (m > kLowpGemvRows && k > 0 && onednn_bf16(true, m, n, k, x, ldx, w, ldw, beta, y, ldy)) return;
  const auto xf = widen_bf16(x, m, k, ldx);
  gemm_lowp_weight_nt(m, n, k, xf.get(), k, w, ldw, DType::bf16, beta, y, ldy);
}

void gemm_bf16_weight_nn_bf16x(int64_t m, int64_t n, int64_t k, const uint16_t* dy, int64_t lddy,
                               const uint16_t* w, int64_t ldw, float beta, float* dx, int64_t lddx) {
  if (m == 0 || k == 0) return;
  // dx [m, k] = dy [m, n] · w [n, k]
  if (n > 0 && onednn_bf16(false, m, k, n, dy, lddy, w, ldw, beta, dx, lddx)) return;
  const auto dyf = widen_bf16(dy, m, n, lddy);
  gemm_lowp_weight_nn(m, n, k, dyf.get(), n, w, ldw, DType::bf16, beta, dx, lddx);
}

void gemm_lowp_weight_nt(int64_t m, int64_t n, int64_t k, const float* x, int64_t ldx, const uint16_t* w,
                         int64_t ldw, DType w_dtype, float beta, float* y, int64_t ldy) {
  check_dtype(w_dtype, "gemm_lowp_weight_nt");
  if (m == 0 || n == 0) return;
  if (k == 0) {  // y = beta * y, through the f32 path (which reads no operand)
    gemm<float>(false, true, m, n, 0, 1.0f, nullptr, 1, nullptr, 1, beta, y, ldy);
    return;
  }
  if (m <= kLowpGemvRows) {
    if (w_dtype == DType::bf16) {
      gemv_nt<DType::bf16>(m, n, k, x, ldx, w, ldw, beta, y, ldy);
    } else {
      gemv_nt<DType::f16>(m, n, k, x, ldx, w, ldw, beta, y, ldy);
    }
    return;
  }
  // y[:, j0:j0+nb] = x · tileᵀ, tile = w[j0:j0+nb, :] widened.
  const int64_t nb = tile_rows(n, k);
  std::unique_ptr<float[]> scratch(new float[static_cast<size_t>(nb * k)]);
  for (int64_t j0 = 0; j0 < n; j0 += nb) {
    const int64_t count = std::min(nb, n - j0);
    widen_rows(scratch.get(), w, ldw, w_dtype, j0, count, k);
    gemm<float>(false, true, m, count, k, 1.0f, x, ldx, scratch.get(), k, beta, y + j0, ldy);
  }
}

void gemm_lowp_weight_nn(int64_t m, int64_t n, int64_t k, const float* dy, int64_t lddy, const uint16_t* w,
                         int64_t ldw, DType w_dtype, float beta, float* dx, int64_t lddx) {
  check_dtype(w_dtype, "gemm_lowp_weight_nn");
  if (m == 0 || k == 0) return;
  if (n == 0) {  // dx = beta * dx
    gemm<float>(false, false, m, k, 0, 1.0f, nullptr, 1, nullptr, 1, beta, dx, lddx);
    return;
  }
  // dx = Σ over tiles dy[:, j0:j0+nb] · tile, tile = w[j0:j0+nb, :] widened;
  // the first tile applies beta, the others accumulate.
  const int64_t nb = tile_rows(n, k);
  std::unique_ptr<float[]> scratch(new float[static_cast<size_t>(nb * k)]);
  for (int64_t j0 = 0; j0 < n; j0 += nb) {
    const int64_t count = std::min(nb, n - j0);
    widen_rows(scratch.get(), w, ldw, w_dtype, j0, count, k);
    gemm<float>(false, false, m, k, count, 1.0f, dy + j0, lddy, scratch.get(), k, j0 == 0 ? beta : 1.0f, dx,
                lddx);
  }
}

}  // namespace vlmc::kernels::cpu
