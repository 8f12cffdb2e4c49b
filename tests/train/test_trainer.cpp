// The whole fashion-mosaic run at toy sizes: every stage runs, the outputs
// are written, stage 0 is cached, a run resumed from a checkpoint repeats the
// uninterrupted loss sequence bit for bit, and an existing run is not
// overwritten without --resume. Needs Debian's dataset-fashion-mnist.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "train/trainer.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {


TrainConfig toy_config(const fs::path& root) {
  TrainConfig c;
  c.runs_dir = (root / "runs").string();
  c.cache_dir = (root / "cache").string();
  c.log_every_s = 1e9;
  c.checkpoint_every = 2;
  c.keep_checkpoints = 100;
  c.train_mosaics = 64;
  c.questions_per_image = 2;
  c.vision_hidden_size = 16;
  c.vision_intermediate_size = 32;
  c.vision_num_attention_heads = 2;
  c.vision_num_hidden_layers = 1;
  c.lm_hidden_size = 16;
  c.lm_intermediate_size = 32;
  c.lm_num_attention_heads = 2;
  c.lm_num_key_value_heads = 1;
  c.lm_num_hidden_layers = 1;
  for (StageSettings* s : {&c.stage0_vision, &c.stage0_language, &c.stage1, &c.stage2}) {
    s->steps = 4;
    s->batch_size = 4;
  }
  c.eval_mosaics = 8;
  c.eval_questions_per_image = 2;
  return c;
}

TrainOptions options_for(const TrainConfig& c, bool resume = false) {
  TrainOptions o;
  o.resume = resume;
  o.config_toml = "# test\n";
  o.config_json = {{"run.seed", c.seed}, {"vision.hidden_size", c.vision_hidden_size}};
  return o;
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
  for (const char* f : {"config.toml", "metrics.jsonl", "loss.png", "results.json"}) {
    INFO(f);
    CHECK(fs::is_regular_file(run / f));
  }
  const auto seq = losses(run);
  REQUIRE(seq.size() == 16);  // 4 steps x 4 stages
  CHECK(seq.front().first == "stage0-vision");
  CHECK(seq.back().first == "stage2");
  CHECK(list_checkpoints((run / "checkpoints").string()).back() == "3-stage2-step000004");

  // Both halves of stage 0 are cached; a second run (another name) loads them.
  int cached = 0;
  for (const auto& e : fs::directory_iterator(dir.path / "cache")) cached += is_checkpoint(e.path().string());
  CHECK(cached == 2);
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
