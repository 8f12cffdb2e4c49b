// End-to-end tests of `vlmc train`, `vlmc eval` and `vlmc experiment
// connectors` at toy sizes: the printed accuracy lines, the run's files, the
// refusal to overwrite a run, --resume, and config errors that name the key.
// Needs Debian's dataset-fashion-mnist.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/autocast.h"
#include "tests/cli/cli_runner.h"
#include "tests/support/temp_dir.h"
#include "train/checkpoint.h"
#include "train/idx.h"
#include "train/run_lock.h"

using namespace vlmc::cli_test;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {

// Every stage at 3 steps of a 1-layer, 16-wide encoder and language model.
const char* kToyConfig = R"(
[run]
name = "toy"
log_every_s = 1e9
checkpoint_every = 2
[data]
train_mosaics = 32
questions_per_image = 2
[vision]
hidden_size = 16
intermediate_size = 32
num_attention_heads = 2
num_hidden_layers = 1
[language]
hidden_size = 16
intermediate_size = 32
num_attention_heads = 2
num_key_value_heads = 1
num_hidden_layers = 1
[stage0.vision]
steps = 3
batch_size = 4
[stage0.language]
steps = 3
batch_size = 4
extra_questions_per_image = 1
[stage1]
steps = 3
batch_size = 4
[stage2]
steps = 3
batch_size = 4
[eval]
mosaics = 8
questions_per_image = 2
)";

std::vector<std::string> toy_args(const fs::path& dir) {
  return {"--config", (dir / "toy.toml").string(), "--run.runs_dir", (dir / "runs").string(), "--run.cache_dir",
          (dir / "cache").string()};
}

std::vector<std::string> cat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("cli: vlmc train runs every stage, prints both accuracies, and eval reads a checkpoint", "[cli][trainer]") {
  TempDir scratch("cli_train");
  std::ofstream(scratch.path / "toy.toml") << kToyConfig;
  const Result r = run_cli(cat({"--threads", "1", "train"}, toy_args(scratch.path)), scratch.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("answer accuracy: ") && Catch::Contains("encoder accuracy: ") &&
                        Catch::Contains("evaluation on 8 held-out test mosaics (16 questions)") &&
                        Catch::Contains("validation stage2: answers ") &&
                        Catch::Contains("captions forgotten in stage 2: "));
  for (const char* stage : {"stage0-vision", "stage0-language", "stage1", "stage2"}) CHECK_THAT(r.err, Catch::Contains(stage));
  const fs::path run = scratch.path / "runs" / "toy";
  for (const char* f : {"config.toml", "metrics.jsonl", "loss.png", "results.json"}) {
    INFO(f);
    CHECK(fs::is_regular_file(run / f));
  }
  CHECK_THAT(read_text(run / "config.toml"), Catch::Contains("hidden_size = 16"));

  const std::string last = (run / "checkpoints" / "3-stage2-step000003").string();
  REQUIRE(vlmc::train::is_checkpoint(last));
  const Result e = run_cli({"eval", "--checkpoint", last, "--eval.mosaics", "4"}, scratch.path);
  INFO(e.err);
  REQUIRE(e.status == 0);
  CHECK_THAT(e.out, Catch::Contains("evaluation on 4 held-out test mosaics") && Catch::Contains("answer accuracy: "));
  const Result v = run_cli({"eval", "--checkpoint", last, "--split", "validation", "--eval.validation_mosaics", "6"},
                           scratch.path);
  INFO(v.err);
  REQUIRE(v.status == 0);
  CHECK_THAT(v.out, Catch::Contains("evaluation on 6 held-out validation mosaics (12 questions)"));

  // The same run again: refused without --resume, nothing lost; with it, the
  // finished run loads its last checkpoint and only evaluates again.
  const Result again = run_cli(cat({"train"}, toy_args(scratch.path)), scratch.path);
  CHECK(again.status == 1);
  CHECK_THAT(again.err, Catch::Contains("already has checkpoints") && Catch::Contains("--resume"));
  CHECK(vlmc::train::is_checkpoint(last));
  const Result resumed = run_cli(cat({"--threads", "1", "train", "--resume"}, toy_args(scratch.path)), scratch.path);
  INFO(resumed.err);
  CHECK(resumed.status == 0);
  CHECK_THAT(resumed.err, Catch::Contains("resuming from"));
  CHECK(resumed.out == r.out);  // the same final weights, the same evaluation

  // A hand-edited state.json: --resume passes over that checkpoint, saying why
  // (the checkpoint and the field, not a JSON library exception), and resumes
  // from the one before; named with --resume PATH, it is an error.
  const std::string state_path = last + "/state.json";
  std::string state = read_text(state_path);
  const size_t at = state.find("\"stage_index\"");
  REQUIRE(at != std::string::npos);
  state.replace(at, 13, "\"stage_indx\"");
  std::ofstream(state_path, std::ios::trunc) << state;
  const std::string why = last + "/state.json: \"stage_index\" is missing or not an integer";
  const Result fallback = run_cli(cat({"train", "--resume"}, toy_args(scratch.path)), scratch.path);
  INFO(fallback.err);
  CHECK(fallback.status == 0);
  CHECK_THAT(fallback.err, Catch::Contains("--resume: passing over " + last) && Catch::Contains(why) &&
                               Catch::Contains("resuming from " + (fs::path(last).parent_path() /
                                                                  "3-stage2-step000002").string()));
  // The resumed run wrote a new, consistent 3-stage2-step000003: edit it again.
  state = read_text(state_path);
  REQUIRE(state.find("\"stage_index\"") != std::string::npos);
  state.replace(state.find("\"stage_index\""), 13, "\"stage_indx\"");
  std::ofstream(state_path, std::ios::trunc) << state;
  const Result edited = run_cli(cat({"train", "--resume", last}, toy_args(scratch.path)), scratch.path);
  CHECK(edited.status == 1);
  CHECK_THAT(edited.err, Catch::Contains(why));
}

