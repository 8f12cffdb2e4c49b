// CPU softmax / log_softmax over the rows of a [rows, n] buffer (see kernels/nn.h).
// One row per iteration of a parallel loop, sums in double in a fixed order:
// the result does not depend on the thread count.
//
// f32 rows: the maximum in 8 lanes (exact in any order), exps by fast::exp_f32_or_zero
// (9e-8 relative; 0 below f32's normal range) in one vectorised pass, sums in
// sum_in_lanes' 8 double lanes. A libm exp per element, summed one term after
// another, was all of the kernel's time (as in cross entropy: 5x at 52 columns). f64
// rows keep std::exp and sums in order.
#include <algorithm>
#include <cmath>

#include "kernels/nn.h"

#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/lanes.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 14;  // elements below which one thread is faster

// y[j] = exp(x[j] - shift) for j < n.
inline void exp_shifted(float* __restrict y, const float* __restrict x, float shift, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] = fast::exp_f32_or_zero(x[j] - shift);
}
inline void exp_shifted(double* __restrict y, const double* __restrict x, double shift, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = std::exp(x[j] - shift);
}

}  // namespace

template <typename T>
void softmax_forward(T* y, const T* x, int64_t rows, int64_t n, bool log) {
#pragma omp parallel for schedule(static) if (rows * n > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    // Subtracting the row maximum keeps exp() finite for any input (a row of
    // all -inf gives NaN, as in PyTorch).
    const T max = max_in_lanes(xr, n);
    exp_shifted(yr, xr, max, n);  // y holds exp(x - max) until the last pass
    const double sum = row_sum<T>(n, [yr](int64_t j) { return static_cast<double>(yr[j]); });
    if (log) {
      // (x - max) - log(sum), not x - (max + log(sum)): the latter rounds
      // log(sum) away when max is large.
      const T log_sum = static_cast<T>(std::log(sum));
      for (int64_t j = 0; j < n; ++j) yr[j] = (xr[j] - max) - log_sum;
    } else {
      const T inv = static_cast<T>(1.0 / sum);
      for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
    }
  }
}

template <typename T>
void softmax_backward(T* dx, const T* y, const T* dy, int64_t rows, int64_t n, bool log) {
#pragma omp parallel for schedule(static) if (rows * n > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * n;
    const T* gr = dy + r * n;
    T* dr = dx + r * n;
    if (log) {
      const T s = static_cast<T>(row_sum<T>(n, [gr](int64_t j) { return static_cast<double>(gr[j]); }));
      exp_shifted(dr, yr, T(0), n);  // softmax = exp(log_softmax)
      for (int64_t j = 0; j < n; ++j) dr[j] = gr[j] - dr[j] * s;
    } else {
      const T s = static_cast<T>(row_sum<T>(n, [gr, yr](int64_t j) { return static_cast<double>(gr[j]) * yr[j]; }));
      for (int64_t j = 0; j < n; ++j) dr[j] = yr[j] * (gr[j] - s);
    }
  }
}

template void softmax_forward<float>(float*, const float*, int64_t, int64_t, bool);
template void softmax_forward<double>(double*, const double*, int64_t, int64_t, bool);
template void softmax_backward<float>(float*, const float*, const float*, int64_t, int64_t, bool);
template void softmax_backward<double>(double*, const double*, const double*, int64_t, int64_t,
                                       bool);

}  // namespace vlmc::kernels::cpu
