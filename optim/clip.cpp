// Global-norm gradient clipping (see clip.h).
#include "optim/clip.h"

#include <cmath>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/adamw.h"

namespace vlmc::optim {

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  VLMC_CHECK(max_norm > 0, "clip_grad_norm_: max_norm ", max_norm, " must be > 0");
  NoGradGuard no_grad;
  // Sum of squares stays on the first gradient's device and dtype; gradients
  // elsewhere are summed where they live and their one-element partial moved.
  Tensor total_sq;
  for (const Tensor& p : params) {
    VLMC_CHECK(p.defined(), "clip_grad_norm_: a parameter is undefined");
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor part = sum(mul(g, g));
    if (!total_sq.defined()) {
      total_sq = part;
    } else {
      if (part.device() != total_sq.device() || part.dtype() != total_sq.dtype())
        part = part.to(total_sq.device(), total_sq.dtype());
      total_sq = add(total_sq, part);
    }
  }
  if (!total_sq.defined()) return 0.0;
  // The one host sync: the caller wants the norm (to log it) and the decision
  // to scale is made on the host.
  const double total = std::sqrt(total_sq.item());
  const double coef = max_norm / (total + 1e-6);
  // PyTorch clamps coef at 1 (scaling by 1 is a no-op we skip); a NaN total gives
  // NaN gradients and an infinite one zeroes them, as there.
  if (!(coef >= 1.0)) {
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      if (g.is_contiguous())
        mul_(g, coef);
      else
        p.set_grad(mul(g, coef));
    }
  }
  return total;
}

GradClip clip_coefficient(const std::vector<Tensor>& params, double max_norm) {
  VLMC_CHECK(max_norm > 0, "clip_coefficient: max_norm ", max_norm, " must be > 0");
  NoGradGuard no_grad;
  std::vector<kernels::SquareSumTensor<float>> list;
  std::vector<Tensor> keep;  // contiguous copies, alive until the kernels are issued
  const Tensor* first = nullptr;
  for (const Tensor& p : params) {
    VLMC_CHECK(p.defined(), "clip_coefficient: a parameter is undefined");
    Tensor g = p.grad();
    if (!g.defined()) continue;
    VLMC_CHECK(g.dtype() == DType::f32, "clip_coefficient: gradient ", describe(g),
               " of parameter ", describe(p), " must be f32");
    if (first == nullptr) first = &p;
    VLMC_CHECK(g.device() == first->device(), "clip_coefficient: gradients on several devices: ",
               describe(p), " and ", describe(*first));
    if (!g.is_contiguous()) {
      g = g.contiguous();
      keep.push_back(g);
    }
    list.push_back({g.data<float>(), g.numel()});
  }
  const Device device = first != nullptr ? first->device()
                        : !params.empty() ? params.front().device()
                                          : Device::cpu();
  GradClip out{Tensor::empty({}, DType::f32, device), Tensor::empty({}, DType::f32, device)};
  if (list.empty()) {
    out.total_norm.fill_(0.0);
    out.coef.fill_(1.0);
    return out;
  }
  const Tensor total_sq = Tensor::empty({}, DType::f32, device);
  const auto count = static_cast<int64_t>(list.size());
  if (device.is_cuda()) {
    VLMC_CUDA_DISPATCH({
      const Tensor scratch =
          Tensor::empty({kernels::cuda::sum_squares_scratch_size(count)}, DType::f64, device);
      const cudaStream_t stream = cuda::stream(device.index);
      kernels::cuda::sum_squares(total_sq.data<float>(), list.data(), count,
                                 scratch.data<double>(), stream);
      kernels::cuda::clip_coefficient(out.total_norm.data<float>(), out.coef.data<float>(),
                                      total_sq.data<float>(), max_norm, stream);
    });
  } else {
    kernels::cpu::sum_squares<float>(total_sq.data<float>(), list.data(), count);
    kernels::cpu::clip_coefficient(out.total_norm.data<float>(), out.coef.data<float>(),
                                   total_sq.data<float>(), max_norm);
  }
  return out;
}

}  // namespace vlmc::optim
