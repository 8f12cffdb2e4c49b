// AdamW (see adamw.h): the unfused path composed from the engine's in-place
// and elementwise ops, and the fused path over the multi-tensor kernel.
#include "optim/adamw.h"

#include <cmath>
#include <set>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/adamw.h"

namespace vlmc::optim {

bool is_no_decay(const std::string& name, const Tensor& param) {
  const std::string suffix = ".bias";
  const bool bias = name == "bias" || (name.size() > suffix.size() &&
                                       name.compare(name.size() - suffix.size(), suffix.size(),
                                                    suffix) == 0);
  return bias || param.dim() == 1;
}

std::vector<ParamGroup> make_param_groups(const std::vector<NamedTensor>& named,
                                          const GroupingOptions& options) {
  const bool split_prefix = !options.lr_prefix.empty();
  // [0] decay, [1] no_decay, [2] prefix decay, [3] prefix no_decay.
  std::vector<ParamGroup> groups(4);
  const char* kinds[] = {"decay", "no_decay"};
  for (size_t i = 0; i < groups.size(); ++i) {
    ParamGroup& g = groups[i];
    g.name = (i >= 2 ? options.lr_prefix : std::string()) + kinds[i % 2];
    g.lr = i >= 2 ? options.prefix_lr : options.lr;
    g.weight_decay = i % 2 == 0 ? options.weight_decay : 0.0;
    g.betas = options.betas;
    g.eps = options.eps;
  }
  for (const NamedTensor& nt : named) {
    VLMC_CHECK(nt.tensor.defined(), "make_param_groups: parameter ", nt.name, " is undefined");
    if (!nt.tensor.requires_grad()) continue;  // frozen
    const bool prefixed =
        split_prefix && nt.name.compare(0, options.lr_prefix.size(), options.lr_prefix) == 0;
    const size_t index = (prefixed ? 2 : 0) + (is_no_decay(nt.name, nt.tensor) ? 1 : 0);
    groups[index].params.push_back(nt.tensor);
  }
  std::vector<ParamGroup> kept;
  for (ParamGroup& g : groups)
    if (!g.params.empty()) kept.push_back(std::move(g));
  return kept;
}

AdamW::AdamW(std::vector<ParamGroup> groups, bool fused)
    : groups_(std::move(groups)), fused_(fused) {
  const Tensor* first = nullptr;  // fused: the parameter whose device all must share
  std::set<const TensorImpl*> seen;
  for (const ParamGroup& g : groups_) {
    const std::string where = str("AdamW: group '", g.name, "'");
    VLMC_CHECK(g.lr >= 0, where, ": lr ", g.lr, " must be >= 0");
    VLMC_CHECK(g.weight_decay >= 0, where, ": weight_decay ", g.weight_decay, " must be >= 0");
    VLMC_CHECK(g.eps >= 0, where, ": eps ", g.eps, " must be >= 0");
    VLMC_CHECK(g.betas.first >= 0 && g.betas.first < 1 && g.betas.second >= 0 &&
                   g.betas.second < 1,
               where, ": betas (", g.betas.first, ", ", g.betas.second, ") must be in [0, 1)");
    for (const Tensor& p : g.params) {
      VLMC_CHECK(p.defined(), where, ": a parameter is undefined");
      VLMC_CHECK(p.dtype() == DType::f32 || p.dtype() == DType::f64, where, ": parameter ",
                 describe(p), " must be f32 or f64");
      VLMC_CHECK(p.is_leaf(), where, ": parameter ", describe(p), " is not a leaf");
      VLMC_CHECK(p.is_contiguous(), where, ": parameter ", describe(p), " must be contiguous");
      VLMC_CHECK(seen.insert(&p.impl()).second, where, ": parameter ", describe(p),
                 " appears more than once");
      if (!fused_) continue;
      VLMC_CHECK(p.dtype() == DType::f32, where, ": fused AdamW needs f32 parameters, got ",
                 describe(p));
      if (first == nullptr) first = &p;
      VLMC_CHECK(p.device() == first->device(), where,
                 ": fused AdamW needs all parameters on one device, got ", describe(p),
                 " and ", describe(*first));
    }
    base_lrs_.push_back(g.lr);
    state_.emplace_back(g.params.size());
  }
}

void AdamW::step() { step(Tensor()); }

void AdamW::step(const Tensor& grad_scale) {
  NoGradGuard no_grad;
  if (grad_scale.defined()) {
    VLMC_CHECK(grad_scale.dtype() == DType::f32 && grad_scale.numel() == 1,
               "AdamW::step: grad_scale ", describe(grad_scale),
               " must be an f32 tensor of one element");
    for (const ParamGroup& g : groups_)
      for (const Tensor& p : g.params)
        VLMC_CHECK(grad_scale.device() == p.device(), "AdamW::step: grad_scale ",
                   describe(grad_scale), " is not on the device of parameter ", describe(p),
                   " in group '", g.name, "'");
  }
  if (fused_)
    step_fused(grad_scale);
  else
    step_unfused(grad_scale);
}

Tensor AdamW::checked_grad(size_t gi, size_t pi) const {
  const ParamGroup& g = groups_[gi];
  const Tensor& p = g.params[pi];
  const Tensor grad = p.grad();
  if (!grad.defined()) return grad;  // as PyTorch: no gradient, no update, no step
  VLMC_CHECK(grad.dtype() == p.dtype() && grad.shape() == p.shape() && grad.device() == p.device(),
             "AdamW: gradient ", describe(grad), " does not match parameter ", describe(p),
             " in group '", g.name, "'");
  return grad;
}

AdamW::State& AdamW::advance(size_t gi, size_t pi) {
  const Tensor& p = groups_[gi].params[pi];
  State& s = state_[gi][pi];
  if (!s.exp_avg.defined()) {
    s.exp_avg = Tensor::zeros(p.shape(), p.dtype(), p.device());
    s.exp_avg_sq = Tensor::zeros(p.shape(), p.dtype(), p.device());
  }
  s.step += 1;
  return s;
}

void AdamW::step_unfused(const Tensor& grad_scale) {
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    const auto [beta1, beta2] = g.betas;
    for (size_t pi = 0; pi < g.params.size(); ++pi) {
      Tensor p = g.params[pi];
      Tensor grad = checked_grad(gi, pi);
      if (!grad.defined()) continue;
      // The scale as a scalar-shaped tensor of the gradient's dtype, so the
      // product keeps the parameter's shape and dtype (no host read of it).
      if (grad_scale.defined()) grad = mul(grad, grad_scale.reshape({}).to(grad.dtype()));
      State& s = advance(gi, pi);
      // Decoupled weight decay, before the moments touch p.
      if (g.weight_decay != 0) mul_(p, 1.0 - g.lr * g.weight_decay);
      mul_(s.exp_avg, beta1);
      add_(s.exp_avg, grad, 1.0 - beta1);
      mul_(s.exp_avg_sq, beta2);
      add_(s.exp_avg_sq, mul(grad, grad), 1.0 - beta2);
      // Bias corrections in double on the host, as PyTorch's single-tensor path.
      const double t = static_cast<double>(s.step);
      const double bias_correction1 = 1.0 - std::pow(beta1, t);
      const double bias_correction2 = 1.0 - std::pow(beta2, t);
      const double step_size = g.lr / bias_correction1;
      // denom = sqrt(v) / sqrt(bc2) + eps: eps after the square root.
      const Tensor denom = add(div(sqrt(s.exp_avg_sq), std::sqrt(bias_correction2)), g.eps);
      add_(p, div(s.exp_avg, denom), -step_size);
    }
  }
}

