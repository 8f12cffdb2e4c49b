// rotary_embedding: LLaMA's rotary positions as one op (kernels/rotary.h) on the
// CPU; the composed form elsewhere.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "core/ops/heads.h"
#include "kernels/rotary.h"

namespace vlmc {
namespace {

constexpr const char* kOp = "rotary_embedding";

// HF's x * cos + rotate_half(x) * sin from recorded ops: CUDA, bf16, or
// tables that are not one row per (sample, position).
Tensor composed(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const Tensor rotated = cat({neg(x.narrow(-1, half, half)), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

// The layout the kernel reads x in: the head dim contiguous, any row strides.
bool kernel_layout(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const Shape table{x.size(0), 1, x.size(2), x.size(3)};
  return x.device().is_cpu() && (x.dtype() == DType::f32 || x.dtype() == DType::f64) &&
         cos.dtype() == x.dtype() && sin.dtype() == x.dtype() && cos.shape() == table && sin.shape() == table &&
         cos.is_contiguous() && sin.is_contiguous() && x.strides()[3] == 1;
}

kernels::RotaryShape shape_of(const Tensor& t) {
  return {t.size(0), t.size(1), t.size(2), t.size(3), t.strides()[0], t.strides()[1], t.strides()[2]};
}

}  // namespace

Tensor rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  check_float(kOp, "x", x);
  VLMC_CHECK(x.dim() == 4, kOp, ": x ", shape_str(x.shape()), " must be [B, H, L, D]");
  VLMC_CHECK(x.size(3) % 2 == 0, kOp, ": the head dim of x ", shape_str(x.shape()), " must be even");
  VLMC_CHECK(!cos.requires_grad() && !sin.requires_grad(), kOp,
             ": cos and sin are position tables; no gradient flows to them");
  if (!kernel_layout(x, cos, sin)) return composed(x, cos, sin);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());  // [B, H, L, D] contiguous
  dispatch_float(kOp, x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    kernels::cpu::rotary_forward<T>(y.data<T>(), x.data<T>(), cos.data<T>(), sin.data<T>(), shape_of(x));
  });
  record(y, kOp, {x}, [shape = x.shape(), strides = x.strides(), cos, sin](const Tensor& grad, const GradMask&) {
    const Tensor g = grad.contiguous();
    Tensor dx = empty_like_heads(shape, strides, g.dtype());  // flows back through x's view uncopied
    dispatch_float(kOp, g.dtype(), [&](auto zero) {
      using T = decltype(zero);
      kernels::cpu::rotary_backward<T>(dx.data<T>(), g.data<T>(), cos.data<T>(), sin.data<T>(), shape_of(dx));
    });
    return std::vector<Tensor>{dx};
  });
  return y;
}

}  // namespace vlmc
