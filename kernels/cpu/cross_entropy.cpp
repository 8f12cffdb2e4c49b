// CPU cross entropy over logits [n, c] with i64 targets (see kernels/nn.h).
#include <algorithm>
#include <cmath>

#include "kernels/nn.h"

namespace vlmc::kernels::cpu {
namespace {
constexpr int64_t kParallelGrain = 1 << 14;
}  // namespace

template <typename T>
void cross_entropy_forward(T* loss, T* count, T* lse, T* nll, int64_t* error, const T* logits,
                           const int64_t* targets, int64_t n, int64_t c, int64_t ignore_index) {
#pragma omp parallel for schedule(static) if (n * c > kParallelGrain)
  for (int64_t r = 0; r < n; ++r) {
    const T* xr = logits + r * c;
    T max = -INFINITY;
    for (int64_t j = 0; j < c; ++j) max = std::max(max, xr[j]);
    double sum = 0;
    for (int64_t j = 0; j < c; ++j) sum += std::exp(xr[j] - max);
    const double log_sum = std::log(sum);
    lse[r] = static_cast<T>(max + log_sum);
    // (max - x[t]) + log_sum: exact in the large-logit regime where
    // lse - x[t] would lose log_sum's low bits to max.
    const int64_t t = targets[r];
    nll[r] =
        (t != ignore_index && t >= 0 && t < c) ? static_cast<T>((max - xr[t]) + log_sum) : T(0);
  }
  // Validation and the mean over kept rows, in row order (deterministic).
  double total = 0;
  int64_t kept = 0;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t t = targets[r];
    if (t == ignore_index) continue;
    if (t < 0 || t >= c) {
      if (error[0] == 0) {
        error[0] = 1;
        error[1] = t;
      }
      continue;
    }
    total += nll[r];
    ++kept;
  }
  count[0] = static_cast<T>(kept);
  loss[0] = static_cast<T>(kept > 0 ? total / static_cast<double>(kept) : NAN);
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* grad, const T* count, const T* logits,
                            const T* lse, const int64_t* targets, int64_t n, int64_t c,
                            int64_t ignore_index) {
  const T scale = grad[0] / count[0];  // count > 0 whenever a row is kept
#pragma omp parallel for schedule(static) if (n * c > kParallelGrain)
  for (int64_t r = 0; r < n; ++r) {
    T* dr = dlogits + r * c;
    const int64_t t = targets[r];
    if (t == ignore_index || t < 0 || t >= c) {
      std::fill(dr, dr + c, T(0));
      continue;
    }
    const T* xr = logits + r * c;
    for (int64_t j = 0; j < c; ++j) dr[j] = std::exp(xr[j] - lse[r]) * scale;
    dr[t] -= scale;
  }
}

template void cross_entropy_forward<float>(float*, float*, float*, float*, int64_t*, const float*,
                                           const int64_t*, int64_t, int64_t, int64_t);
template void cross_entropy_forward<double>(double*, double*, double*, double*, int64_t*,
                                            const double*, const int64_t*, int64_t, int64_t,
                                            int64_t);
template void cross_entropy_backward<float>(float*, const float*, const float*, const float*,
                                            const float*, const int64_t*, int64_t, int64_t,
                                            int64_t);
template void cross_entropy_backward<double>(double*, const double*, const double*, const double*,
                                             const double*, const int64_t*, int64_t, int64_t,
                                             int64_t);

}  // namespace vlmc::kernels::cpu
