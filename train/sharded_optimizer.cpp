// ZeRO stage 1 over the fused AdamW (see sharded_optimizer.h).
#include "train/sharded_optimizer.h"

#include <utility>

#include "core/autograd.h"
#include "core/error.h"

namespace vlmc::train {
namespace {

std::vector<Tensor> all_params(const std::vector<optim::ParamGroup>& groups) {
  std::vector<Tensor> out;
  for (const optim::ParamGroup& g : groups)
    for (const Tensor& p : g.params) {
      VLMC_CHECK(p.defined(), "optimizer: group '", g.name, "' has an undefined parameter");
      out.push_back(p);
    }
  return out;
}

std::vector<int64_t> numels(const std::vector<Tensor>& params) {
  std::vector<int64_t> out;
  for (const Tensor& p : params) out.push_back(p.numel());
  return out;
}

// The groups with the parameters of other owners left out. Empty groups are
// kept, so that group i (its lr, its base lr) is the same on every process.
std::vector<optim::ParamGroup> owned_groups(std::vector<optim::ParamGroup> groups, const std::vector<int>& owners,
                                            int rank) {
  size_t k = 0;
  for (optim::ParamGroup& g : groups) {
    std::vector<Tensor> kept;
    for (const Tensor& p : g.params)
      if (owners[k++] == rank) kept.push_back(p);
    g.params = std::move(kept);
  }
  return groups;
}

std::string state_key(size_t k) { return "state." + std::to_string(k) + "."; }

}  // namespace

std::vector<int> plan_ownership(const std::vector<int64_t>& numels, int processes) {
  VLMC_CHECK(processes >= 1, "plan_ownership: ", processes, " processes");
  std::vector<int64_t> load(static_cast<size_t>(processes), 0);
  std::vector<int> owners;
  owners.reserve(numels.size());
  for (const int64_t n : numels) {
    int least = 0;
    for (int r = 1; r < processes; ++r)
      if (load[r] < load[least]) least = r;
    owners.push_back(least);
    load[least] += n;
  }
  return owners;
}

ShardedOptimizer::ShardedOptimizer(std::vector<optim::ParamGroup> groups, dist::ProcessGroup* group,
                                   int zero_stage)
    : group_(group),
      sharded_(zero_stage == 1 && group != nullptr && group->world_size() > 1),
      params_(all_params(groups)),
      owners_(sharded_ ? plan_ownership(numels(params_), group->world_size()) : std::vector<int>(params_.size(), 0)),
      adam_(owned_groups(std::move(groups), owners_, sharded_ ? group->rank() : 0), /*fused=*/true) {
  VLMC_CHECK(zero_stage == 0 || zero_stage == 1, "run.zero_stage must be 0 or 1, got ", zero_stage);
  const int rank = sharded_ ? group_->rank() : 0;
  int64_t next = 0;
  for (const int owner : owners_) local_.push_back(owner == rank ? next++ : -1);
}

void ShardedOptimizer::step(const Tensor& grad_scale, const std::string& what) {
  adam_.step(grad_scale);
  if (sharded_) group_->broadcast(params_, owners_, what);
}

void ShardedOptimizer::zero_grad() {
  if (!sharded_) {
    adam_.zero_grad();
    return;
  }
  NoGradGuard no_grad;
  for (const Tensor& p : params_) p.set_grad(Tensor());
}

std::map<std::string, Tensor> ShardedOptimizer::state_dict(const std::string& what) const {
  if (!sharded_) return adam_.state_dict();
  const std::map<std::string, Tensor> mine = adam_.state_dict();
  // Step counts first (the owner's, 0 elsewhere; exact in double): every
  // process then knows which parameters have moments, and of what step.
  std::vector<double> steps(params_.size(), 0.0);
  for (size_t k = 0; k < params_.size(); ++k) {
    if (local_[k] < 0) continue;
    const auto it = mine.find(state_key(static_cast<size_t>(local_[k])) + "step");
    if (it != mine.end()) steps[k] = it->second.item();
  }
  steps = group_->all_reduce_sum(steps, what + " (step counts)");
  std::map<std::string, Tensor> full;
  std::vector<Tensor> moments;
  std::vector<int> from;
  for (size_t k = 0; k < params_.size(); ++k) {
    if (steps[k] == 0) continue;  // no update yet: absent, as in AdamW's state_dict
    const std::string key = state_key(k);
    full[key + "step"] = Tensor::from_vector(std::vector<int64_t>{static_cast<int64_t>(steps[k])}, Shape{});
    for (const char* name : {"exp_avg", "exp_avg_sq"}) {
      const Tensor& p = params_[k];
      Tensor m = local_[k] >= 0 ? mine.at(state_key(static_cast<size_t>(local_[k])) + name)
                                : Tensor::zeros(p.shape(), p.dtype(), p.device());
      full[key + name] = m;
      moments.push_back(m);
      from.push_back(owners_[k]);
    }
  }
  group_->broadcast(moments, from, what);
  return full;
}

void ShardedOptimizer::load_state_dict(const std::map<std::string, Tensor>& full) {
  if (!sharded_) {
    adam_.load_state_dict(full);
    return;
  }
  // Every process checks the whole dict, so all of them accept or refuse it.
  std::map<std::string, Tensor> mine;
  size_t used = 0;
  for (size_t k = 0; k < params_.size(); ++k) {
    const std::string key = state_key(k);
    const Tensor& p = params_[k];
    int found = 0;
    for (const char* name : {"step", "exp_avg", "exp_avg_sq"}) found += full.count(key + name) ? 1 : 0;
    if (found == 0) continue;
    VLMC_CHECK(found == 3, "optimizer state: ", key, "{step,exp_avg,exp_avg_sq} incomplete");
    VLMC_CHECK(full.at(key + "step").numel() == 1, "optimizer state: ", key, "step must have one element");
    for (const char* name : {"exp_avg", "exp_avg_sq"})
      VLMC_CHECK(full.at(key + name).shape() == p.shape(), "optimizer state: ", key, name, " ",
                 describe(full.at(key + name)), " does not match parameter ", describe(p));
    used += 3;
    if (local_[k] < 0) continue;
    const std::string local_key = state_key(static_cast<size_t>(local_[k]));
    for (const char* name : {"step", "exp_avg", "exp_avg_sq"}) mine[local_key + name] = full.at(key + name);
  }
  VLMC_CHECK(used == full.size(), "optimizer state: ", full.size() - used, " entries name no parameter of this ",
             "optimizer (", params_.size(), " parameters)");
  adam_.load_state_dict(mine);
}

}  // namespace vlmc::train
