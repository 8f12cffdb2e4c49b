// The whole fashion-mosaic run at toy sizes: every stage runs, the outputs
// are written, stage 0 is cached, a run resumed from a checkpoint repeats the
// uninterrupted loss sequence bit for bit, and an existing run is not
// overwritten without --resume. Needs Debian's dataset-fashion-mnist.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/threads.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "train/mosaic_models.h"
#include "train/tensorboard.h"
#include "train/trainer.h"
#include "tests/support/temp_dir.h"
#include "tests/support/toy_run.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {


TrainConfig toy_config(const fs::path& root) { return test::toy_run_config(root); }

TrainOptions options_for(const TrainConfig& c, bool resume = false) {
  TrainOptions o;
  o.resume = resume;
  o.config_toml = "# test\n";
  o.config_json = {{"run.seed", c.seed}, {"vision.hidden_size", c.vision_hidden_size}};
  return o;
}

// Complete stage-0 cache entries in `cache`.
int cached_entries(const fs::path& cache) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(cache)) n += is_checkpoint(e.path().string());
  return n;
}

std::vector<std::pair<std::string, double>> losses(const fs::path& run) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& r : MetricsLog::read_all((run / "metrics.jsonl").string()))
    if (r.contains("loss") && r.at("loss").is_number()) out.emplace_back(r.at("stage"), r.at("loss").get<double>());
  return out;
}

}  // namespace

TEST_CASE("trainer: a toy run goes through every stage and writes its outputs", "[trainer]") {
  TempDir dir("trainer");
  const TrainConfig c = toy_config(dir.path);
  const TrainResult result = run_training(c, options_for(c));
  const EvalReport& report = result.eval;
  CHECK(result.visual_tokens == 16);
  CHECK(result.connector_parameters > 0);
  CHECK(result.stages.size() == 4);
  CHECK(report.mosaics == 8);
  CHECK(report.encoder.total == 32);
  CHECK(report.answers.total == 16);
  CHECK(report.oracle.total == 16);
  CHECK(report.kinds.at("caption").total == 8);

  const fs::path run = dir.path / "runs" / c.name;
  for (const char* f : {"config.toml", "metrics.jsonl", "loss.png", "validation.png", "results.json"}) {
    INFO(f);
    CHECK(fs::is_regular_file(run / f));
  }
  // Validation every 2 steps of stages 1 and 2 (4 steps each): steps 2 and 4.
  std::vector<std::pair<std::string, int64_t>> validated;
  for (const auto& r : MetricsLog::read_all((run / "metrics.jsonl").string()))
    if (r.contains("validation")) {
      validated.emplace_back(r.at("stage"), r.at("step"));
      CHECK(r.at("validation").at("kinds").size() == 5);  // four question kinds and captions
      CHECK(r.at("validation").at("answer_accuracy").get<double>() >= 0);
    }
  CHECK(validated == std::vector<std::pair<std::string, int64_t>>{{"stage1", 2}, {"stage1", 4}, {"stage2", 2},
                                                                  {"stage2", 4}});
  // The same records as TensorBoard scalars, on one step axis over the four stages.
  {
    const std::vector<std::string> files = tensorboard_event_files((run / "tb").string());
    REQUIRE(files.size() == 1);
    std::vector<int64_t> loss_steps, validation_steps;
    bool test_accuracy = false;
    for (const ScalarEvent& e : read_tensorboard_scalars(files[0])) {
      if (e.tag == "train/loss") loss_steps.push_back(e.step);
      if (e.tag == "validation/answer_accuracy") validation_steps.push_back(e.step);
      if (e.tag == "test/answer_accuracy") {
        test_accuracy = true;
        CHECK(e.step == 16);
        CHECK(e.value == static_cast<float>(report.answers.accuracy()));
      }
    }
    CHECK(loss_steps.size() == 16);
    CHECK(loss_steps.back() == 16);
    CHECK(validation_steps == std::vector<int64_t>{10, 12, 14, 16});
    CHECK(test_accuracy);
  }
  REQUIRE(result.validation.count("stage2"));
  CHECK(result.validation.at("stage2").points == 2);
  CHECK(result.validation.at("stage2").last_step == 4);
  {
    std::ifstream in(run / "results.json");
    const nlohmann::json results = nlohmann::json::parse(in);
    CHECK(results.at("device") == "cpu");
    CHECK(results.at("precision") == "f32");
    CHECK(results.at("stages").size() == 4);
    CHECK(results.at("stages").at("stage2").at("tokens_per_s").get<double>() > 0);
    // On the CPU: the host tensors' high-water mark, at least the models' weights.
    CHECK(results.at("stages").at("stage2").at("peak_device_bytes").get<int64_t>() > 0);
    CHECK(results.at("split") == "test");
    CHECK(results.at("validation_curves").at("stage1").at("points") == 2);
    CHECK(results.at("eval_seed") == c.eval_seed);
    CHECK(results.at("train_seed") == c.seed);
    CHECK(results.at("mosaic_grid") == 2);
    CHECK(!results.at("cpu_model").get<std::string>().empty());
    CHECK(results.at("threads") == vlmc::num_threads());
  }
  const auto seq = losses(run);
  REQUIRE(seq.size() == 16);  // 4 steps x 4 stages
  CHECK(seq.front().first == "stage0-vision");
  CHECK(seq.back().first == "stage2");
  CHECK(list_checkpoints((run / "checkpoints").string()).back() == "3-stage2-step000004");

  // Both halves of stage 0 are cached; a second run (another name) loads them.
  CHECK(cached_entries(dir.path / "cache") == 2);
  TrainConfig again = c;
  again.name = "again";
  const EvalReport second = run_training(again, options_for(again)).eval;
  const auto seq2 = losses(dir.path / "runs" / "again");
  REQUIRE(seq2.size() == 8);  // stages 1 and 2 only
  CHECK(seq2.front().first == "stage1");
  CHECK(second.encoder.correct == report.encoder.correct);

  // The same name again without --resume: refused, nothing touched.
  REQUIRE_THROWS_WITH(run_training(c, options_for(c)), Catch::Contains("--resume") && Catch::Contains("already has checkpoints"));
  CHECK(losses(run) == seq);
}

