// Unary ops (activations, exp/log family) and the tensor-with-scalar ops.
// Each runs one kernel forward and one fused kernel backward, which reads the
// saved input x and/or output y as kernels::unary_saves(op) says.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/elementwise.h"

namespace vlmc {
namespace {

using kernels::UnaryOp;

Tensor run_unary(const char* name, UnaryOp op, const Tensor& x, double scalar) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  run_float_kernel(
      name, x,
      [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::unary<T>(op, out.data<T>(), x.data<T>(), x.numel(), scalar);
      },
      [&](auto tag, [[maybe_unused]] cudaStream_t stream) {
        using T [[maybe_unused]] = decltype(tag);
        VLMC_CUDA_DISPATCH(kernels::cuda::unary<T>(op, out.data<T>(), x.data<T>(), x.numel(), scalar, stream));
      });
  return out;
}

Tensor run_unary_backward(const char* name, UnaryOp op, const Tensor& g_in, const Tensor& x,
                          const Tensor& y, double scalar) {
  const Tensor g = g_in.contiguous();
  Tensor gx = Tensor::empty(g.shape(), g.dtype(), g.device());
  run_float_kernel(
      name, g,
      [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::unary_backward<T>(op, gx.data<T>(), g.data<T>(), data_or_null<T>(x), data_or_null<T>(y),
                                        g.numel(), scalar);
      },
      [&](auto tag, [[maybe_unused]] cudaStream_t stream) {
        using T [[maybe_unused]] = decltype(tag);
        VLMC_CUDA_DISPATCH(kernels::cuda::unary_backward<T>(op, gx.data<T>(), g.data<T>(), data_or_null<T>(x),
                                                            data_or_null<T>(y), g.numel(), scalar, stream));
      });
  return gx;
}

Tensor unary_op(const char* name, UnaryOp op, const Tensor& x_in, double scalar = 0.0) {
  VLMC_CHECK(x_in.defined(), name, ": input is undefined");
  check_float(name, "input", x_in);
  const Tensor x = x_in.detach().contiguous();  // kernels read contiguous buffers
  Tensor out = run_unary(name, op, x, scalar);
  if (any_requires_grad({x_in})) {
    const kernels::UnarySaves saves = kernels::unary_saves(op);
    // Detached: a saved output must not point back at its own node.
    Tensor saved_x = saves.x ? x : Tensor();
    Tensor saved_y = saves.y ? out.detach() : Tensor();
    record(out, name, {x_in},
           [name, op, scalar, saved_x, saved_y](const Tensor& g, const GradMask&) {
             return std::vector<Tensor>{run_unary_backward(name, op, g, saved_x, saved_y, scalar)};
           });
  }
  return out;
}

}  // namespace

Tensor neg(const Tensor& x) { return unary_op("neg", UnaryOp::neg, x); }
Tensor exp(const Tensor& x) { return unary_op("exp", UnaryOp::exp, x); }
Tensor log(const Tensor& x) { return unary_op("log", UnaryOp::log, x); }
Tensor sqrt(const Tensor& x) { return unary_op("sqrt", UnaryOp::sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary_op("rsqrt", UnaryOp::rsqrt, x); }
Tensor abs(const Tensor& x) { return unary_op("abs", UnaryOp::abs, x); }
Tensor tanh(const Tensor& x) { return unary_op("tanh", UnaryOp::tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary_op("sigmoid", UnaryOp::sigmoid, x); }
Tensor relu(const Tensor& x) { return unary_op("relu", UnaryOp::relu, x); }
Tensor silu(const Tensor& x) { return unary_op("silu", UnaryOp::silu, x); }

Tensor gelu(const Tensor& x, GeluApprox approx) {
  return approx == GeluApprox::tanh ? unary_op("gelu", UnaryOp::gelu_tanh, x)
                                    : unary_op("gelu", UnaryOp::gelu, x);
}

Tensor add(const Tensor& a, double b) { return unary_op("add", UnaryOp::add_scalar, a, b); }
// x - s is x + (-s): exact in floating point, and one op fewer.
Tensor sub(const Tensor& a, double b) { return unary_op("sub", UnaryOp::add_scalar, a, -b); }
Tensor rsub(double a, const Tensor& b) { return unary_op("rsub", UnaryOp::rsub_scalar, b, a); }
Tensor mul(const Tensor& a, double b) { return unary_op("mul", UnaryOp::mul_scalar, a, b); }
Tensor div(const Tensor& a, double b) { return unary_op("div", UnaryOp::div_scalar, a, b); }
Tensor rdiv(double a, const Tensor& b) { return unary_op("rdiv", UnaryOp::rdiv_scalar, b, a); }
Tensor pow(const Tensor& a, double exponent) {
  return unary_op("pow", UnaryOp::pow_scalar, a, exponent);
}

}  // namespace vlmc
