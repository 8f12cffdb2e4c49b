// Elementwise kernels: broadcasting binary ops, unary ops (including the
// tensor-with-scalar ops), their fused backward passes, and the in-place
// update used for gradient accumulation and optimizers.
//
// Outputs are contiguous. Binary operands come as Layouts already broadcast to
// the output shape (stride 0 on broadcast dims), so one kernel serves every
// broadcasting pattern. T is float or double.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/cuda_stream.h"
#include "kernels/layout.h"

namespace vlmc::kernels {

enum class BinaryOp : uint8_t { add, sub, mul, div, pow, maximum, minimum };

// Unary ops; the *_scalar ones read the `scalar` argument s:
//   add_scalar x+s, rsub_scalar s-x, mul_scalar x*s, div_scalar x/s,
//   rdiv_scalar s/x, pow_scalar x^s.
// gelu is the exact erf form; gelu_tanh is PyTorch's approximate='tanh'.
enum class UnaryOp : uint8_t {
  neg, exp, log, sqrt, rsqrt, abs, tanh, sigmoid, relu, silu, gelu, gelu_tanh,
  add_scalar, rsub_scalar, mul_scalar, div_scalar, rdiv_scalar, pow_scalar,
};

// What unary_backward reads besides grad_out: the input x, the output y, or neither.
struct UnarySaves {
  bool x;
  bool y;
};
VLMC_HOST_DEVICE constexpr UnarySaves unary_saves(UnaryOp op) {
  switch (op) {
    case UnaryOp::exp:
    case UnaryOp::sqrt:
    case UnaryOp::tanh:
    case UnaryOp::sigmoid: return {false, true};
    case UnaryOp::rsqrt:
    case UnaryOp::rdiv_scalar: return {true, true};
    case UnaryOp::log:
    case UnaryOp::abs:
    case UnaryOp::relu:
    case UnaryOp::silu:
    case UnaryOp::gelu:
    case UnaryOp::gelu_tanh:
    case UnaryOp::pow_scalar: return {true, false};
    default: return {false, false};  // neg and the affine scalar ops
  }
}


// ---- per-element math, shared by the CPU and CUDA kernels (one source of truth) ----
// Ops are template parameters so that each loop is compiled for one op.

template <BinaryOp Op, typename T>
VLMC_HOST_DEVICE inline T binary_value(T a, T b) {
  if constexpr (Op == BinaryOp::add) return a + b;
  else if constexpr (Op == BinaryOp::sub) return a - b;
  else if constexpr (Op == BinaryOp::mul) return a * b;
  else if constexpr (Op == BinaryOp::div) return a / b;
  else if constexpr (Op == BinaryOp::pow) return std::pow(a, b);
  // maximum/minimum propagate NaN from either side, as torch.maximum does.
  else if constexpr (Op == BinaryOp::maximum) return (a != a || a >= b) ? a : b;
  else return (a != a || a <= b) ? a : b;
}

// d(out)/da * g and d(out)/db * g at one element.
template <BinaryOp Op, typename T>
VLMC_HOST_DEVICE inline void binary_grads(T g, T a, T b, T& ga, T& gb) {
  if constexpr (Op == BinaryOp::add) {
    ga = g;
    gb = g;
  } else if constexpr (Op == BinaryOp::sub) {
    ga = g;
    gb = -g;
  } else if constexpr (Op == BinaryOp::mul) {
    ga = g * b;
    gb = g * a;
  } else if constexpr (Op == BinaryOp::div) {
    ga = g / b;
    gb = -g * a / (b * b);
  } else if constexpr (Op == BinaryOp::pow) {
    // PyTorch's masks: no gradient to a where b == 0, none to b where a == 0 and b >= 0.
    ga = b == T(0) ? T(0) : g * b * std::pow(a, b - T(1));
    gb = (a == T(0) && b >= T(0)) ? T(0) : g * std::pow(a, b) * std::log(a);
  } else if constexpr (Op == BinaryOp::maximum) {
    // PyTorch's rule: ties split the gradient evenly; with a NaN both sides get it.
    ga = a == b ? g / T(2) : (a < b ? T(0) : g);
    gb = a == b ? g / T(2) : (a > b ? T(0) : g);
  } else {
    ga = a == b ? g / T(2) : (a > b ? T(0) : g);
    gb = a == b ? g / T(2) : (a < b ? T(0) : g);
  }
}

template <typename T>
VLMC_HOST_DEVICE inline T sigmoid_value(T x) {
  // Never exponentiates a large positive number: no overflow for either sign.
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

inline constexpr double kSqrt1_2 = 0.70710678118654752440;      // 1/sqrt(2)
inline constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // 1/sqrt(2*pi)
inline constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2/pi)
inline constexpr double kGeluCubic = 0.044715;

template <UnaryOp Op, typename T>
VLMC_HOST_DEVICE inline T unary_value(T x, T s) {
  if constexpr (Op == UnaryOp::neg) return -x;
  else if constexpr (Op == UnaryOp::exp) return std::exp(x);
  else if constexpr (Op == UnaryOp::log) return std::log(x);
  else if constexpr (Op == UnaryOp::sqrt) return std::sqrt(x);
  else if constexpr (Op == UnaryOp::rsqrt) return T(1) / std::sqrt(x);
  else if constexpr (Op == UnaryOp::abs) return std::fabs(x);
  else if constexpr (Op == UnaryOp::tanh) return std::tanh(x);
  else if constexpr (Op == UnaryOp::sigmoid) return sigmoid_value(x);
  else if constexpr (Op == UnaryOp::relu) return x > T(0) ? x : (x != x ? x : T(0));
  else if constexpr (Op == UnaryOp::silu) return x * sigmoid_value(x);
  else if constexpr (Op == UnaryOp::gelu) return T(0.5) * x * (T(1) + std::erf(x * T(kSqrt1_2)));
  else if constexpr (Op == UnaryOp::gelu_tanh)
    return T(0.5) * x * (T(1) + std::tanh(T(kSqrt2OverPi) * (x + T(kGeluCubic) * x * x * x)));
  else if constexpr (Op == UnaryOp::add_scalar) return x + s;
  else if constexpr (Op == UnaryOp::rsub_scalar) return s - x;
  else if constexpr (Op == UnaryOp::mul_scalar) return x * s;
  else if constexpr (Op == UnaryOp::div_scalar) return x / s;
  else if constexpr (Op == UnaryOp::rdiv_scalar) return s / x;
  else return std::pow(x, s);
}

// grad_in at one element; reads x and y only where unary_saves(Op) says so.
template <UnaryOp Op, typename T>
VLMC_HOST_DEVICE inline T unary_grad(T g, T x, T y, T s) {
  if constexpr (Op == UnaryOp::neg || Op == UnaryOp::rsub_scalar) return -g;
  else if constexpr (Op == UnaryOp::exp) return g * y;
  else if constexpr (Op == UnaryOp::log) return g / x;
  else if constexpr (Op == UnaryOp::sqrt) return g / (T(2) * y);
  else if constexpr (Op == UnaryOp::rsqrt) return T(-0.5) * g * y / x;  // -y^3/2 = -y/(2x)
  // abs and relu: gradient 0 at 0, as PyTorch (sign(0) = 0, relu'(0) = 0).
  else if constexpr (Op == UnaryOp::abs) return x > T(0) ? g : (x < T(0) ? -g : T(0));
  else if constexpr (Op == UnaryOp::tanh) return g * (T(1) - y * y);
  else if constexpr (Op == UnaryOp::sigmoid) return g * y * (T(1) - y);
  else if constexpr (Op == UnaryOp::relu) return x > T(0) ? g : T(0);
  else if constexpr (Op == UnaryOp::silu) {
    const T sg = sigmoid_value(x);
    return g * sg * (T(1) + x * (T(1) - sg));
  } else if constexpr (Op == UnaryOp::gelu) {
    // d/dx x*Phi(x) = Phi(x) + x*phi(x)
    const T cdf = T(0.5) * (T(1) + std::erf(x * T(kSqrt1_2)));
    const T pdf = T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
    return g * (cdf + x * pdf);
  } else if constexpr (Op == UnaryOp::gelu_tanh) {
    const T x2 = x * x;
    const T t = std::tanh(T(kSqrt2OverPi) * (x + T(kGeluCubic) * x2 * x));
    const T dinner = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * x2);
    return g * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dinner);
  } else if constexpr (Op == UnaryOp::add_scalar) return g;
  else if constexpr (Op == UnaryOp::mul_scalar) return g * s;
  else if constexpr (Op == UnaryOp::div_scalar) return g / s;
  else if constexpr (Op == UnaryOp::rdiv_scalar) return -g * y / x;  // d(s/x) = -s/x^2
  else return s == T(0) ? T(0) : g * s * std::pow(x, s - T(1));    // pow_scalar
}

