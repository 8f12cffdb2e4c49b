// CPU unary kernels (activations, exp/log family, tensor-with-scalar ops) and
// their fused backward (see kernels/elementwise.h). Contiguous buffers only.
#include <type_traits>

#include "kernels/cpu/fast_math.h"
#include "kernels/elementwise.h"

namespace vlmc::kernels::cpu {
namespace {

// Transcendental ops cost tens of cycles per element, so threads pay off
// earlier than for a copy.
constexpr int64_t kParallelGrain = 1 << 13;

// f32 GELU goes through the vectorized polynomials of kernels/cpu/fast_math.h
// (std::erf per element would cost several times the rest of the pass);
// f64 stays exact for gradient checks.
template <UnaryOp Op, typename T>
constexpr bool kFastGelu =
    std::is_same_v<T, float> && (Op == UnaryOp::gelu || Op == UnaryOp::gelu_tanh);

// f32 SiLU (LLaMA's MLP) and sigmoid likewise, through fast::sigmoid_f32:
// libm's exp per element took 13 % of the main job's stage-2 step.
template <UnaryOp Op, typename T>
constexpr bool kFastSigmoid = std::is_same_v<T, float> && (Op == UnaryOp::silu || Op == UnaryOp::sigmoid);

template <UnaryOp Op, typename T>
void unary_impl(T* y, const T* x, int64_t n, T s) {
  if constexpr (kFastGelu<Op, T>) {
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) y[i] = fast::gelu_value<Op == UnaryOp::gelu_tanh>(x[i]);
  } else if constexpr (kFastSigmoid<Op, T>) {
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) y[i] = Op == UnaryOp::silu ? x[i] * fast::sigmoid_f32(x[i]) : fast::sigmoid_f32(x[i]);
  } else {
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) y[i] = unary_value<Op>(x[i], s);
  }
}

template <UnaryOp Op, typename T>
void backward_impl(T* gx, const T* g, const T* x, const T* y, int64_t n, T s) {
  if constexpr (kFastGelu<Op, T>) {
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) gx[i] = g[i] * fast::gelu_grad<Op == UnaryOp::gelu_tanh>(x[i]);
  } else if constexpr (Op == UnaryOp::silu && std::is_same_v<T, float>) {
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) {
      const float sg = fast::sigmoid_f32(x[i]);
      gx[i] = g[i] * sg * (1.0f + x[i] * (1.0f - sg));
    }
  } else {
    constexpr UnarySaves saves = unary_saves(Op);
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i)
      gx[i] = unary_grad<Op>(g[i], saves.x ? x[i] : T(0), saves.y ? y[i] : T(0), s);
  }
}

}  // namespace

template <typename T>
void unary(UnaryOp op, T* y, const T* x, int64_t n, double scalar) {
  const T s = static_cast<T>(scalar);
#define VLMC_CALL(OP) unary_impl<OP, T>(y, x, n, s)
  VLMC_UNARY_OP_SWITCH(op, VLMC_CALL)
#undef VLMC_CALL
}

template <typename T>
void unary_backward(UnaryOp op, T* grad_in, const T* grad_out, const T* x, const T* y, int64_t n,
                    double scalar) {
  const T s = static_cast<T>(scalar);
#define VLMC_CALL(OP) backward_impl<OP, T>(grad_in, grad_out, x, y, n, s)
  VLMC_UNARY_OP_SWITCH(op, VLMC_CALL)
#undef VLMC_CALL
}

template void unary<float>(UnaryOp, float*, const float*, int64_t, double);
template void unary<double>(UnaryOp, double*, const double*, int64_t, double);
template void unary_backward<float>(UnaryOp, float*, const float*, const float*, const float*,
                                    int64_t, double);
template void unary_backward<double>(UnaryOp, double*, const double*, const double*,
                                     const double*, int64_t, double);

}  // namespace vlmc::kernels::cpu
