// libFuzzer target for a checkpoint's state.json (train/checkpoint.cpp,
// train/resume.cpp): what `vlmc train --resume`, `vlmc eval` and
// `vlmc export` read back from a checkpoint directory. The tensor files are
// fixed (a tiny stage-2 checkpoint written at start); the input is the
// state.json beside them, used twice:
//   - as it is, so the JSON and checksum checks see every byte;
//   - when it is a JSON object, with the files' true checksums put in, so the
//     fields behind the checksum check (rank, stage, step, the optimizer's
//     counters, the loader's place, the saved config) are reached too.
// Every input must load and pass the resume checks, or throw vlmc::Error; any
// other exception, crash or sanitizer report is a bug.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "tests/fuzz/fuzz_files.h"
#include "train/checkpoint.h"
#include "train/config_schema.h"
#include "train/resume.h"
#include "train/train_config.h"

namespace {

using namespace vlmc;
using namespace vlmc::train;

const std::map<std::string, int> kRanks = {{"stage0-vision", 0}, {"stage0-language", 1}, {"stage1", 2}, {"stage2", 3}};
constexpr const char* kName = "3-stage2-step000005";

struct Fixture {
  std::string dir;                  // the checkpoint directory
  nlohmann::json checksums;         // what save_checkpoint recorded for its tensor files
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Checkpoint c;
    c.model["connector.0.weight"] = Tensor::ones({2, 2});
    c.optimizer["state.0.step"] = Tensor::scalar(5.0, DType::i64);
    c.optimizer["state.0.exp_avg"] = Tensor::zeros({2, 2});
    c.state = {{"stage", "stage2"}, {"stage_index", 3}, {"step", 5}, {"steps", 10}, {"skipped_steps", 0}};
    const std::string root = fuzz::scratch_dir() + "/checkpoints";
    save_checkpoint(root, kName, c);
    Fixture out{root + "/" + kName, {}};
    out.checksums =
        nlohmann::json::parse(fuzz::read_whole_file(out.dir + "/" + kCheckpointStateFile)).at("checksums");
    return out;
  }();
  return f;
}

// Everything a resume, an evaluation or an export reads from state.json.
void use_state(const std::string& state_text) {
  const Fixture& f = fixture();
  fuzz::write_scratch(std::string("checkpoints/") + kName + "/" + kCheckpointStateFile, state_text);
  try {
    ResumePoint point = check_resume_checkpoint(f.dir, load_checkpoint(f.dir), kRanks, /*world=*/1);
    if (point.rank != 3 || point.step < 1) std::abort();  // what the checks promise for this directory's name
    const nlohmann::json& state = point.checkpoint.state;
    try {
      loader_state_from(state, f.dir, 0, 1);
    } catch (const Error&) {
    }
    if (state.contains("config")) {
      TrainConfig config;
      ConfigSchema schema;
      register_train_config(schema, config);
      schema.load_json(state["config"], f.dir + "/state.json");
      config.validate();
    }
  } catch (const Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  use_state(text);
  nlohmann::json state = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!state.is_discarded() && state.is_object()) {
    state["checksums"] = fixture().checksums;
    use_state(state.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  return 0;
}
