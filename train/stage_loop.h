// One optimisation stage of the trainer, whatever it trains: AdamW (fused;
// sharded over the processes with ZeRO-1) over named parameters, warmup +
// cosine, optional clipping, a progress bar, one metrics.jsonl record per step, atomic checkpoints every N steps and at the
// end, and a hard stop before the update on a non-finite loss or gradient norm
// (or, run.skip_nonfinite, a skipped step), and before any checkpoint of a
// non-finite weight or moment: every checkpoint stays usable.
//
// Resuming: the step function must be a pure function of the step (the batch
// it reads, any randomness), so restoring the parameters and the optimizer
// state of step k and running steps k+1.. reproduces the uninterrupted run.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "dist/process_group.h"
#include "optim/adamw.h"
#include "train/metrics_log.h"
#include "train/train_config.h"

namespace vlmc::train {

// What one step's forward returns: the loss (with its graph) and the tokens
// (or images) it processed, for the throughput figure.
struct StepLoss {
  Tensor loss;
  int64_t tokens = 0;
  // How many terms `loss` is the mean of (target tokens, classified
  // quadrants). With several processes each one's loss is weighted by its
  // share of the global count, so that the summed gradients are those of the
  // mean over the whole global batch; may stay 0 in a single process.
  int64_t terms = 0;
};

// Where a run keeps its files, and how to snapshot the whole model.
struct RunFiles {
  std::string run_dir;          // runs/<name>
  std::string checkpoint_root;  // runs/<name>/checkpoints
  MetricsLog* metrics = nullptr;  // null on every process but the first of a data-parallel job
  // The job's processes (nullptr: this one alone). Each step's gradients are
  // summed over them; only process 0 draws progress, writes metrics and checkpoints.
  dist::ProcessGroup* group = nullptr;
  int zero_stage = 0;  // 1: the optimizer state sharded over the processes (train/sharded_optimizer.h)
  std::function<std::map<std::string, Tensor>()> model_state;
  // Where the data stream is, written into every checkpoint's state.json as
  // "data" (the LLaVA loader's place per process); called on every process at
  // each checkpoint (it may gather over them). Empty: none written.
  std::function<nlohmann::json()> data_state;
  nlohmann::json config;        // written into every checkpoint's state.json
  int64_t checkpoint_every = 100;
  int64_t keep_checkpoints = 2;
  double log_every_s = 10.0;
  // Steps with a non-finite gradient norm skipped (gradients dropped, no
  // update) before the stage stops, per stage and process start.
  int64_t skip_nonfinite = 0;
};

struct StageSpec {
  std::string name;  // "stage1"; also the metrics "stage" field
  int index = 0;     // order of the stage in the run (checkpoint names sort by it)
  StageSettings settings;
  std::vector<optim::NamedTensor> params;  // what this stage trains
  bool bf16 = false;                       // forward and backward under AutocastGuard (run.precision bf16)
  std::string lr_prefix;                   // parameters named so get prefix_lr (when > 0)
  double prefix_lr = 0.0;
  // The loss of micro-batch m (m = step * gradient_accumulation_steps + k);
  // a pure function of m. In a data-parallel job, of this process's share of
  // the micro-batch.
  std::function<StepLoss(int64_t micro_step)> step;
  // Validation, when set: run every `validate_every` optimizer steps (0:
  // never in between) and after the stage's last step, on every process; its
  // result (with "answer_accuracy") is written to metrics.jsonl as
  // {"stage", "step", "validation": ...}. Its time is left out of the stage's
  // time and throughput. It must leave the model as it found it.
  std::function<nlohmann::json()> validate;
  int64_t validate_every = 0;
};

// Where a checkpoint left a stage: the optimizer state and the steps done.
struct StageResume {
  int64_t step = 0;
  std::map<std::string, Tensor> optimizer;
  // Steps of this stage skipped before the checkpoint (non-finite gradients,
  // run.skip_nonfinite): the optimizer took step - skipped_steps updates.
  int64_t skipped_steps = 0;
};

struct StageSummary {
  double final_loss = 0.0;     // mean loss of the last 10 % of steps
  double seconds = 0.0;        // wall time of the steps run in this process (validation excluded)
  double validation_seconds = 0.0;
  double tokens_per_s = 0.0;
  // The high-water mark of tensor memory during the stage: CUDA's caching
  // allocator's, or on the CPU the host allocator's live bytes (its cache of
  // free blocks and malloc's own overhead excluded; core/host_allocator.h).
  int64_t peak_device_bytes = 0;
};

// "<index>-<name>-step<NNNNNN>": sorting names sorts by (stage index, step).
std::string checkpoint_name(int stage_index, const std::string& stage, int64_t step);

// Runs steps resume.step .. settings.steps-1 (all when resume is empty).
StageSummary run_stage(const StageSpec& spec, const RunFiles& files,
                       const std::optional<StageResume>& resume = std::nullopt);

}  // namespace vlmc::train
