// swiglu: LLaMA's silu(gate) * up as one op (kernels/swiglu.h) on the CPU; the
// composed form elsewhere.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/swiglu.h"

namespace vlmc {
namespace {

constexpr const char* kOp = "swiglu";

bool kernel_layout(const Tensor& gate, const Tensor& up) {
  return gate.device().is_cpu() && (gate.dtype() == DType::f32 || gate.dtype() == DType::f64) &&
         up.dtype() == gate.dtype() && gate.is_contiguous() && up.is_contiguous();
}

}  // namespace

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  VLMC_CHECK(gate.defined() && up.defined(), kOp, ": gate and up must be defined tensors");
  check_same_device(kOp, {gate, up});
  VLMC_CHECK(gate.shape() == up.shape(), kOp, ": gate ", describe(gate), " and up ", describe(up),
             " must have the same shape (both [..., intermediate_size])");
  if (!kernel_layout(gate, up)) return silu(gate) * up;
  Tensor y = Tensor::empty(gate.shape(), gate.dtype(), gate.device());
  dispatch_float(kOp, gate.dtype(), [&](auto zero) {
    using T = decltype(zero);
    kernels::cpu::swiglu_forward<T>(y.data<T>(), gate.data<T>(), up.data<T>(), gate.numel());
  });
  // Saves gate and up (the composed form also keeps silu(gate)).
  record(y, kOp, {gate, up}, [gate = gate.detach(), up = up.detach()](const Tensor& grad, const GradMask& needs) {
    const Tensor g = grad.contiguous();
    Tensor dgate = needs[0] ? Tensor::empty(gate.shape(), g.dtype(), g.device()) : Tensor();
    Tensor dup = needs[1] ? Tensor::empty(up.shape(), g.dtype(), g.device()) : Tensor();
    dispatch_float(kOp, g.dtype(), [&](auto zero) {
      using T = decltype(zero);
      kernels::cpu::swiglu_backward<T>(needs[0] ? dgate.data<T>() : nullptr, needs[1] ? dup.data<T>() : nullptr,
                                       g.data<T>(), gate.data<T>(), up.data<T>(), g.numel());
    });
    return std::vector<Tensor>{dgate, dup};
  });
  return y;
}

}  // namespace vlmc
