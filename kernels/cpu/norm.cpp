// CPU layer norm and RMS norm over the rows of a [rows, d] buffer (see kernels/nn.h).
//
// Both share one implementation: RMS norm is layer norm without centring
// (mean taken as 0) and without a bias. Row statistics and the per-row sums of
// the backward are accumulated in double, in eight independent lanes
// (kernels/cpu/lanes.h: a row of 128 is otherwise a chain of 128 dependent
// adds); dweight/dbias are column sums, each over fixed blocks of rows and
// then over the blocks in order, so nothing depends on the thread count.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/nn.h"

#include "kernels/cpu/lanes.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 14;

// Calls f(std::true_type{}) when flag is set, else f(std::false_type{}): whether
// there is a weight (or a bias) becomes a constant inside f's loops. Tested per
// element, it kept GCC from vectorising them: LayerNorm's dx of [1088, 128] took
// 171 us on one thread of an AMD EPYC, 83 us with the flag hoisted (docs/perf.md).
template <typename F>
void with_flag(bool flag, F&& f) {
  if (flag) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

template <bool kCenter, typename T>
void norm_forward(T* y, T* mean, T* rstd, const T* x, const T* weight, const T* bias, int64_t rows,
                  int64_t d, double eps) {
  with_flag(weight != nullptr, [&](auto weighted) {
    with_flag(bias != nullptr, [&](auto biased) {
#pragma omp parallel for schedule(static) if (rows * d > kParallelGrain)
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * d;
        T* yr = y + r * d;
        double mu = 0;
        if (kCenter) {
          mu = sum_in_lanes(0, d, [xr](int64_t j) { return static_cast<double>(xr[j]); }) / static_cast<double>(d);
        }
        // Biased: divides by d; about mu (two passes, no cancellation).
        const double var = sum_in_lanes(0, d, [xr, mu](int64_t j) {
                             const double c = xr[j] - mu;
                             return c * c;
                           }) /
                           static_cast<double>(d);
        const T m = static_cast<T>(mu);
        const T rs = static_cast<T>(1.0 / std::sqrt(var + eps));
        if (kCenter) mean[r] = m;
        rstd[r] = rs;
        for (int64_t j = 0; j < d; ++j) {
          T v = (xr[j] - m) * rs;
          if constexpr (decltype(weighted)::value) v *= weight[j];
          if constexpr (decltype(biased)::value) v += bias[j];
          yr[j] = v;
        }
      }
    });
  });
}

