// Sums in independent double lanes, for CPU kernels whose sums are short rows
// (norm statistics, gradient norms, whole-tensor sums).
//
// One chain of dependent double adds costs the add's latency per term (4
// cycles); eight independent lanes let the CPU overlap them and GCC vectorise
// them, and the order stays fixed for a given length, so results remain bitwise
// reproducible and independent of the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace vlmc::kernels::cpu {

inline constexpr int64_t kSumLanes = 8;

// Σ term(k) over k in [k0, k1), in double: lane l takes k0 + l, k0 + l + 8, ...;
// then the lanes in order, then the tail in order.
template <typename Term>
inline double sum_in_lanes(int64_t k0, int64_t k1, const Term& term) {
  double lanes[kSumLanes] = {};
  int64_t k = k0;
  for (; k + kSumLanes <= k1; k += kSumLanes)
    for (int64_t l = 0; l < kSumLanes; ++l) lanes[l] += term(k + l);
  double acc = 0;
  for (int64_t l = 0; l < kSumLanes; ++l) acc += lanes[l];
  for (; k < k1; ++k) acc += term(k);
  return acc;
}

// Σ term(k) for k < n in double, as a row's sums over a float / double buffer take
// it: f32 rows in sum_in_lanes' lanes, f64 rows (the gradient checks' oracle) one
// term after another in index order.
template <typename T, typename Term>
inline double row_sum(int64_t n, const Term& term) {
  if constexpr (std::is_same_v<T, float>) {
    return sum_in_lanes(0, n, term);
  } else {
    double sum = 0;
    for (int64_t k = 0; k < n; ++k) sum += term(k);
    return sum;
  }
}

// The largest of x[0..n), in kSumLanes lanes then the tail (a maximum is exact in
// any order, so this equals one running std::max; NaNs are passed over as std::max
// passes them). -inf for n = 0.
template <typename T>
inline T max_in_lanes(const T* x, int64_t n) {
  T lanes[kSumLanes];
  for (int64_t l = 0; l < kSumLanes; ++l) lanes[l] = static_cast<T>(-INFINITY);
  int64_t k = 0;
  for (; k + kSumLanes <= n; k += kSumLanes)
    for (int64_t l = 0; l < kSumLanes; ++l) lanes[l] = std::max(lanes[l], x[k + l]);
  T max = static_cast<T>(-INFINITY);
  for (int64_t l = 0; l < kSumLanes; ++l) max = std::max(max, lanes[l]);
  for (; k < n; ++k) max = std::max(max, x[k]);
  return max;
}

}  // namespace vlmc::kernels::cpu
