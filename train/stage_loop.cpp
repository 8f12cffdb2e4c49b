#include "train/stage_loop.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <utility>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/cuda/runtime.h"
#include "core/error.h"
#include "core/host_allocator.h"
#include "core/ops.h"
#include "dist/reducer.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/progress.h"
#include "train/sharded_optimizer.h"

namespace vlmc::train {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// "The last checkpoint is <dir>/<name> (...)" or "No checkpoint was written yet.":
// every stop on a non-finite value names where to go back to.
std::string last_checkpoint_hint(const RunFiles& files) {
  const std::vector<std::string> saved = list_checkpoints(files.checkpoint_root);
  return saved.empty() ? std::string("No checkpoint was written yet.")
                       : "The last checkpoint is " + files.checkpoint_root + "/" + saved.back() +
                             " (continue from it with --resume, after lowering the learning rate).";
}

// Writes the checkpoint of `step`, unless a weight or moment is not finite: a
// finite gradient can still carry a weight past the f32 range (a huge learning
// rate), and such a state is never written.
void save(const StageSpec& spec, const RunFiles& files, std::map<std::string, Tensor> optimizer, int64_t step,
          int64_t skipped_steps, const nlohmann::json& data) {
  Checkpoint ckpt;
  ckpt.model = files.model_state();
  ckpt.optimizer = std::move(optimizer);
  std::map<std::string, Tensor> all = ckpt.model;
  for (const auto& [name, t] : ckpt.optimizer) all.emplace("optimizer." + name, t);
  const std::string bad = first_nonfinite(all);
  if (!bad.empty())
    throw Error(spec.name + " step " + std::to_string(step) + ": '" + bad +
                "' holds a NaN or an infinity after the update; no checkpoint was written. " +
                last_checkpoint_hint(files));
  // skipped_steps lets a resume check the optimizer's own step count against
  // `step` (train/resume.h): the optimizer updated step - skipped_steps times.
  ckpt.state = {{"stage", spec.name}, {"stage_index", spec.index}, {"step", step}, {"skipped_steps", skipped_steps},
                {"steps", spec.settings.steps}, {"config", files.config},
                {"world_size", files.group ? files.group->world_size() : 1}};
  if (!data.is_null()) ckpt.state["data"] = data;
  const std::string prefix = std::to_string(spec.index) + "-" + spec.name + "-";
  save_checkpoint(files.checkpoint_root, checkpoint_name(spec.index, spec.name, step), ckpt);
  prune_checkpoints(files.checkpoint_root, prefix, static_cast<size_t>(files.keep_checkpoints));
}

}  // namespace

std::string checkpoint_name(int stage_index, const std::string& stage, int64_t step) {
  char digits[32];
  std::snprintf(digits, sizeof(digits), "%06lld", static_cast<long long>(step));
  return std::to_string(stage_index) + "-" + stage + "-step" + digits;
}