void AdamW::step_fused(const Tensor& grad_scale) {
  // Host-side metadata only; the kernel reads the buffers in place. Gradients
  // that are not contiguous are copied, and kept alive until the call returns
  // (the CUDA copies are stream-ordered before the kernel).
  std::vector<kernels::AdamWTensor<float>> list;
  std::vector<Tensor> keep;
  Device device = Device::cpu();
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    const auto [beta1, beta2] = g.betas;
    for (size_t pi = 0; pi < g.params.size(); ++pi) {
      const Tensor& p = g.params[pi];
      Tensor grad = checked_grad(gi, pi);
      if (!grad.defined()) continue;
      if (!grad.is_contiguous()) {
        grad = grad.contiguous();
        keep.push_back(grad);
      }
      State& s = advance(gi, pi);
      device = p.device();
      // The scalars exactly as the unfused path computes them (double, then
      // rounded to f32 once), so both paths round the same way.
      const double t = static_cast<double>(s.step);
      const double bias_correction1 = 1.0 - std::pow(beta1, t);
      const double bias_correction2 = 1.0 - std::pow(beta2, t);
      kernels::AdamWTensor<float> item;
      item.param = p.data<float>();
      item.grad = grad.data<float>();
      item.exp_avg = s.exp_avg.data<float>();
      item.exp_avg_sq = s.exp_avg_sq.data<float>();
      item.numel = p.numel();
      item.decay_factor = static_cast<float>(1.0 - g.lr * g.weight_decay);
      item.beta1 = static_cast<float>(beta1);
      item.one_minus_beta1 = static_cast<float>(1.0 - beta1);
      item.beta2 = static_cast<float>(beta2);
      item.one_minus_beta2 = static_cast<float>(1.0 - beta2);
      item.neg_step_size = static_cast<float>(-(g.lr / bias_correction1));
      item.sqrt_bc2 = static_cast<float>(std::sqrt(bias_correction2));
      item.eps = static_cast<float>(g.eps);
      list.push_back(item);
    }
  }
  if (list.empty()) return;
  const float* scale = grad_scale.defined() ? grad_scale.data<float>() : nullptr;
  const auto count = static_cast<int64_t>(list.size());
  if (device.is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::adamw(list.data(), count, scale, cuda::stream(device.index)));
  } else {
    kernels::cpu::adamw<float>(list.data(), count, scale);
  }
}