TEST_CASE("cli: vlmc train rejects a misspelled key and a bad value before doing anything", "[cli][trainer]") {
  TempDir scratch("cli_train_errors");
  std::ofstream(scratch.path / "bad.toml") << "[stage1]\nlrr = 1e-3\n";
  Result r = run_cli({"train", "--config", (scratch.path / "bad.toml").string(), "--run.runs_dir",
                      (scratch.path / "runs").string()},
                     scratch.path);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("bad.toml:2") && Catch::Contains("unknown key 'stage1.lrr'") &&
                        Catch::Contains("did you mean 'stage1.lr'"));
  r = run_cli({"train", "--stage1.steps", "0", "--run.runs_dir", (scratch.path / "runs").string()}, scratch.path);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("stage1.steps must be >= 1"));
  r = run_cli({"train", "--connector.type", "mlp3x", "--run.runs_dir", (scratch.path / "runs").string()}, scratch.path);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("connector.type 'mlp3x'"));
  CHECK_FALSE(fs::exists(scratch.path / "runs"));  // nothing was written
}

TEST_CASE("cli: vlmc train --run.precision bf16 says so where this CPU has no bf16 kernel", "[cli][trainer]") {
  TempDir scratch("cli_train_bf16_note");
  std::ofstream(scratch.path / "toy.toml") << kToyConfig;
  const std::string note = "run.precision bf16 rounds as bf16 does but multiplies the rounded values as f32";
  for (const std::string precision : {"f32", "bf16"}) {
    const Result r = run_cli(cat({"--threads", "1", "train"}, cat(toy_args(scratch.path),
                                                                 {"--run.name", "toy-" + precision, "--run.precision",
                                                                  precision, "--eval.mosaics", "2"})),
                             scratch.path);
    INFO(precision << ": " << r.err);
    REQUIRE(r.status == 0);
    const bool expected = precision == "bf16" && !vlmc::cpu_bf16_products_native();
    CHECK((r.err.find(note) != std::string::npos) == expected);
  }
}

TEST_CASE("cli: vlmc train --help lists every key with its default", "[cli][trainer]") {
  TempDir scratch("cli_train_help");
  const Result r = run_cli({"train", "--help"}, scratch.path);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("--stage1.lr") && Catch::Contains("(default: 0.001)") &&
                        Catch::Contains("--stage2.max_grad_norm") && Catch::Contains("--vision.patch_size") &&
                        Catch::Contains("--language.num_key_value_heads") && Catch::Contains("--eval.mosaics"));
}