// Merges adjacent dims that both operands lay out contiguously (stride of the
// outer dim = stride * size of the inner one) and drops size-1 dims, so that a
// strided loop indexes as few dims as possible: [2,3,4] + [4] becomes [6,4] +
// [6,4] with strides (4,1) and (0,1). Both layouts must have the same shape;
// the row-major order of elements, and so the contiguous output, is unchanged.
inline void coalesce_dims(Layout& a, Layout& b) {
  int nd = 0;
  for (int d = 0; d < a.ndim; ++d) {
    if (a.shape[d] == 1) continue;
    if (nd > 0 && a.strides[nd - 1] == a.strides[d] * a.shape[d] &&
        b.strides[nd - 1] == b.strides[d] * b.shape[d]) {
      a.shape[nd - 1] *= a.shape[d];
      b.shape[nd - 1] *= b.shape[d];
      a.strides[nd - 1] = a.strides[d];
      b.strides[nd - 1] = b.strides[d];
      continue;
    }
    a.shape[nd] = a.shape[d];
    b.shape[nd] = b.shape[d];
    a.strides[nd] = a.strides[d];
    b.strides[nd] = b.strides[d];
    ++nd;
  }
  a.ndim = b.ndim = nd;
}

// Turns a runtime op into a compile-time one: CALL(OP) is expanded once per op,
// so each kernel loop is compiled for exactly one op (used by cpu/ and cuda/).
#define VLMC_BINARY_OP_SWITCH(op, CALL)                                                             \
  switch (op) {                                                                                     \
    case ::vlmc::kernels::BinaryOp::add: CALL(::vlmc::kernels::BinaryOp::add); break;               \
    case ::vlmc::kernels::BinaryOp::sub: CALL(::vlmc::kernels::BinaryOp::sub); break;               \
    case ::vlmc::kernels::BinaryOp::mul: CALL(::vlmc::kernels::BinaryOp::mul); break;               \
    case ::vlmc::kernels::BinaryOp::div: CALL(::vlmc::kernels::BinaryOp::div); break;               \
    case ::vlmc::kernels::BinaryOp::pow: CALL(::vlmc::kernels::BinaryOp::pow); break;               \
    case ::vlmc::kernels::BinaryOp::maximum: CALL(::vlmc::kernels::BinaryOp::maximum); break;       \
    case ::vlmc::kernels::BinaryOp::minimum: CALL(::vlmc::kernels::BinaryOp::minimum); break;       \
  }