void AdamW::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (ParamGroup& g : groups_)
    for (Tensor& p : g.params) {
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      if (set_to_none || !grad.is_contiguous())
        p.set_grad(set_to_none ? Tensor() : Tensor::zeros(p.shape(), grad.dtype(), p.device()));
      else
        grad.zero_();
    }
}

void AdamW::set_lr_multiplier(double multiplier) {
  VLMC_CHECK(multiplier >= 0 && std::isfinite(multiplier), "AdamW::set_lr_multiplier: ",
             multiplier, " must be finite and >= 0");
  for (size_t i = 0; i < groups_.size(); ++i) groups_[i].lr = base_lrs_[i] * multiplier;
}

int64_t AdamW::step_count(size_t group, size_t param) const {
  VLMC_CHECK(group < state_.size() && param < state_[group].size(), "AdamW::step_count: (",
             group, ", ", param, ") is out of range");
  return state_[group][param].step;
}

std::map<std::string, Tensor> AdamW::state_dict() const {
  std::map<std::string, Tensor> out;
  size_t k = 0;
  for (const auto& group : state_)
    for (const State& s : group) {
      if (s.exp_avg.defined()) {
        const std::string key = str("state.", k, ".");
        out[key + "step"] = Tensor::from_vector(std::vector<int64_t>{s.step}, Shape{});
        out[key + "exp_avg"] = s.exp_avg.clone();
        out[key + "exp_avg_sq"] = s.exp_avg_sq.clone();
      }
      ++k;
    }
  return out;
}

void AdamW::load_state_dict(const std::map<std::string, Tensor>& state) {
  // Check everything before changing anything, so a bad dict leaves the state alone.
  size_t k = 0, used = 0;
  std::vector<std::vector<State>> next = state_;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi, ++k) {
      const Tensor& p = groups_[gi].params[pi];
      const std::string key = str("state.", k, ".");
      const auto step = state.find(key + "step");
      const auto m = state.find(key + "exp_avg");
      const auto v = state.find(key + "exp_avg_sq");
      const int found = (step != state.end()) + (m != state.end()) + (v != state.end());
      State& s = next[gi][pi];
      if (found == 0) {
        s = State();
        continue;
      }
      VLMC_CHECK(found == 3, "AdamW::load_state_dict: ", key, "{step,exp_avg,exp_avg_sq} incomplete");
      VLMC_CHECK(step->second.numel() == 1, "AdamW::load_state_dict: ", key, "step must have one element");
      for (const Tensor* t : {&m->second, &v->second})
        VLMC_CHECK(t->shape() == p.shape(), "AdamW::load_state_dict: ", key, " moment ", describe(*t),
                   " does not match parameter ", describe(p));
      s.step = static_cast<int64_t>(step->second.item());
      VLMC_CHECK(s.step >= 1, "AdamW::load_state_dict: ", key, "step ", s.step, " must be >= 1");
      s.exp_avg = m->second.to(p.device(), p.dtype()).clone();
      s.exp_avg_sq = v->second.to(p.device(), p.dtype()).clone();
      used += 3;
    }
  VLMC_CHECK(used == state.size(), "AdamW::load_state_dict: ", state.size() - used,
             " entries name no parameter of this optimizer");
  state_ = std::move(next);
}

}  // namespace vlmc::optim
