// Training checkpoints: one directory per checkpoint, written atomically as a
// whole.
//
//   <root>/<name>/model.safetensors      tensors by state_dict name
//   <root>/<name>/optimizer.safetensors  optimizer state tensors (may be none)
//   <root>/<name>/state.json             step, config, RNG, data position, ...
//
// A checkpoint is three files that must agree, so renaming each file into
// place is not enough: a crash between them would pair a new model with an
// old optimizer. Instead everything is written into <root>/.<name>.tmp-<pid>,
// fsynced, and the directory is renamed to <root>/<name>. An existing
// checkpoint of that name is swapped out with renameat2(RENAME_EXCHANGE), so
// <root>/<name> is always a complete checkpoint; where the filesystem cannot
// exchange, the old one is first renamed to .<name>.old-<pid> and restored by
// the next save if a crash left no <root>/<name>.
//
// Names starting with '.' are never checkpoints: readers ignore the tmp/old/del
// directories of a crashed writer and the next save removes them (those of a
// writer whose pid is still alive are left alone: it may be mid-save).
#pragma once

#include <cstddef>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vlmc::train {

struct Checkpoint {
  std::map<std::string, Tensor> model;
  std::map<std::string, Tensor> optimizer;
  nlohmann::json state;
};

inline constexpr const char* kCheckpointModelFile = "model.safetensors";
inline constexpr const char* kCheckpointOptimizerFile = "optimizer.safetensors";
inline constexpr const char* kCheckpointStateFile = "state.json";

// Writes <root>/<name> atomically (creating root), replacing any checkpoint of
// that name. `name` must be a plain directory name not starting with '.'.
// Not safe to call concurrently on one root from one process.
void save_checkpoint(const std::string& root, const std::string& name, const Checkpoint& ckpt);

// Loads a checkpoint directory; tensors come back on the CPU. Throws
// vlmc::Error naming the directory and the missing or corrupt file; the tensor
// files are checked against the CRC-32s state.json recorded at save time
// (checkpoints written before checksums existed have none).
Checkpoint load_checkpoint(const std::string& dir);

// The name of the first floating tensor holding a NaN or an infinity, or ""
// when all are finite (one reduction a tensor, one host read in all).
std::string first_nonfinite(const std::map<std::string, Tensor>& tensors);
// The same over a checkpoint: "model.safetensors tensor 'proj.weight'", or "".
// The trainer never writes such a checkpoint; whoever resumes from or
// evaluates one refuses it (load_checkpoint itself returns the bytes as they are).
std::string nonfinite_in(const Checkpoint& ckpt);

// True when `dir` holds all three files.
bool is_checkpoint(const std::string& dir);

// Names of the complete checkpoints directly under `root`, sorted by name
// (the trainer's "stage1-step000400" names make that (stage, step) order);
// tmp/old directories and incomplete ones are left out. Empty if root is absent.
std::vector<std::string> list_checkpoints(const std::string& root);

// Removes all but the last `keep_last` (in list_checkpoints order) of the
// checkpoints whose names start with `prefix`. Each is renamed to a hidden
// .<name>.del-<pid> before deletion, so a crash mid-delete leaves only a
// hidden directory, which the next save removes.
void prune_checkpoints(const std::string& root, const std::string& prefix, size_t keep_last);

}  // namespace vlmc::train
