// The fashion-mosaic training run: LLaVA's recipe on 2x2 Fashion-MNIST mosaics.
//
//   stage 0  (cached per stage-0 settings under run.cache_dir)
//     vision:   the CLIP-architecture encoder learns the four quadrants' classes
//               (a linear head on the quadrant-pooled features the connector reads)
//     language: the LLaMA-architecture model learns captions and answers from
//               text placed where the image will stand (batches.h: slot_word_ids),
//               so it reads its context, and later what the connector writes there
//   both are then frozen; their features are computed once per mosaic
//   stage 1  connector only, on captions (LLaVA's feature alignment)
//   stage 2  connector + language model, on questions (LLaVA's instruction tuning)
//   validation  during stages 1 and 2, every eval.every steps, on mosaics of
//            the train split's held-out items (the curves, recipe choices)
//   eval     once, at the end: exact-match answers on held-out test-split
//            mosaics, per question kind, beside the frozen encoder's own
//            per-quadrant accuracy and the baselines
//
// Outputs under runs/<name>/: config.toml, metrics.jsonl, loss.png,
// checkpoints/, results.json. See docs/training.md.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "dist/process_group.h"
#include "train/evaluate.h"
#include "train/mosaic_models.h"
#include "train/train_config.h"

namespace vlmc::train {

struct TrainOptions {
  bool resume = false;       // continue runs/<name> from its newest usable checkpoint (train/resume.h)
  std::string resume_from;   // with resume: this checkpoint directory, no fallback
  std::string config_toml;   // the effective settings, written to runs/<name>/config.toml
  nlohmann::json config_json;
  // The processes of a data-parallel job (dist/process_group.h), made once per
  // process by the command line; nullptr: this process alone. Each stage's
  // batch_size is the global batch, split evenly over the processes.
  dist::ProcessGroup* group = nullptr;
};

struct StageTiming {
  double seconds = 0.0;       // wall time of the steps run by this process
  double tokens_per_s = 0.0;  // language-model tokens (text + visual) per second
  double final_loss = 0.0;    // mean loss over the last 10 % of the steps
  int64_t peak_device_bytes = 0;  // tensor memory's high-water mark during the stage (StageSummary)
};

// What the validation curve of one stage came to (metrics.jsonl's records).
struct ValidationSummary {
  int64_t points = 0;             // validations run
  int64_t last_step = 0;
  double last = 0.0, best = 0.0;  // answer accuracy (0..1) at the stage's end, and its highest
  int64_t best_step = 0;
  double last_caption = 0.0;      // whole-caption accuracy at the stage's end
};

struct TrainResult {
  EvalReport eval;                                     // the test split, once at the end
  std::map<std::string, ValidationSummary> validation;  // "stage1", "stage2"
  std::map<std::string, StageTiming> stages;  // the stages this process ran
  int64_t connector_parameters = 0;
  int64_t visual_tokens = 0;                  // per image, what the connector writes
};

// "validation (N held-out train mosaics): stage1 ... stage2 ...", and the
// captions forgotten from the end of stage 1 to the end of stage 2.
void print_validation(const std::map<std::string, ValidationSummary>& validation, std::FILE* out);

// Runs stage 0 (or loads it from the cache), stages 1 and 2, and the evaluation.
TrainResult run_training(const TrainConfig& config, const TrainOptions& options);

}  // namespace vlmc::train
