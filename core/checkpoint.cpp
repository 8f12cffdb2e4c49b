#include "core/checkpoint.h"

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/error.h"

namespace vlmc {
namespace {

// Grad mode on for its scope (the backward runs with it off).
class EnableGradGuard {
 public:
  EnableGradGuard() : previous_(grad_enabled()) { set_grad_enabled(true); }
  ~EnableGradGuard() { set_grad_enabled(previous_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& fn, const Tensor& input) {
  if (!any_requires_grad({input})) return fn(input);
  Tensor out;
  {
    NoGradGuard no_grad;
    out = fn(input);
  }
  VLMC_CHECK(out.defined(), "checkpoint: the block returned no tensor");
  // A view of the input (an identity block) would make the record below
  // rewrite the input's own graph: give the output storage of its own.
  if (out.impl_ptr() == input.impl_ptr()) out = out.clone();
  const bool bf16 = autocast_bf16();
  record(out, "checkpoint", {input}, [fn, input, bf16](const Tensor& grad, const GradMask&) -> std::vector<Tensor> {
    Tensor x = input.detach();
    x.set_requires_grad(true);
    Tensor y;
    {
      EnableGradGuard enable;
      AutocastGuard autocast(bf16);
      y = fn(x);
    }
    VLMC_CHECK(y.requires_grad(), "checkpoint: the recomputed block does not depend on its input");
    run_backward(y, grad, /*retain_graph=*/false);
    VLMC_CHECK(x.grad().defined(), "checkpoint: the recomputed block gave its input no gradient");
    return {x.grad()};
  });
  return out;
}

}  // namespace vlmc
