// Sums in independent double lanes, for CPU kernels whose sums are short rows
// (norm statistics, gradient norms, whole-tensor sums).
//
// One chain of dependent double adds costs the add's latency per term (4
// cycles); eight independent lanes let the CPU overlap them and GCC vectorise
// them, and the order stays fixed for a given length, so results remain bitwise
// reproducible and independent of the thread count.
#pragma once

#include <cstdint>

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

}  // namespace vlmc::kernels::cpu
