// The stage loop's optimizer: fused AdamW, optionally with its state sharded
// over the processes of a data-parallel job (ZeRO stage 1, run.zero_stage 1).
//
// Unsharded, every process holds AdamW's two moments for every trained
// parameter and updates every parameter. Sharded, each parameter has one
// owner process: only the owner keeps its moments and updates it (from the
// full gradient, already summed over the processes, which every process
// holds), then broadcasts the new values so that every process again holds
// identical weights. The per-parameter arithmetic is the very same, so the
// weights, losses and moments are bit for bit those of the unsharded job.
// Gradients and weights stay whole on every process (sharding those is
// ZeRO-2/3).
//
// Lives in train/ because it joins optim/ (AdamW) and dist/ (the broadcast);
// optim/ knows nothing of processes.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "dist/process_group.h"
#include "optim/adamw.h"

namespace vlmc::train {

// Which process owns each parameter: greedy balance of numel in parameter
// order — parameter i goes to the process with the fewest elements assigned
// so far (the lowest rank on a tie). Deterministic, so every process computes
// the same plan from the same shapes; no process holds more than the average
// plus the largest parameter.
std::vector<int> plan_ownership(const std::vector<int64_t>& numels, int processes);

class ShardedOptimizer {
 public:
  // `groups` as optim::AdamW takes them (all the stage's trained parameters).
  // Sharded when zero_stage is 1 and `group` has more than one process;
  // otherwise this is exactly optim::AdamW(groups, fused=true). Every process
  // must pass the same groups, in the same order, with the same shapes.
  ShardedOptimizer(std::vector<optim::ParamGroup> groups, dist::ProcessGroup* group, int zero_stage);

  bool sharded() const { return sharded_; }
  // Owner of each parameter, over all groups in order (all 0 when unsharded).
  const std::vector<int>& owners() const { return owners_; }
  // The AdamW over this process's parameters: its groups are the given ones
  // with the parameters of other owners left out (a group may be empty), so
  // group indices and base_lrs are the unsharded ones.
  const optim::AdamW& local() const { return adam_; }

  // lr of group i = its base lr * multiplier, as optim::AdamW.
  void set_lr_multiplier(double multiplier) { adam_.set_lr_multiplier(multiplier); }
  // Updates the owned parameters (gradients scaled by grad_scale as in
  // optim::AdamW::step; undefined means 1), then, sharded, every parameter is
  // broadcast from its owner. Collective when sharded: every process calls it;
  // `what` names the broadcast in timeout messages ("stage1 step 12 parameters").
  void step(const Tensor& grad_scale, const std::string& what);
  // Drops the gradients of every parameter, owned or not.
  void zero_grad();

  // The full optimizer state in optim::AdamW's format, as the unsharded
  // AdamW over all the groups would write it ("state.<k>.{step,exp_avg,
  // exp_avg_sq}", k over all parameters of all groups in order), so the
  // checkpoints of sharded and unsharded jobs are interchangeable. Sharded,
  // each owner broadcasts its moments: a collective that every process calls,
  // and every process gets the whole state (for the moment of the call it
  // holds all the moments once more).
  std::map<std::string, Tensor> state_dict(const std::string& what) const;
  // Restores a full state_dict (from either kind of job): checked as a whole
  // against all the parameters, then each process keeps its own entries.
  void load_state_dict(const std::map<std::string, Tensor>& full);

 private:
  dist::ProcessGroup* group_;
  bool sharded_ = false;
  std::vector<Tensor> params_;  // every parameter, over all groups in order (index = k)
  std::vector<int> owners_;     // per params_ entry
  std::vector<int64_t> local_;  // per params_ entry: its index in adam_'s order, or -1
  optim::AdamW adam_;           // fused, over the owned parameters only
};

}  // namespace vlmc::train
