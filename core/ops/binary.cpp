// Broadcasting binary ops (add, sub, mul, div, pow, maximum, minimum) and the
// in-place add_/mul_ used by gradient accumulation and optimizers.
//
// Forward: one kernel over the broadcast output, operands passed as Layouts
// (stride 0 on broadcast dims), so no operand is expanded or copied. Backward:
// one fused kernel computes both gradients at the output's shape, then sum_to
// folds each back to its input's shape.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/elementwise.h"

namespace vlmc {
namespace {

using kernels::BinaryOp;

void check_operands(const char* op, const Tensor& a, const Tensor& b) {
  VLMC_CHECK(a.defined() && b.defined(), op, ": operand is undefined (", describe(a), ", ",
             describe(b), ")");
  check_same_device(op, {a, b});
  check_same_dtype(op, {a, b});
  check_float(op, "a", a);
}

// out = op(a, b) at the broadcast shape (no autograd).
Tensor binary_forward(const char* name, BinaryOp op, const Tensor& a, const Tensor& b) {
  const Shape out_shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  const kernels::Layout la = broadcast_layout(a.shape(), a.strides(), out_shape);
  const kernels::Layout lb = broadcast_layout(b.shape(), b.strides(), out_shape);
  dispatch_float(name, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (out.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::binary<T>(op, out.data<T>(), a.data<T>(), la, b.data<T>(),
                                                  lb, stream_of(out)));
    } else {
      kernels::cpu::binary<T>(op, out.data<T>(), a.data<T>(), la, b.data<T>(), lb);
    }
  });
  return out;
}

// Both gradients at the output's shape, then reduced to each input's shape.
std::vector<Tensor> binary_grads(const char* name, BinaryOp op, const Tensor& g_in, const Tensor& a,
                                 const Tensor& b, const GradMask& needs) {
  const Tensor g = g_in.contiguous();
  const Shape& out_shape = g.shape();
  Tensor ga = needs[0] ? Tensor::empty(out_shape, g.dtype(), g.device()) : Tensor();
  Tensor gb = needs[1] ? Tensor::empty(out_shape, g.dtype(), g.device()) : Tensor();
  const kernels::Layout la = broadcast_layout(a.shape(), a.strides(), out_shape);
  const kernels::Layout lb = broadcast_layout(b.shape(), b.strides(), out_shape);
  dispatch_float(name, g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* pa = ga.defined() ? ga.data<T>() : nullptr;
    T* pb = gb.defined() ? gb.data<T>() : nullptr;
    if (g.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::binary_backward<T>(op, pa, pb, g.data<T>(), a.data<T>(), la,
                                                           b.data<T>(), lb, stream_of(g)));
    } else {
      kernels::cpu::binary_backward<T>(op, pa, pb, g.data<T>(), a.data<T>(), la, b.data<T>(), lb);
    }
  });
  return {ga.defined() ? sum_to(ga, a.shape()) : Tensor(),
          gb.defined() ? sum_to(gb, b.shape()) : Tensor()};
}

// The general op: saves the (detached) operands its backward reads.
Tensor binary_op(const char* name, BinaryOp op, const Tensor& a, const Tensor& b) {
  check_operands(name, a, b);
  Tensor out = binary_forward(name, op, a, b);
  if (any_requires_grad({a, b})) {
    record(out, name, {a, b},
           [name, op, a = a.detach(), b = b.detach()](const Tensor& g, const GradMask& needs) {
             return binary_grads(name, op, g, a, b, needs);
           });
  }
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  check_operands("add", a, b);
  Tensor out = binary_forward("add", BinaryOp::add, a, b);
  // The gradient passes through unchanged: nothing to save but the shapes.
  record(out, "add", {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, const GradMask& needs) {
    return std::vector<Tensor>{needs[0] ? sum_to(g, sa) : Tensor(), needs[1] ? sum_to(g, sb) : Tensor()};
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  check_operands("sub", a, b);
  Tensor out = binary_forward("sub", BinaryOp::sub, a, b);
  record(out, "sub", {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, const GradMask& needs) {
    return std::vector<Tensor>{needs[0] ? sum_to(g, sa) : Tensor(),
                               needs[1] ? neg(sum_to(g, sb)) : Tensor()};
  });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) { return binary_op("mul", BinaryOp::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op("div", BinaryOp::div, a, b); }
Tensor pow(const Tensor& a, const Tensor& b) { return binary_op("pow", BinaryOp::pow, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary_op("maximum", BinaryOp::maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary_op("minimum", BinaryOp::minimum, a, b); }

Tensor& add_(Tensor& self, const Tensor& other, double alpha) {
  check_operands("add_", self, other);
  VLMC_CHECK(!(self.requires_grad() && grad_enabled()), "add_: in-place change of ", describe(self),
             " which requires grad; do it under NoGradGuard");
  VLMC_CHECK(self.is_contiguous(), "add_: self ", describe(self), " must be contiguous");
  VLMC_CHECK(broadcast_shapes(other.shape(), self.shape(), "add_") == self.shape(), "add_: other ",
             shape_str(other.shape()), " does not broadcast to self ", shape_str(self.shape()));
  const kernels::Layout lo = broadcast_layout(other.shape(), other.strides(), self.shape());
  dispatch_float("add_", self.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (self.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::add_scaled_inplace<T>(self.data<T>(), other.data<T>(), lo,
                                                              alpha, stream_of(self)));
    } else {
      kernels::cpu::add_scaled_inplace<T>(self.data<T>(), other.data<T>(), lo, alpha);
    }
  });
  return self;
}

Tensor& mul_(Tensor& self, double value) {
  VLMC_CHECK(self.defined(), "mul_: self is undefined");
  check_float("mul_", "self", self);
  VLMC_CHECK(!(self.requires_grad() && grad_enabled()), "mul_: in-place change of ", describe(self),
             " which requires grad; do it under NoGradGuard");
  VLMC_CHECK(self.is_contiguous(), "mul_: self ", describe(self), " must be contiguous");
  dispatch_float("mul_", self.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (self.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::unary<T>(kernels::UnaryOp::mul_scalar, self.data<T>(),
                                                 self.data<T>(), self.numel(), value,
                                                 stream_of(self)));
    } else {
      kernels::cpu::unary<T>(kernels::UnaryOp::mul_scalar, self.data<T>(), self.data<T>(),
                             self.numel(), value);
    }
  });
  return self;
}

}  // namespace vlmc
