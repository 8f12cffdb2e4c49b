// CPU softmax / log_softmax over the rows of a [rows, n] buffer (see kernels/nn.h).
// One row per iteration of a parallel loop, sums in double in index order:
// the result does not depend on the thread count.
#include <algorithm>
#include <cmath>

#include "kernels/nn.h"

namespace vlmc::kernels::cpu {
namespace {
constexpr int64_t kParallelGrain = 1 << 14;  // elements below which one thread is faster
}  // namespace

template <typename T>
void softmax_forward(T* y, const T* x, int64_t rows, int64_t n, bool log) {
#pragma omp parallel for schedule(static) if (rows * n > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    // Subtracting the row maximum keeps exp() finite for any input (a row of
    // all -inf gives NaN, as in PyTorch).
    T max = -INFINITY;
    for (int64_t j = 0; j < n; ++j) max = std::max(max, xr[j]);
    double sum = 0;
    if (log) {
      for (int64_t j = 0; j < n; ++j) sum += std::exp(xr[j] - max);
      // (x - max) - log(sum), not x - (max + log(sum)): the latter rounds
      // log(sum) away when max is large.
      const T log_sum = static_cast<T>(std::log(sum));
      for (int64_t j = 0; j < n; ++j) yr[j] = (xr[j] - max) - log_sum;
    } else {
      for (int64_t j = 0; j < n; ++j) {
        yr[j] = std::exp(xr[j] - max);
        sum += yr[j];
      }
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
    double dot = 0;
    if (log) {
      for (int64_t j = 0; j < n; ++j) dot += gr[j];
      const T s = static_cast<T>(dot);
      for (int64_t j = 0; j < n; ++j) dr[j] = gr[j] - std::exp(yr[j]) * s;
    } else {
      for (int64_t j = 0; j < n; ++j) dot += static_cast<double>(gr[j]) * yr[j];
      const T s = static_cast<T>(dot);
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
