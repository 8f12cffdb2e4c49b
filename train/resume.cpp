#include "train/resume.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"

namespace vlmc::train {

namespace fs = std::filesystem;

namespace {

// object[key] as an integer; `name` is how errors call it. Integers only: a
// float (1e300) would not convert to int64_t.
int64_t integer_field(const nlohmann::json& object, const char* key, const std::string& name) {
  const auto it = object.find(key);
  VLMC_CHECK(it != object.end() && it->is_number_integer(), name, " is missing or not an integer");
  return it->get<int64_t>();
}

int64_t state_integer(const nlohmann::json& state, const char* key, const std::string& dir) {
  return integer_field(state, key, str(dir, "/state.json: \"", key, "\""));
}

// The most updates any parameter has had: AdamW's "state.<k>.step" counters
// (-1 when the optimizer file holds none). A counter that is not a whole
// number in [0, 2^53] is refused, naming the tensor.
int64_t optimizer_updates(const std::map<std::string, Tensor>& optimizer, const std::string& dir) {
  int64_t most = -1;
  for (const auto& [name, t] : optimizer) {
    if (!name.ends_with(".step")) continue;
    if (t.numel() != 1) continue;
    const double steps = t.item();
    VLMC_CHECK(steps >= 0 && steps <= 9007199254740992.0 && steps == std::floor(steps), dir, ": ",
               kCheckpointOptimizerFile, " tensor '", name, "' is ", steps, ", not a step count");
    most = std::max(most, static_cast<int64_t>(steps));
  }
  return most;
}

}  // namespace

ResumePoint check_resume_checkpoint(const std::string& dir, Checkpoint ckpt,
                                    const std::map<std::string, int>& stage_indices, int world) {
  const std::string bad = nonfinite_in(ckpt);
  VLMC_CHECK(bad.empty(), dir, ": ", bad, " holds a NaN or an infinity");
  // Absent in checkpoints of single-process runs written before it existed.
  const int64_t saved_world = ckpt.state.contains("world_size") ? state_integer(ckpt.state, "world_size", dir) : 1;
  VLMC_CHECK(saved_world == world, dir, " was written by a job of ", saved_world, " process",
             saved_world == 1 ? "" : "es", "; resume it with the same number (this job has ", world, ")");
  ResumePoint p;
  p.dir = dir;
  const nlohmann::json& state = ckpt.state;
  // "rank" in checkpoints written before it was named "stage_index".
  const char* index_key = state.contains("stage_index") || !state.contains("rank") ? "stage_index" : "rank";
  const int64_t index = state_integer(state, index_key, dir);
  VLMC_CHECK(index >= 0 && index <= 1000, dir, "/state.json: \"", index_key, "\" is ", index,
             ", not a stage's place in a run");
  p.stage_index = static_cast<int>(index);
  p.step = state_integer(state, "step", dir);
  const auto stage_it = state.find("stage");
  VLMC_CHECK(stage_it != state.end() && stage_it->is_string(), dir, "/state.json: \"stage\" is missing or not a string");
  const std::string stage = stage_it->get<std::string>();
  const auto index_it = stage_indices.find(stage);
  VLMC_CHECK(index_it != stage_indices.end(), dir, "/state.json: \"stage\" is \"", stage, "\", not a stage of this run");
  VLMC_CHECK(index_it->second == p.stage_index, dir, "/state.json: \"", index_key, "\" is ", p.stage_index,
             " but stage \"", stage, "\" is stage ", index_it->second, " of the run");
  // The directory's name was written by the same save as state.json.
  char expected[96];
  std::snprintf(expected, sizeof expected, "%d-%s-step%06lld", p.stage_index, stage.c_str(), static_cast<long long>(p.step));
  const std::string name = fs::path(dir).filename().string();
  VLMC_CHECK(name == expected, dir, "/state.json says stage index ", p.stage_index, ", stage \"", stage, "\", step ", p.step,
             ", which would be checkpoint ", expected, ", not ", name);
  if (state.contains("steps")) {
    const int64_t steps = state_integer(state, "steps", dir);
    VLMC_CHECK(p.step >= 1 && p.step <= steps, dir, "/state.json: \"step\" ", p.step, " is outside 1..", steps);
  }
  // The optimizer counts its own updates: no parameter can have had more than
  // `step`, and (where the checkpoint records its skipped steps) the most
  // updated one had exactly step - skipped_steps.
  const int64_t updates = optimizer_updates(ckpt.optimizer, dir);
  if (updates >= 0) {
    VLMC_CHECK(updates <= p.step, dir, ": the optimizer state has taken ", updates, " steps but state.json says step ",
               p.step);
    if (state.contains("skipped_steps")) {
      p.skipped_steps = state_integer(state, "skipped_steps", dir);
      VLMC_CHECK(p.skipped_steps >= 0 && updates == p.step - p.skipped_steps, dir,
                 ": the optimizer state has taken ", updates, " steps, but state.json says step ", p.step, " with ",
                 p.skipped_steps, " skipped (", p.step - p.skipped_steps, " updates)");
    }
  }
  p.checkpoint = std::move(ckpt);
  return p;
}

ResumePoint choose_resume_checkpoint(const std::string& root, const std::vector<std::string>& names,
                                     const std::string& explicit_dir, const std::map<std::string, int>& stage_indices,
                                     int world, const std::function<void(const std::string&)>& warn) {
  if (!explicit_dir.empty()) {
    VLMC_CHECK(is_checkpoint(explicit_dir), "--resume ", explicit_dir, ": not a complete checkpoint (",
               kCheckpointModelFile, ", ", kCheckpointOptimizerFile, ", ", kCheckpointStateFile, ")");
    return check_resume_checkpoint(explicit_dir, load_checkpoint(explicit_dir), stage_indices, world);
  }
  std::string refused;
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    const std::string dir = (fs::path(root) / *it).string();
    try {
      return check_resume_checkpoint(dir, load_checkpoint(dir), stage_indices, world);
    } catch (const Error& e) {
      warn(str("--resume: passing over ", dir, ": ", e.what()));
      refused += str("\n  ", e.what());
    }
  }
  throw Error(str("--resume: no usable checkpoint in ", root, ":", refused));
}

data::LoaderState loader_state_from(const nlohmann::json& state, const std::string& dir, int proc, int world) {
  const auto data = state.find("data");
  VLMC_CHECK(data != state.end() && data->is_object() && data->contains("loaders") && (*data)["loaders"].is_array(),
             "--resume: ", dir, "/state.json has no \"data\": {\"loaders\": [...]} (the loader's place); it was not "
             "written by a data.format = \"llava\" run");
  const nlohmann::json& loaders = (*data)["loaders"];
  VLMC_CHECK(loaders.size() == static_cast<size_t>(world), "--resume: ", dir, "/state.json holds the places of ",
             loaders.size(), " processes; this job has ", world);
  const nlohmann::json& l = loaders[static_cast<size_t>(proc)];
  const std::string where = str("--resume: ", dir, "/state.json: data.loaders[", proc, "]");
  VLMC_CHECK(l.is_object(), where, " is not an object");
  const auto field = [&](const char* key) { return integer_field(l, key, str(where, ".", key)); };
  data::LoaderState s;
  s.step = field("step");
  s.epoch = field("epoch");
  s.cursor = field("cursor");
  s.skipped = field("skipped");
  return s;
}

}  // namespace vlmc::train