#define VLMC_UNARY_OP_SWITCH(op, CALL)                                                              \
  switch (op) {                                                                                     \
    case ::vlmc::kernels::UnaryOp::neg: CALL(::vlmc::kernels::UnaryOp::neg); break;                 \
    case ::vlmc::kernels::UnaryOp::exp: CALL(::vlmc::kernels::UnaryOp::exp); break;                 \
    case ::vlmc::kernels::UnaryOp::log: CALL(::vlmc::kernels::UnaryOp::log); break;                 \
    case ::vlmc::kernels::UnaryOp::sqrt: CALL(::vlmc::kernels::UnaryOp::sqrt); break;               \
    case ::vlmc::kernels::UnaryOp::rsqrt: CALL(::vlmc::kernels::UnaryOp::rsqrt); break;             \
    case ::vlmc::kernels::UnaryOp::abs: CALL(::vlmc::kernels::UnaryOp::abs); break;                 \
    case ::vlmc::kernels::UnaryOp::tanh: CALL(::vlmc::kernels::UnaryOp::tanh); break;               \
    case ::vlmc::kernels::UnaryOp::sigmoid: CALL(::vlmc::kernels::UnaryOp::sigmoid); break;         \
    case ::vlmc::kernels::UnaryOp::relu: CALL(::vlmc::kernels::UnaryOp::relu); break;               \
    case ::vlmc::kernels::UnaryOp::silu: CALL(::vlmc::kernels::UnaryOp::silu); break;               \
    case ::vlmc::kernels::UnaryOp::gelu: CALL(::vlmc::kernels::UnaryOp::gelu); break;               \
    case ::vlmc::kernels::UnaryOp::gelu_tanh: CALL(::vlmc::kernels::UnaryOp::gelu_tanh); break;     \
    case ::vlmc::kernels::UnaryOp::add_scalar: CALL(::vlmc::kernels::UnaryOp::add_scalar); break;   \
    case ::vlmc::kernels::UnaryOp::rsub_scalar: CALL(::vlmc::kernels::UnaryOp::rsub_scalar); break; \
    case ::vlmc::kernels::UnaryOp::mul_scalar: CALL(::vlmc::kernels::UnaryOp::mul_scalar); break;   \
    case ::vlmc::kernels::UnaryOp::div_scalar: CALL(::vlmc::kernels::UnaryOp::div_scalar); break;   \
    case ::vlmc::kernels::UnaryOp::rdiv_scalar: CALL(::vlmc::kernels::UnaryOp::rdiv_scalar); break; \
    case ::vlmc::kernels::UnaryOp::pow_scalar: CALL(::vlmc::kernels::UnaryOp::pow_scalar); break;   \
  }

