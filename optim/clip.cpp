// Global-norm gradient clipping (see clip.h).
#include "optim/clip.h"

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"

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

}  // namespace vlmc::optim
