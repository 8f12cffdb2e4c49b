// AdamW over tensors: torch.optim.AdamW (amsgrad=False, maximize=False) exactly.
//
// Per parameter p with gradient g, at its own step count t (1-based):
//   p   -= lr * weight_decay * p                 (decoupled weight decay, first)
//   m    = beta1 * m + (1 - beta1) * g
//   v    = beta2 * v + (1 - beta2) * g^2
//   p   -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// eps is added after the square root, as PyTorch. A parameter without a gradient
// is skipped (its step count does not advance). The state (step, exp_avg,
// exp_avg_sq) lives on the parameter's device in its dtype (f32 masters).
//
// The optimizer knows tensors only; make_param_groups() splits named tensors
// (a module's named_parameters(), say) into the usual groups.
//
// Two paths with one state layout: the unfused one composes engine ops per
// parameter (the reference); the fused one (fused = true, f32 parameters on one
// device) updates all parameters with ONE multi-tensor kernel call
// (kernels/adamw.h) and no temporaries. Their state_dicts are interchangeable.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace vlmc::optim {

struct ParamGroup {
  std::string name;            // for logs and errors only
  std::vector<Tensor> params;  // leaves; updated in place
  double lr = 1e-3;            // PyTorch's defaults
  double weight_decay = 1e-2;
  std::pair<double, double> betas{0.9, 0.999};
  double eps = 1e-8;
};

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

struct GroupingOptions {
  double lr = 1e-3;
  double weight_decay = 0.0;
  std::pair<double, double> betas{0.9, 0.999};
  double eps = 1e-8;
  // Parameters whose name starts with lr_prefix (when non-empty) get prefix_lr,
  // e.g. "connector." with LLaVA's mm_projector_lr.
  std::string lr_prefix;
  double prefix_lr = 0.0;
};

// True for the parameters that take no weight decay: biases (names ending in
// ".bias", or "bias") and 1-D tensors (norm weights and the like).
bool is_no_decay(const std::string& name, const Tensor& param);

// Splits the parameters that require grad (frozen ones are left out, as LLaVA's
// trainer does) into "decay" and "no_decay", and, with a prefix, also
// "<prefix>decay" and "<prefix>no_decay" at prefix_lr; empty groups are dropped.
// Order: decay, no_decay, <prefix>decay, <prefix>no_decay; parameters keep their order.
std::vector<ParamGroup> make_param_groups(const std::vector<NamedTensor>& named,
                                          const GroupingOptions& options);

class AdamW {
 public:
  // Checks every group (lr >= 0, 0 <= betas < 1, eps >= 0, weight_decay >= 0,
  // float leaf parameters, no parameter twice) and throws vlmc::Error if not.
  // fused additionally requires every parameter f32 and all on one device.
  explicit AdamW(std::vector<ParamGroup> groups, bool fused = false);

  // One update of every parameter that has a gradient, under NoGradGuard.
  void step();
  // The same with every gradient multiplied by grad_scale as it is read (the
  // gradients themselves are left alone): an f32 one-element tensor on the
  // parameters' device, e.g. clip_coefficient()'s coef; undefined means 1.
  // The fused path reads it inside the kernel, so nothing syncs with the host.
  void step(const Tensor& grad_scale);
  bool fused() const { return fused_; }
  // set_to_none (PyTorch's default since 2.0): drop the gradients; else zero them.
  void zero_grad(bool set_to_none = true);

  std::vector<ParamGroup>& groups() { return groups_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  // The lr each group was constructed with; schedules scale these.
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  // lr of group i = base_lrs()[i] * multiplier (what LambdaLR does each step).
  void set_lr_multiplier(double multiplier);

  // Steps taken by parameter j of group i (0 before its first update).
  int64_t step_count(size_t group, size_t param) const;

  // The state as tensors, keyed as PyTorch's state_dict indexes parameters (over
  // all groups in order): "state.<k>.step" (i64 scalar on the CPU),
  // "state.<k>.exp_avg", "state.<k>.exp_avg_sq". Parameters without state yet
  // are absent. The tensors are copies.
  std::map<std::string, Tensor> state_dict() const;
  // Restores a state_dict() (onto each parameter's device); shapes must match.
  void load_state_dict(const std::map<std::string, Tensor>& state);

 private:
  struct State {
    int64_t step = 0;
    Tensor exp_avg;     // m, same shape/dtype/device as the parameter
    Tensor exp_avg_sq;  // v
  };
  void step_unfused(const Tensor& grad_scale);
  void step_fused(const Tensor& grad_scale);
  // The checked gradient of parameter pi of group gi (undefined when it has none).
  Tensor checked_grad(size_t gi, size_t pi) const;
  // Creates the moments on the first step and advances the step count.
  State& advance(size_t gi, size_t pi);

  std::vector<ParamGroup> groups_;
  bool fused_ = false;
  std::vector<double> base_lrs_;
  std::vector<std::vector<State>> state_;  // [group][param]
};

}  // namespace vlmc::optim