StageSummary run_stage(const StageSpec& spec, const RunFiles& files, const std::optional<StageResume>& resume) {
  const StageSettings& s = spec.settings;
  optim::GroupingOptions grouping;
  grouping.lr = s.lr;
  grouping.weight_decay = s.weight_decay;
  if (spec.prefix_lr > 0) {
    grouping.lr_prefix = spec.lr_prefix;
    grouping.prefix_lr = spec.prefix_lr;
  }
  // One multi-tensor kernel per step over every parameter (optim/adamw.h),
  // or, with run.zero_stage 1 in a data-parallel job, over this process's
  // share of them (train/sharded_optimizer.h).
  dist::ProcessGroup* group = files.group;
  ShardedOptimizer opt(optim::make_param_groups(spec.params, grouping), group, files.zero_stage);
  std::vector<Tensor> params;
  for (const optim::NamedTensor& p : spec.params) params.push_back(p.tensor);
  const optim::CosineWithWarmup schedule =
      optim::CosineWithWarmup::from_ratio(s.steps, s.warmup_ratio, s.min_lr_ratio);

  const int64_t first = resume ? resume->step : 0;
  VLMC_CHECK(first >= 0 && first <= s.steps, spec.name, ": resume step ", first, " outside 0..", s.steps);
  if (resume) opt.load_state_dict(resume->optimizer);

  // A data-parallel job: every process runs this loop in lockstep on its
  // share of each batch; process 0 alone reports and writes.
  const int world = group ? group->world_size() : 1;
  const bool lead = !group || group->rank() == 0;
  auto step_name = [&](int64_t step, const char* what) {
    return spec.name + " step " + std::to_string(step + 1) + " " + what;
  };
  // Sums the gradients over the processes while the step's last backward
  // runs (dist/reducer.h); earlier micro-batches only accumulate locally.
  std::optional<dist::Reducer> reducer;
  if (world > 1) reducer.emplace(*group, params);

  StageSummary summary;
  std::vector<double> losses;
  int64_t tokens_run = 0;
  std::optional<ProgressBar> bar;
  if (lead) bar.emplace(spec.name, s.steps, first, stderr, std::nullopt, files.log_every_s);
  const Device device = params.empty() ? Device::cpu() : params.front().device();
  if (device.is_cuda()) {
    cuda::reset_peak_allocated(device.index);
  } else {
    // The stage's own peak sizes the host cache and is reported: what loading
    // or an earlier stage reached is forgotten (core/host_allocator.h).
    host::empty_cache();
    host::reset_peak_live();
  }
  const auto t0 = std::chrono::steady_clock::now();
  int64_t skipped_steps = 0;  // non-finite gradients skipped in this stage (run.skip_nonfinite)
  double validation = NAN;    // the last validation's answer accuracy
  const int64_t skipped_before = resume ? resume->skipped_steps : 0;  // ... before the resumed checkpoint
  for (int64_t step = first; step < s.steps; ++step) {
    const double lr_multiplier = schedule.multiplier(step);
    opt.set_lr_multiplier(lr_multiplier);
    const auto t_step = std::chrono::steady_clock::now();
    // K micro-batches, each loss scaled by 1/K: backward() adds into .grad,
    // so the update is that of the mean loss over the K micro-batches.
    const int64_t K = s.gradient_accumulation_steps;
    std::vector<double> micro_losses;  // this process's weighted part of each micro-batch's loss
    int64_t tokens = 0;
    for (int64_t k = 0; k < K; ++k) {
      // bf16 operands for the matrix work of this micro-batch's forward and
      // backward; the optimizer below runs on the f32 masters, outside it.
      AutocastGuard autocast(spec.bf16);
      StepLoss out = spec.step(step * K + k);
      Tensor loss = out.loss;
      if (world > 1) {
        // mean_r * n_r / N: the processes' parts sum to the mean over the global micro-batch.
        VLMC_CHECK(out.terms > 0, spec.name, ": a data-parallel step must say how many terms its loss averages");
        const double total = group->all_reduce_sum({static_cast<double>(out.terms)}, step_name(step, "loss terms"))[0];
        loss = mul(loss, static_cast<double>(out.terms) / total);
      }
      // The backward is queued before the loss is read, so that on a GPU the
      // one host wait of the micro-batch overlaps the backward's work.
      const Tensor scaled = K == 1 ? loss : div(loss, static_cast<double>(K));
      if (reducer && k == K - 1) {
        reducer->prepare(step_name(step, "gradients"));
        GradReadyGuard hook([&](const Tensor& leaf) { reducer->on_ready(leaf); });
        scaled.backward();
      } else {
        scaled.backward();
      }
      micro_losses.push_back(loss.item());
      tokens += out.tokens;
    }
    // Each process holds the gradient of its weighted part: their sum is the
    // global batch's gradient, the same on every process after this.
    if (reducer) reducer->finish();
    if (world > 1) {
      micro_losses = group->all_reduce_sum(micro_losses, step_name(step, "losses"));
      const std::vector<double> counts = group->all_reduce_sum({static_cast<double>(tokens)}, step_name(step, "tokens"));
      tokens = static_cast<int64_t>(counts[0]);
    }
    double loss = 0.0;
    for (const double micro : micro_losses) {
      if (!std::isfinite(micro)) {
        // Every process sees the same summed loss, so all of them stop here.
        if (files.metrics) files.metrics->write({{"stage", spec.name}, {"step", step + 1}, {"loss", micro}});
        throw Error(spec.name + " step " + std::to_string(step + 1) + ": the loss is " +
                    (std::isnan(micro) ? "NaN" : "infinite") + "; training stopped before updating the weights. " +
                    last_checkpoint_hint(files));
      }
      loss += micro / static_cast<double>(K);
    }
    // The global gradient norm, read before the update: a NaN or infinite
    // gradient (a finite loss does not rule one out) must never reach the
    // weights, the optimizer's moments or a checkpoint. On a GPU this read is
    // the step's second host wait, between the norm kernels and the update;
    // the clip coefficient stays on the device, and the optimizer's kernel
    // scales each gradient as it reads it. Without clipping the norm is still
    // taken (the coefficient is then unused).
    const optim::GradClip clip = optim::clip_coefficient(params, s.max_grad_norm > 0 ? s.max_grad_norm : 1.0);
    const double grad_norm = clip.total_norm.item();
    bool skipped = false;
    if (!std::isfinite(grad_norm)) {
      // Every process holds the same summed gradients, so all of them decide alike.
      const std::string what = spec.name + " step " + std::to_string(step + 1) + ": the gradient norm is " +
                               (std::isnan(grad_norm) ? "NaN" : "infinite") + " (the loss was " +
                               std::to_string(loss) + ")";
      if (skipped_steps >= files.skip_nonfinite) {
        if (files.metrics)
          files.metrics->write({{"stage", spec.name}, {"step", step + 1}, {"loss", loss}, {"grad_norm", grad_norm}});
        throw Error(what + "; training stopped before updating the weights. " + last_checkpoint_hint(files) +
                    (files.skip_nonfinite > 0
                         ? " " + std::to_string(skipped_steps) + " such step(s) were skipped already (run.skip_nonfinite " +
                               std::to_string(files.skip_nonfinite) + ")."
                         : " run.skip_nonfinite N (--skip-nonfinite N) skips up to N such steps instead."));
      }
      ++skipped_steps;
      skipped = true;
      if (lead)
        std::fprintf(stderr, "%s; step skipped: no update (%lld of run.skip_nonfinite %lld)\n", what.c_str(),
                     static_cast<long long>(skipped_steps), static_cast<long long>(files.skip_nonfinite));
    }
    if (!skipped) opt.step(s.max_grad_norm > 0 ? clip.coef : Tensor(), step_name(step, "parameters"));
    opt.zero_grad();

    const double step_s = seconds_since(t_step);
    tokens_run += tokens;
    losses.push_back(loss);
    const double lr = s.lr * lr_multiplier;
    nlohmann::json record = {{"stage", spec.name}, {"step", step + 1}, {"loss", loss}, {"lr", lr},
                             {"tokens", tokens}, {"step_s", step_s}};
    record["grad_norm"] = grad_norm;
    if (skipped) record["skipped"] = true;
    if (files.metrics) files.metrics->write(record);
    if (spec.validate &&
        ((spec.validate_every > 0 && (step + 1) % spec.validate_every == 0) || step + 1 == s.steps)) {
      const auto t_validation = std::chrono::steady_clock::now();
      const nlohmann::json v = spec.validate();
      validation = v.value("answer_accuracy", NAN);
      if (files.metrics) files.metrics->write({{"stage", spec.name}, {"step", step + 1}, {"validation", v}});
      summary.validation_seconds += seconds_since(t_validation);
    }
    const double elapsed = seconds_since(t0) - summary.validation_seconds;
    if (bar) bar->update(step + 1, {loss, lr, elapsed > 0 ? tokens_run / elapsed : NAN, validation});
    const bool checkpoint = (step + 1) % files.checkpoint_every == 0 || step + 1 == s.steps;
    // Sharded, gathering the optimizer state takes every process; whole, process 0 alone.
    const nlohmann::json data = checkpoint && files.data_state ? files.data_state() : nlohmann::json();
    if (checkpoint && (lead || opt.sharded())) {
      std::map<std::string, Tensor> state = opt.state_dict(step_name(step, "optimizer state"));
      if (lead) save(spec, files, std::move(state), step + 1, skipped_before + skipped_steps, data);
    }
  }
  if (bar) bar->finish();
  summary.seconds = seconds_since(t0) - summary.validation_seconds;
  summary.peak_device_bytes =
      static_cast<int64_t>(device.is_cuda() ? cuda::allocator_stats(device.index).peak_allocated_bytes
                                            : host::peak_live_bytes());
  summary.tokens_per_s = summary.seconds > 0 ? tokens_run / summary.seconds : 0.0;
  if (!losses.empty()) {
    const size_t tail = std::max<size_t>(1, losses.size() / 10);
    double sum = 0;
    for (size_t i = losses.size() - tail; i < losses.size(); ++i) sum += losses[i];
    summary.final_loss = sum / static_cast<double>(tail);
  }
  return summary;
}

}  // namespace vlmc::train
