// CPU embedding lookup and its backward (see kernels/nn.h).
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/nn.h"

namespace vlmc::kernels::cpu {
namespace {
constexpr int64_t kParallelGrain = 1 << 14;
}  // namespace

template <typename T>
void embedding_forward(T* out, int64_t* error, const T* weight, const int64_t* indices, int64_t n,
                       int64_t num, int64_t d) {
  // Validate first, serially, so the reported index is the first bad one.
  for (int64_t i = 0; i < n; ++i) {
    if (indices[i] < 0 || indices[i] >= num) {
      error[0] = 1;
      error[1] = indices[i];
      break;
    }
  }
#pragma omp parallel for schedule(static) if (n * d > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = indices[i];
    T* dst = out + i * d;
    if (row < 0 || row >= num) {
      std::fill(dst, dst + d, T(0));
    } else {
      std::memcpy(dst, weight + row * d, static_cast<size_t>(d) * sizeof(T));
    }
  }
}

template <typename T>
void embedding_backward(T* dweight, const T* dout, const int64_t* indices, int64_t n, int64_t num,
                        int64_t d) {
  // Row ownership: each thread owns a contiguous range of the table's rows and
  // scans every index, adding only into its own rows. Each row receives its
  // contributions in index order, whatever the number of threads.
#pragma omp parallel if (n * d > kParallelGrain)
  {
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t begin = num * t / threads, end = num * (t + 1) / threads;
    std::fill(dweight + begin * d, dweight + end * d, T(0));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = indices[i];
      if (row < begin || row >= end) continue;
      T* dst = dweight + row * d;
      const T* src = dout + i * d;
      for (int64_t j = 0; j < d; ++j) dst[j] += src[j];
    }
  }
}

template void embedding_forward<float>(float*, int64_t*, const float*, const int64_t*, int64_t,
                                       int64_t, int64_t);
template void embedding_forward<double>(double*, int64_t*, const double*, const int64_t*, int64_t,
                                        int64_t, int64_t);
template void embedding_backward<float>(float*, const float*, const int64_t*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<double>(double*, const double*, const int64_t*, int64_t, int64_t,
                                         int64_t);

}  // namespace vlmc::kernels::cpu