// With xhat = (x - mean) * rstd and wdy = dy * weight:
//   dx = rstd * (wdy - mean(wdy) - xhat * mean(wdy * xhat))   (layer norm)
//   dx = rstd * (wdy - xhat * mean(wdy * xhat))               (RMS norm)
//   dweight = sum over rows of dy * xhat,  dbias = sum over rows of dy.
template <bool kCenter, typename T>
void norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean,
                   const T* rstd, const T* weight, int64_t rows, int64_t d) {
  const bool parallel = rows * d > kParallelGrain;
  if (dx) with_flag(weight != nullptr, [&](auto weighted) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * d;
      const T* gr = dy + r * d;
      const T m = kCenter ? mean[r] : T(0);
      const T rs = rstd[r];
      auto wdy_at = [gr, weight](int64_t j) {
        if constexpr (decltype(weighted)::value) {
          return gr[j] * weight[j];
        } else {
          return gr[j];
        }
      };
      const double sum_wdy =
          kCenter ? sum_in_lanes(0, d, [&](int64_t j) { return static_cast<double>(wdy_at(j)); }) : 0.0;
      const double sum_wdy_xhat =
          sum_in_lanes(0, d, [&](int64_t j) { return static_cast<double>(wdy_at(j)) * ((xr[j] - m) * rs); });
      const T a = kCenter ? static_cast<T>(sum_wdy / static_cast<double>(d)) : T(0);
      const T b = static_cast<T>(sum_wdy_xhat / static_cast<double>(d));
      T* dr = dx + r * d;
      for (int64_t j = 0; j < d; ++j) dr[j] = rs * (wdy_at(j) - a - (xr[j] - m) * rs * b);
    }
  });
  if (dweight || dbias) {
    // Column sums in two steps: each block of kBlockRows rows sums its columns
    // in row order, in double (a thread takes a contiguous share of the blocks,
    // the rows its dx loop above just wrote); then each column adds its blocks'
    // sums in block order. The blocks do not depend on the thread count, so
    // neither do the bits. Chunks of 64 columns, each walking every row, had
    // given each thread half of every row of [848, 128], half of them written
    // by the other core: 32 us a call on 2 threads against 22 on 1 (Intel Xeon with AMX, the
    // language model's stage-0 step; docs/perf.md, sixteenth session).
    constexpr int64_t kBlockRows = 64;
    const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
    std::vector<double> partial(static_cast<size_t>(blocks * 2 * d));  // per block: d weight sums, d bias sums
#pragma omp parallel if (parallel)
    {
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < blocks; ++blk) {
        double* sw = partial.data() + blk * 2 * d;
        double* sb = sw + d;
        const int64_t r1 = std::min(rows, (blk + 1) * kBlockRows);
        for (int64_t r = blk * kBlockRows; r < r1; ++r) {
          const T* gr = dy + r * d;
          const T* xr = x + r * d;
          const T m = kCenter ? mean[r] : T(0);
          const T rs = rstd[r];
          for (int64_t j = 0; j < d; ++j) {
            sw[j] += static_cast<double>(gr[j]) * ((xr[j] - m) * rs);
            sb[j] += gr[j];
          }
        }
      }
#pragma omp for schedule(static)
      for (int64_t j = 0; j < d; ++j) {
        double w = 0.0, b = 0.0;
        for (int64_t blk = 0; blk < blocks; ++blk) {
          w += partial[static_cast<size_t>(blk * 2 * d + j)];
          b += partial[static_cast<size_t>(blk * 2 * d + d + j)];
        }
        if (dweight) dweight[j] = static_cast<T>(w);
        if (dbias) dbias[j] = static_cast<T>(b);
      }
    }
  }
}

}  // namespace

template <typename T>
void layer_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* weight, const T* bias,
                        int64_t rows, int64_t d, double eps) {
  norm_forward<true>(y, mean, rstd, x, weight, bias, rows, d, eps);
}

template <typename T>
void layer_norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* weight, int64_t rows, int64_t d) {
  norm_backward<true>(dx, dweight, dbias, dy, x, mean, rstd, weight, rows, d);
}

template <typename T>
void rms_norm_forward(T* y, T* rstd, const T* x, const T* weight, int64_t rows, int64_t d,
                      double eps) {
  norm_forward<false>(y, static_cast<T*>(nullptr), rstd, x, weight, static_cast<const T*>(nullptr),
                      rows, d, eps);
}

template <typename T>
void rms_norm_backward(T* dx, T* dweight, const T* dy, const T* x, const T* rstd, const T* weight,
                       int64_t rows, int64_t d) {
  norm_backward<false>(dx, dweight, static_cast<T*>(nullptr), dy, x, static_cast<const T*>(nullptr),
                       rstd, weight, rows, d);
}

#define VLMC_NORM_INSTANTIATE(T)                                                                  \
  template void layer_norm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, \
                                      double);                                                    \
  template void layer_norm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                       const T*, int64_t, int64_t);                               \
  template void rms_norm_forward<T>(T*, T*, const T*, const T*, int64_t, int64_t, double);        \
  template void rms_norm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t,     \
                                     int64_t);
VLMC_NORM_INSTANTIATE(float)
VLMC_NORM_INSTANTIATE(double)
#undef VLMC_NORM_INSTANTIATE

}  // namespace vlmc::kernels::cpu
