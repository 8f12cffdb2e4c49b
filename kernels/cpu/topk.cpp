// CPU top-k selection and row gather (see kernels/topk.h).
#include "kernels/topk.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "kernels/cpu/parallel_errors.h"

namespace vlmc::kernels::cpu {
namespace {
constexpr int64_t kParallelGrain = 1 << 15;  // elements (topk) or bytes (row copies)
}  // namespace

template <typename T>
void topk_indices(int64_t* out, const T* scores, int64_t rows, int64_t n, int64_t k) {
  // One row per iteration: nth_element splits the k best (key, position)
  // pairs from the rest, then the k positions are sorted. Keys are unique per
  // row once the position breaks ties, so the selected set is unique too.
  if (rows == 0 || k == 0) return;  // nothing to select: n may be anything (no scratch of n elements)
  ParallelErrors errors;
#pragma omp parallel if (rows * n > kParallelGrain)
  {
    std::vector<int64_t> order;
    std::vector<decltype(topk_key(T{}))> keys;
    const bool ready = errors.run([&] {
      order.resize(static_cast<size_t>(n));
      keys.resize(static_cast<size_t>(n));
    });
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      if (!ready) continue;
      const T* s = scores + r * n;
      int64_t* o = out + r * k;
      std::iota(order.begin(), order.end(), int64_t{0});
      if (k < n) {
        for (int64_t i = 0; i < n; ++i) keys[static_cast<size_t>(i)] = topk_key(s[i]);
        const auto better = [&](int64_t a, int64_t b) {
          const auto ka = keys[static_cast<size_t>(a)], kb = keys[static_cast<size_t>(b)];
          return ka > kb || (ka == kb && a < b);
        };
        std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), better);
        std::sort(order.begin(), order.begin() + k);
      }
      std::copy(order.begin(), order.begin() + k, o);
    }
  }
  errors.rethrow();
}

void invert_row_indices(int64_t* inverse, int64_t* error, const int64_t* indices, int64_t rows,
                        int64_t n, int64_t k) {
  // Serial: rows * k is small (the selected tokens), and the first bad index
  // in row-major order is the one reported.
  std::fill(inverse, inverse + rows * n, int64_t{-1});
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t v = indices[r * k + j];
      const int64_t code = (v < 0 || v >= n) ? kIndexOutOfRange
                           : inverse[r * n + v] >= 0 ? kIndexRepeated
                                                     : 0;
      if (code != 0) {
        error[0] = code;
        error[1] = r;
        error[2] = v;
        return;
      }
      inverse[r * n + v] = j;
    }
  }
}

void gather_rows(void* y, const void* x, const int64_t* indices, int64_t rows, int64_t n, int64_t k,
                 int64_t row_bytes) {
  auto* dst = static_cast<unsigned char*>(y);
  const auto* src = static_cast<const unsigned char*>(x);
#pragma omp parallel for schedule(static) if (rows * k * row_bytes > kParallelGrain)
  for (int64_t o = 0; o < rows * k; ++o) {
    const int64_t r = o / k;
    std::memcpy(dst + o * row_bytes, src + (r * n + indices[o]) * row_bytes, static_cast<size_t>(row_bytes));
  }
}

void gather_rows_backward(void* dx, const void* g, const int64_t* inverse, int64_t rows, int64_t n,
                          int64_t k, int64_t row_bytes) {
  auto* dst = static_cast<unsigned char*>(dx);
  const auto* src = static_cast<const unsigned char*>(g);
  // Every dx row is written exactly once: no zero-fill pass, no accumulation.
#pragma omp parallel for schedule(static) if (rows * n * row_bytes > kParallelGrain)
  for (int64_t o = 0; o < rows * n; ++o) {
    const int64_t j = inverse[o];
    unsigned char* d = dst + o * row_bytes;
    if (j >= 0) {
      std::memcpy(d, src + ((o / n) * k + j) * row_bytes, static_cast<size_t>(row_bytes));
    } else {
      std::memset(d, 0, static_cast<size_t>(row_bytes));
    }
  }
}

template void topk_indices<float>(int64_t*, const float*, int64_t, int64_t, int64_t);
template void topk_indices<double>(int64_t*, const double*, int64_t, int64_t, int64_t);

}  // namespace vlmc::kernels::cpu
