// CPU multi-tensor AdamW and gradient norm (see kernels/adamw.h).
//
// The tensors of a list are treated as one concatenated element space cut into
// equal pieces, as many as a multiple of the threads; OpenMP threads take
// pieces, and a piece that spans several tensors walks them in turn. Nothing is allocated. The norm cuts the space
// into a fixed number of slices whose double partials (each summed in lanes,
// kernels/cpu/lanes.h) are added in slice order, so the result does not
// depend on the number of threads.
#include <algorithm>
#include <cmath>

#include <omp.h>

#include "kernels/adamw.h"
#include "kernels/cpu/lanes.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kPiece = 1 << 15;         // elements per AdamW work item, at most
constexpr int64_t kParallelGrain = 1 << 15;  // below this many elements, one thread
constexpr int kSlices = 64;                  // fixed partials of the norm

template <typename Item>
int64_t total_numel(const Item* tensors, int64_t count) {
  int64_t n = 0;
  for (int64_t i = 0; i < count; ++i) n += tensors[i].numel;
  return n;
}

// Calls f(tensor, begin, end) for each part of the global range [lo, hi) that
// falls in one tensor, in order (element indices local to that tensor).
template <typename Item, typename F>
void for_range(const Item* tensors, int64_t count, int64_t lo, int64_t hi, F&& f) {
  int64_t offset = 0;
  for (int64_t i = 0; i < count && offset < hi; ++i) {
    const int64_t n = tensors[i].numel, b = std::max(lo, offset), e = std::min(hi, offset + n);
    if (b < e) f(tensors[i], b - offset, e - offset);
    offset += n;
  }
}

}  // namespace

template <typename T>
void adamw(const AdamWTensor<T>* tensors, int64_t count, const float* grad_scale) {
  const int64_t total = total_numel(tensors, count);
  // Pieces of at most kPiece elements, as many as a multiple of the threads, so
  // each thread takes the same share: 11 pieces of the stage-0 language model's
  // parameters had gone 6:5 to two threads. Each element's update is its own,
  // so the cut changes no bit.
  const int64_t threads = total > kParallelGrain ? omp_get_max_threads() : 1;
  int64_t pieces = (total + kPiece - 1) / kPiece;
  pieces = (pieces + threads - 1) / threads * threads;
  const int64_t piece = pieces > 0 ? (total + pieces - 1) / pieces : 0;
  const bool scaled = grad_scale != nullptr;
  const T scale = scaled ? static_cast<T>(*grad_scale) : T(1);
#pragma omp parallel for schedule(static) if (total > kParallelGrain)
  for (int64_t c = 0; c < pieces; ++c) {
    for_range(tensors, count, std::min(total, c * piece), std::min(total, (c + 1) * piece),
              [&](const AdamWTensor<T>& t, int64_t b, int64_t e) {
                // Local restrict pointers and a copy of the scalars: through
                // t's members GCC must assume the stores alias them and keeps
                // the loop scalar (a divide and a square root per element).
                const AdamWTensor<T> h = t;
                T* __restrict p = t.param;
                T* __restrict m = t.exp_avg;
                T* __restrict v = t.exp_avg_sq;
                const T* __restrict grad = t.grad;
                if (scaled) {
#pragma omp simd
                  for (int64_t k = b; k < e; ++k) adamw_element(p[k], m[k], v[k], grad[k] * scale, h);
                } else {
#pragma omp simd
                  for (int64_t k = b; k < e; ++k) adamw_element(p[k], m[k], v[k], grad[k], h);
                }
              });
  }
}

template <typename T>
void sum_squares(float* total_sq, const SquareSumTensor<T>* tensors, int64_t count) {
  const int64_t total = total_numel(tensors, count);
  double partial[kSlices] = {};
#pragma omp parallel for schedule(static) if (total > kParallelGrain)
  for (int s = 0; s < kSlices; ++s) {
    double acc = 0;
    for_range(tensors, count, total * s / kSlices, total * (s + 1) / kSlices,
              [&](const SquareSumTensor<T>& t, int64_t b, int64_t e) {
                const T* x = t.data;
                acc += sum_in_lanes(b, e, [x](int64_t k) {
                  const double xk = static_cast<double>(x[k]);
                  return xk * xk;
                });
              });
    partial[s] = acc;
  }
  double sum = 0;
  for (int s = 0; s < kSlices; ++s) sum += partial[s];
  *total_sq = static_cast<float>(sum);
}

void clip_coefficient(float* norm, float* coef, const float* total_sq, double max_norm) {
  const double total = std::sqrt(static_cast<double>(*total_sq));
  const double c = max_norm / (total + 1e-6);
  // Not std::min: a NaN norm must give a NaN coefficient, as clip_grad_norm_.
  *norm = static_cast<float>(total);
  *coef = c >= 1.0 ? 1.0f : static_cast<float>(c);
}

#define VLMC_INSTANTIATE(T)                                                   \
  template void adamw<T>(const AdamWTensor<T>*, int64_t, const float*);      \
  template void sum_squares<T>(float*, const SquareSumTensor<T>*, int64_t);
VLMC_INSTANTIATE(float)
VLMC_INSTANTIATE(double)
#undef VLMC_INSTANTIATE

}  // namespace vlmc::kernels::cpu
