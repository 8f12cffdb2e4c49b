// CPU SwiGLU forward and backward (kernels/swiglu.h).
#include "kernels/swiglu.h"

#include <type_traits>

#include "kernels/cpu/fast_math.h"
#include "kernels/elementwise.h"

namespace vlmc::kernels::cpu {
namespace {

// An exp per element, as silu's own pass (kernels/cpu/unary.cpp).
constexpr int64_t kParallelGrain = 1 << 13;

// sigmoid(x) as the composed silu computes it for T.
template <typename T>
inline T sigmoid_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return fast::sigmoid_f32(x);
  } else {
    return sigmoid_value(x);
  }
}

}  // namespace

template <typename T>
void swiglu_forward(T* __restrict y, const T* __restrict g, const T* __restrict u, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const T a = g[i] * sigmoid_of(g[i]);  // silu(g), as its own pass rounds it
    y[i] = a * u[i];
  }
}

template <typename T>
void swiglu_backward(T* __restrict dg, T* __restrict du, const T* __restrict dy, const T* __restrict g,
                     const T* __restrict u, int64_t n) {
  // The three cases are separate loops so that each vectorizes without a
  // per-element test.
  if (dg && du) {
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) {
      const T s = sigmoid_of(g[i]);
      du[i] = dy[i] * (g[i] * s);                                // the product's backward: dy · silu(g)
      dg[i] = (dy[i] * u[i]) * s * (T(1) + g[i] * (T(1) - s));  // silu's: (dy · u) · silu'(g)
    }
  } else if (dg) {
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) {
      const T s = sigmoid_of(g[i]);
      dg[i] = (dy[i] * u[i]) * s * (T(1) + g[i] * (T(1) - s));
    }
  } else if (du) {
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) du[i] = dy[i] * (g[i] * sigmoid_of(g[i]));
  }
}

template void swiglu_forward<float>(float*, const float*, const float*, int64_t);
template void swiglu_forward<double>(double*, const double*, const double*, int64_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, int64_t);
template void swiglu_backward<double>(double*, double*, const double*, const double*, const double*, int64_t);

}  // namespace vlmc::kernels::cpu
