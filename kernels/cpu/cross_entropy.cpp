// CPU cross entropy over logits [n, c] with i64 targets (see kernels/nn.h).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/nn.h"

#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/lanes.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 14;

// A row's largest logit (max_in_lanes, as softmax's) and log Σ exp(x - max), in
// double, summed by row_sum (as softmax's rows). f32 rows take fast::exp_f32_or_zero
// (9e-8 relative) in 8 lanes, summed in sum_in_lanes' double lanes: std::exp, a libm
// call per logit, summed one after another, was the whole of this kernel (52 logits a
// row: 0.2 ms of the stage-0 language model's 1-thread step). f64 rows keep std::exp,
// summed in order.
template <typename T>
inline void row_log_sum_exp(const T* xr, int64_t c, T& max, double& log_sum) {
  max = max_in_lanes(xr, c);
  const T m = max;
  log_sum = std::log(row_sum<T>(c, [xr, m](int64_t k) {
    if constexpr (std::is_same_v<T, float>) {
      return static_cast<double>(fast::exp_f32_or_zero(xr[k] - m));
    } else {
      return std::exp(xr[k] - m);
    }
  }));
}

}  // namespace

template <typename T>
void cross_entropy_forward(T* loss, T* count, T* lse, T* nll, int64_t* error, const T* logits,
                           const int64_t* targets, int64_t n, int64_t c, int64_t ignore_index) {
#pragma omp parallel for schedule(static) if (n * c > kParallelGrain)
  for (int64_t r = 0; r < n; ++r) {
    const T* xr = logits + r * c;
    T max;
    double log_sum;
    row_log_sum_exp(xr, c, max, log_sum);
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
    const T l = lse[r];
    if constexpr (std::is_same_v<T, float>) {
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) dr[j] = fast::exp_f32_or_zero(xr[j] - l) * scale;  // the forward's exps
    } else {
      for (int64_t j = 0; j < c; ++j) dr[j] = std::exp(xr[j] - l) * scale;
    }
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