TEST_CASE("cli: vlmc experiment connectors writes one table row per connector", "[cli][trainer]") {
  TempDir scratch("cli_experiment");
  std::ofstream(scratch.path / "toy.toml") << kToyConfig;
  const fs::path table = scratch.path / "table.md";
  const Result r = run_cli(cat({"--threads", "1", "experiment", "connectors", "--connectors", "linear,downsample",
                                "--out", table.string()},
                               toy_args(scratch.path)),
                           scratch.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  const std::string text = read_text(table);
  CHECK_THAT(text, Catch::Contains("| linear | 272 | 16 |") && Catch::Contains("| downsample |"));
  CHECK(fs::is_regular_file(scratch.path / "runs" / "toy-linear" / "results.json"));
  CHECK(fs::is_regular_file(scratch.path / "runs" / "toy-downsample" / "results.json"));
  const nlohmann::json summary = nlohmann::json::parse(read_text(scratch.path / "table.json"));
  CHECK(summary.at("connectors").at("linear").at("parameters") == 272);
  CHECK(summary.at("connectors").at("downsample").contains("vs_reference"));  // against linear: no mlp here
  CHECK(summary.at("seeds") == 1);
}

TEST_CASE("cli: vlmc train --seeds runs each training seed and summarises them with intervals", "[cli][trainer]") {
  TempDir scratch("cli_seeds");
  std::ofstream(scratch.path / "toy.toml") << kToyConfig;
  const Result r = run_cli(cat({"--threads", "1", "train", "--seeds", "2"}, toy_args(scratch.path)), scratch.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  for (const char* run : {"toy-seed0", "toy-seed1"}) {
    INFO(run);
    const nlohmann::json results = nlohmann::json::parse(read_text(scratch.path / "runs" / run / "results.json"));
    CHECK(results.at("train_seed") == (std::string(run) == "toy-seed0" ? 0 : 1));
  }
  CHECK_THAT(r.out, Catch::Contains("answer accuracy, mean ± sd") && Catch::Contains("95 % interval"));
  const nlohmann::json summary = nlohmann::json::parse(read_text(scratch.path / "runs" / "toy-seeds.json"));
  const nlohmann::json& answers = summary.at("connectors").begin()->at("answer_accuracy");
  CHECK(answers.at("values").size() == 2);
  CHECK(answers.at("interval_95").size() == 2);
  CHECK(fs::is_regular_file(scratch.path / "runs" / "toy-seeds.md"));
}

TEST_CASE("cli: vlmc train refuses a run name another process holds, naming its pid", "[cli][trainer]") {
  TempDir scratch("cli_train_lock");
  const std::filesystem::path run_dir = scratch.path / "runs" / "busy";
  std::filesystem::create_directories(run_dir);
  {
    // This process plays the first run: it holds the run directory's lock.
    const vlmc::train::RunLock first((run_dir / ".lock").string(), "run 'busy'");
    const Result r = run_cli({"train", "--run.name", "busy", "--run.runs_dir", (scratch.path / "runs").string(),
                              "--run.cache_dir", (scratch.path / "cache").string()},
                             scratch.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("run 'busy'") && Catch::Contains("is in use by another vlmc process (pid " +
                                                                       std::to_string(::getpid())));
  }
  // Released when its holder ends (here: goes out of scope): the lock can be taken again.
  CHECK_NOTHROW(vlmc::train::RunLock((run_dir / ".lock").string(), "run 'busy'"));
}

TEST_CASE("run lock: a second holder of one lock file is refused until the first releases it", "[trainer]") {
  TempDir scratch("run_lock");
  const std::string path = (scratch.path / ".lock").string();
  std::optional<vlmc::train::RunLock> first;
  first.emplace(path, "run 'a'");
  CHECK_THROWS_WITH(vlmc::train::RunLock(path, "run 'a'"),
                    Catch::Contains("run 'a' is in use by another vlmc process (pid " + std::to_string(::getpid()) +
                                    ", lock file " + path + ")"));
  first.reset();
  CHECK_NOTHROW(vlmc::train::RunLock(path, "run 'a'"));
}

TEST_CASE("cli: non-finite and negative settings are refused by name, in plain words", "[cli][trainer]") {
  TempDir scratch("cli_train_values");
  const std::string runs = (scratch.path / "runs").string();
  Result r = run_cli({"train", "--stage1.lr", "inf", "--run.runs_dir", runs}, scratch.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Catch::Contains("--stage1.lr") && Catch::Contains("not a finite number"));
  std::ofstream(scratch.path / "nan.toml") << "[stage2]\nlr = nan\n";
  r = run_cli({"train", "--config", (scratch.path / "nan.toml").string(), "--run.runs_dir", runs}, scratch.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Catch::Contains("nan.toml:2") && Catch::Contains("stage2.lr") &&
                        Catch::Contains("not a finite number"));
  r = run_cli({"train", "--run.log_every_s", "-1", "--run.runs_dir", runs}, scratch.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Catch::Contains("run.log_every_s must be >= 0 seconds, got -1"));
  r = run_cli({"connector", "bench", "--type", "linear", "--batch", "0"}, scratch.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Catch::Contains("--batch: must be > 0, got 0"));
  CHECK_THAT(r.err, !Catch::Contains("179769313486231570814527"));
}

TEST_CASE("cli: a corrupt test split stops vlmc train before anything trains", "[cli][trainer]") {
  TempDir scratch("cli_train_bad_test_split");
  std::ofstream(scratch.path / "toy.toml") << kToyConfig;
  const char* env = std::getenv("VLMC_FASHION_MNIST_DIR");
  const fs::path source = env ? fs::path(env) : fs::path(vlmc::train::kFashionMnistDir);
  const fs::path data = scratch.path / "data";
  fs::create_directories(data);
  for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
    fs::create_symlink(source / f, data / f);
  std::ofstream(data / "t10k-images-idx3-ubyte.gz") << "not gzip";
  const Result r = run_cli(cat({"train", "--data.dir", data.string()}, toy_args(scratch.path)), scratch.path);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("t10k-images-idx3-ubyte.gz"));
  CHECK_THAT(r.err, !Catch::Contains("stage0-vision ["));  // no stage began
  CHECK(vlmc::train::list_checkpoints((scratch.path / "runs" / "toy" / "checkpoints").string()).empty());
  CHECK((!fs::exists(scratch.path / "cache") || fs::is_empty(scratch.path / "cache")));
}