TEST_CASE("trainer: resuming from any stage's checkpoint repeats the loss sequence", "[trainer]") {
  TempDir dir("trainer");
  const TrainConfig c = toy_config(dir.path);
  run_training(c, options_for(c));
  const fs::path run = dir.path / "runs" / c.name;
  const auto expected = losses(run);
  REQUIRE(expected.size() == 16);
  const std::string root = (run / "checkpoints").string();

  // A crash after checkpoint k leaves checkpoints up to k and metrics beyond it.
  for (const std::string last : {"3-stage2-step000002", "2-stage1-step000002", "1-stage0-language-step000002"}) {
    INFO("resuming from " << last);
    for (const std::string& name : list_checkpoints(root))
      if (name > last) fs::remove_all(fs::path(root) / name);
    fs::remove_all(dir.path / "cache");  // so stage 0 cannot come from the cache
    run_training(c, options_for(c, /*resume=*/true));
    CHECK(losses(run) == expected);
  }
}

TEST_CASE("trainer: bf16 precision trains close to f32 and keeps its own stage-0 cache", "[trainer]") {
  TempDir dir("trainer");
  const TrainConfig f32 = toy_config(dir.path);
  run_training(f32, options_for(f32));
  TrainConfig bf16 = f32;
  bf16.name = "bf16";
  bf16.precision = "bf16";
  TrainOptions o = options_for(bf16);
  o.config_json["run.precision"] = "bf16";
  run_training(bf16, o);

  const auto a = losses(dir.path / "runs" / f32.name), b = losses(dir.path / "runs" / "bf16");
  REQUIRE(a.size() == 16);
  REQUIRE(b.size() == a.size());  // stage 0 ran again: the f32 cache is not bf16's
  double largest = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(b[i].first == a[i].first);
    largest = std::max(largest, std::abs(b[i].second - a[i].second) / std::abs(a[i].second));
  }
  // bf16 operands (8 significant bits) move the toy losses by about 1e-3; a
  // run that ignored the precision would give exactly the f32 losses.
  CHECK(largest > 0);
  CHECK(largest < 2e-2);
  CHECK(cached_entries(dir.path / "cache") == 4);
}