namespace cpu {
// out[i] = op(a[la(i)], b[lb(i)]) for the n = la.numel() elements of the output.
template <typename T>
void binary(BinaryOp op, T* out, const T* a, const Layout& la, const T* b, const Layout& lb);

// Gradients of out = op(a, b) at the output's shape (contiguous, n elements),
// before any sum over broadcast dims. grad_a or grad_b may be null (not wanted).
template <typename T>
void binary_backward(BinaryOp op, T* grad_a, T* grad_b, const T* grad_out, const T* a,
                     const Layout& la, const T* b, const Layout& lb);

// y[i] = op(x[i]) over n contiguous elements (y may alias x).
template <typename T>
void unary(UnaryOp op, T* y, const T* x, int64_t n, double scalar);

// grad_in[i] from grad_out[i] and, per unary_saves(op), x[i] and/or y[i] (others may be null).
template <typename T>
void unary_backward(UnaryOp op, T* grad_in, const T* grad_out, const T* x, const T* y, int64_t n,
                    double scalar);

// self[i] += alpha * other[lo(i)] over the n = lo.numel() contiguous elements of self.
template <typename T>
void add_scaled_inplace(T* self, const T* other, const Layout& lo, double alpha);
}  // namespace cpu

namespace cuda {
template <typename T>
void binary(BinaryOp op, T* out, const T* a, const Layout& la, const T* b, const Layout& lb,
            cudaStream_t stream);
template <typename T>
void binary_backward(BinaryOp op, T* grad_a, T* grad_b, const T* grad_out, const T* a,
                     const Layout& la, const T* b, const Layout& lb, cudaStream_t stream);
template <typename T>
void unary(UnaryOp op, T* y, const T* x, int64_t n, double scalar, cudaStream_t stream);
template <typename T>
void unary_backward(UnaryOp op, T* grad_in, const T* grad_out, const T* x, const T* y, int64_t n,
                    double scalar, cudaStream_t stream);
template <typename T>
void add_scaled_inplace(T* self, const T* other, const Layout& lo, double alpha, cudaStream_t stream);
}  // namespace cuda

}  // namespace vlmc::kernels
