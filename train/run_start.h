// What every training run does before its first step, whatever it trains
// (train/trainer.h's fashion-mosaic run, train/llava_trainer.h's LLaVA run):
//
//   runs/<name>/.lock        taken by process 0 for the life of the run, before
//                            the checkpoints are looked at (two runs of one name: the second is refused)
//   checkpoints/             none without --resume; with it, the newest usable one (train/resume.h)
//   config.toml              the effective settings
//   metrics.jsonl            cut back to the resume point (records after it are made again), or
//                            started afresh; process 0 alone writes it
#pragma once

#include <map>
#include <optional>
#include <string>

#include "train/metrics_log.h"
#include "train/resume.h"
#include "train/run_lock.h"
#include "train/trainer.h"

namespace vlmc::train {

struct RunStart {
  std::string run_dir;          // runs/<name>
  std::string checkpoint_root;  // runs/<name>/checkpoints
  std::string metrics_path;     // runs/<name>/metrics.jsonl
  std::optional<RunLock> lock;  // process 0
  std::optional<ResumePoint> resume;  // with --resume and a checkpoint to continue from
  std::optional<MetricsLog> metrics;  // process 0
};

// Fills `start` (a RunLock cannot move, so the caller owns the struct).
// `stage_indices` maps a stage's metrics name ("stage1") to its place in the
// run, as the checkpoints' names carry it. Settings that differ from the
// resumed checkpoint's are named on stderr (the run is then not the
// uninterrupted one). Throws vlmc::Error when the run has checkpoints and
// --resume was not given, or when none of them is usable.
void start_run(const std::string& runs_dir, const std::string& name, const TrainOptions& options,
               const std::map<std::string, int>& stage_indices, RunStart& start);

}  // namespace vlmc::train
