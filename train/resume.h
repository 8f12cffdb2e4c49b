// Choosing and checking the checkpoint a `vlmc train --resume` continues from.
//
// A checkpoint's files are checked against their CRC-32s and for non-finite
// values by the loaders (train/checkpoint.h); here its state.json is also
// cross-checked against what else records the same facts: its directory name
// ("<stage index>-<stage>-step<step>", written by the same save), the stage order
// (stage index <-> stage), the stage's step count, and the optimizer's own step
// counters (the optimizer updated step - skipped_steps times). A hand-edited
// or inconsistent state.json is refused, naming the field.
//
// Without a path, the newest complete checkpoint is used; when it is unusable
// (corrupt, non-finite, inconsistent), the one before it is tried, and so on,
// each refusal said on stderr. With a path, that checkpoint alone.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "data/llava_loader.h"
#include "train/checkpoint.h"

namespace vlmc::train {

struct ResumePoint {
  std::string dir;  // the checkpoint used
  Checkpoint checkpoint;
  int stage_index = 0;  // the stage's place in the run (0 = stage0-vision ... 3 = stage2)
  int64_t step = 0;
  int64_t skipped_steps = 0;
};

// Throws vlmc::Error naming `dir` and what is inconsistent. `stage_indices`:
// stage name -> stage index; `world`: this job's process count (a job of another
// count would read other samples).
ResumePoint check_resume_checkpoint(const std::string& dir, Checkpoint ckpt,
                                    const std::map<std::string, int>& stage_indices, int world);

// The checkpoint to resume from: `explicit_dir` when given (no fallback), else
// the newest usable of `names` (list_checkpoints order) under `root`. `warn`
// receives one line per checkpoint passed over. Throws when none is usable,
// listing why each was refused.
ResumePoint choose_resume_checkpoint(const std::string& root, const std::vector<std::string>& names,
                                     const std::string& explicit_dir, const std::map<std::string, int>& stage_indices,
                                     int world, const std::function<void(const std::string&)>& warn);

// This process's place in a data.format = "llava" run's data, from the
// checkpoint's state.json ("data": {"loaders": [{step, epoch, cursor,
// skipped}, ...]}, one per process). Throws vlmc::Error naming `dir` when
// the field is missing, has another process count, or is malformed.
data::LoaderState loader_state_from(const nlohmann::json& state, const std::string& dir, int proc, int world);

}  // namespace vlmc::train
