#include "train/run_start.h"

#include <cstdio>
#include <filesystem>

#include "core/autocast.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "train/checkpoint.h"

namespace vlmc::train {
namespace fs = std::filesystem;

void start_run(const std::string& runs_dir, const std::string& name, const TrainOptions& options,
               const std::map<std::string, int>& stage_indices, RunStart& start) {
  dist::ProcessGroup* group = options.group;
  const int world = group ? group->world_size() : 1;
  const bool lead = !group || group->rank() == 0;
  start.run_dir = (fs::path(runs_dir) / name).string();
  start.checkpoint_root = (fs::path(start.run_dir) / "checkpoints").string();
  start.metrics_path = (fs::path(start.run_dir) / "metrics.jsonl").string();
  if (lead) {
    fs::create_directories(start.run_dir);
    start.lock.emplace((fs::path(start.run_dir) / ".lock").string(), "run '" + name + "' (" + start.run_dir + ")");
  }
  const std::vector<std::string> existing = list_checkpoints(start.checkpoint_root);
  VLMC_CHECK(options.resume || existing.empty(), "run '", name, "' already has checkpoints in ",
             start.checkpoint_root, ": pass --resume to continue it, or choose another run.name");
  if (lead) io::write_file_atomically((fs::path(start.run_dir) / "config.toml").string(), options.config_toml, "train");
  if (lead && options.config_json.value("run.precision", "") == "bf16" &&
      options.config_json.value("run.device", "cpu") == "cpu" && !cpu_bf16_products_native())
    std::fprintf(stderr,
                 "note: this CPU has no bf16 kernel vlmc uses (AMX, or AVX512-BF16 on an AMD CPU): run.precision bf16 "
                 "rounds as bf16 does but multiplies the rounded values as f32, so it is no faster than f32 here and "
                 "its saved copies are no smaller (docs/perf.md)\n");

  if (options.resume && existing.empty() && options.resume_from.empty() && lead)
    std::fprintf(stderr, "--resume: no checkpoint in %s, starting the run from the beginning\n",
                 start.checkpoint_root.c_str());
  if (options.resume && (!existing.empty() || !options.resume_from.empty())) {
    start.resume = choose_resume_checkpoint(start.checkpoint_root, existing, options.resume_from, stage_indices, world,
                                            [lead](const std::string& line) {
                                              if (lead) std::fprintf(stderr, "%s\n", line.c_str());
                                            });
    if (lead) std::fprintf(stderr, "resuming from %s\n", start.resume->dir.c_str());
    // Settings may change on resume (more steps, another log interval), but
    // then the run is no longer the uninterrupted one: say which.
    const nlohmann::json before = start.resume->checkpoint.state.value("config", nlohmann::json::object());
    for (auto& [key, value] : options.config_json.items())
      if (lead && before.contains(key) && before[key] != value)
        std::fprintf(stderr, "  note: %s is %s now, %s when the checkpoint was written\n", key.c_str(),
                     value.dump().c_str(), before[key].dump().c_str());
  }
  if (!lead) return;  // only process 0 writes the metrics
  if (start.resume) {
    const int stage_index = start.resume->stage_index;
    const int64_t step = start.resume->step;
    MetricsLog::truncate_for_resume(start.metrics_path, [&](const nlohmann::json& r) {
      const auto it = stage_indices.find(r.value("stage", ""));
      if (it == stage_indices.end()) return false;  // evaluation records are made again
      return it->second < stage_index || (it->second == stage_index && r.value("step", int64_t{0}) <= step);
    });
  } else {
    fs::remove(start.metrics_path);
  }
  start.metrics.emplace(start.metrics_path);
}

}  // namespace vlmc::train
