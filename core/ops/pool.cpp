// adaptive_avg_pool2d: channels-last adaptive average pooling (kernels/pool.h).
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/pool.h"

namespace vlmc {
namespace {

Tensor pool_backward(const Tensor& grad_y, const kernels::PoolShape& s) {
  const Tensor g = grad_y.contiguous();
  Tensor grad_x = Tensor::empty({s.batch, s.in_h, s.in_w, s.channels}, g.dtype(), g.device());
  dispatch_float("adaptive_avg_pool2d backward", g.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if (g.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::adaptive_avg_pool2d_backward<T>(grad_x.data<T>(), g.data<T>(), s,
                                                                        stream_of(g)));
    } else {
      kernels::cpu::adaptive_avg_pool2d_backward<T>(grad_x.data<T>(), g.data<T>(), s);
    }
  });
  return grad_x;
}

}  // namespace

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_float("adaptive_avg_pool2d", "input", x);
  VLMC_CHECK(x.dim() == 4, "adaptive_avg_pool2d: input ", shape_str(x.shape()),
             " must be [B, H, W, C] (channels last)");
  VLMC_CHECK(out_h > 0 && out_w > 0, "adaptive_avg_pool2d: output size ", out_h, "x", out_w,
             " must be positive");
  VLMC_CHECK(x.size(1) > 0 && x.size(2) > 0, "adaptive_avg_pool2d: input ", shape_str(x.shape()),
             " has an empty grid");
  const kernels::PoolShape s{x.size(0), x.size(1), x.size(2), out_h, out_w, x.size(3)};
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty({s.batch, out_h, out_w, s.channels}, x.dtype(), x.device());
  dispatch_float("adaptive_avg_pool2d", x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if (x.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::adaptive_avg_pool2d<T>(y.data<T>(), xc.data<T>(), s, stream_of(x)));
    } else {
      kernels::cpu::adaptive_avg_pool2d<T>(y.data<T>(), xc.data<T>(), s);
    }
  });
  record(y, "adaptive_avg_pool2d", {x}, [s](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{pool_backward(g, s)};
  });
  return y;
}

}  // namespace vlmc