TEST_CASE("trainer: run.train_seed redraws only the connector, and run.train_seed = run.seed is the default", "[trainer]") {
  const Tokenizer tokenizer;
  TrainConfig c = toy_config("/nonexistent");
  const auto state = [&](int64_t train_seed) {
    c.train_seed = train_seed;
    return build_models(c, tokenizer).state_dict();
  };
  const auto by_default = state(-1), same = state(c.seed), other = state(c.seed + 1);
  int64_t connector = 0, rest = 0;
  for (const auto& [name, t] : by_default) {
    const auto values = t.to_vector<float>();
    CHECK(same.at(name).to_vector<float>() == values);
    const bool is_connector = name.rfind("connector.", 0) == 0;
    (is_connector ? connector : rest) += 1;
    INFO(name);
    CHECK((other.at(name).to_vector<float>() == values) == !is_connector);
  }
  CHECK(connector > 0);
  CHECK(rest > 0);
}

TEST_CASE("trainer: stage2.caption_mix mixes stage-1 captions into stage 2, and only stage 2 changes", "[trainer]") {
  TempDir dir("trainer");
  const TrainConfig plain = toy_config(dir.path);
  TrainConfig mixed = plain;
  mixed.name = "mixed";
  mixed.stage2_caption_mix = 1.0;
  run_training(plain, options_for(plain));
  run_training(mixed, options_for(mixed));  // stage 0 from the cache
  std::vector<std::pair<std::string, double>> a, b;
  for (const auto& [stage, loss] : losses(dir.path / "runs" / plain.name))
    if (stage == "stage1" || stage == "stage2") a.emplace_back(stage, loss);
  b = losses(dir.path / "runs" / mixed.name);
  REQUIRE(a.size() == 8);
  REQUIRE(b.size() == 8);
  for (size_t i = 0; i < 4; ++i) CHECK(a[i] == b[i]);  // stage 1 alike
  int differ = 0;
  for (size_t i = 4; i < 8; ++i) differ += a[i].second != b[i].second;
  CHECK(differ > 0);  // stage 2 draws from questions and captions
}

TEST_CASE("trainer: a toy run of 4x4 mosaics: sixteen cells per mosaic, one patch each, its own tokenizer and stage-0 cache", "[trainer]") {
  TempDir dir("trainer-4x4");
  TrainConfig c = toy_config(dir.path);
  c.mosaic_grid = 4;
  c.vision_patch_size = 28;  // 4x4 patches of 112 pixels: one per item
  c.validate();
  TrainOptions o = options_for(c);
  o.config_json["data.mosaic_grid"] = 4;
  o.config_json["data.image_first"] = false;
  const TrainResult result = run_training(c, o);
  const EvalReport& report = result.eval;
  CHECK(result.visual_tokens == 16);  // mlp2x_gelu: one token per patch
  CHECK(report.mosaics == 8);
  CHECK(report.encoder.total == 8 * 16);
  CHECK(report.answers.total == 16);
  CHECK(report.kinds.at("caption").total == 8);
  CHECK(report.rule_reader.total == 16);
  CHECK(losses(dir.path / "runs" / c.name).size() == 16);

  // The 2x2 job in the same cache folder does not take the 4x4 stage-0 models:
  // its key leaves data.mosaic_grid out only when it is 2 (the caches made before the key existed).
  TrainConfig two = toy_config(dir.path);
  two.name = "two";
  TrainOptions o2 = options_for(two);
  o2.config_json["data.mosaic_grid"] = 2;
  o2.config_json["data.image_first"] = false;
  run_training(two, o2);
  CHECK(losses(dir.path / "runs" / "two").front().first == "stage0-vision");
  CHECK(cached_entries(dir.path / "cache") == 4);
  // A config without the key (as runs made before it) finds the 2x2 caches.
  TrainConfig three = toy_config(dir.path);
  three.name = "three";
  run_training(three, options_for(three));
  CHECK(losses(dir.path / "runs" / "three").front().first == "stage1");
}
