// The trainer's stage loop: a run interrupted after a checkpoint and resumed
// reproduces the uninterrupted loss sequence bit for bit, and a non-finite
// loss stops the stage before any update, naming the last usable checkpoint.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "core/ops.h"
#include "modules/layers.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "train/stage_loop.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {


// A regression whose batch is a pure function of the step, as the trainer's are.
struct Toy {
  std::shared_ptr<nn::Linear> model;
  Toy() {
    Generator gen(3);
    model = std::make_shared<nn::Linear>(4, 2, true, gen);
  }
  StepLoss step(int64_t step) const {
    Generator gen(100 + static_cast<uint64_t>(step));
    const Tensor x = Tensor::randn({8, 4}, gen);
    const Tensor y = Tensor::randn({8, 2}, gen);
    const Tensor d = sub((*model)(x), y);
    return {mean(mul(d, d)), 8};
  }
};

StageSpec toy_spec(Toy& toy, int64_t steps) {
  StageSpec spec;
  spec.name = "toy";
  spec.index = 2;
  spec.settings = {steps, 8, 0.05, 0.01, 0.2, 0.1, 0.5};  // warmup, cosine, decay, clipping
  for (auto& [name, p] : toy.model->named_parameters()) spec.params.push_back({name, p});
  spec.step = [&toy](int64_t step) { return toy.step(step); };
  return spec;
}

RunFiles files_in(const fs::path& dir, MetricsLog& log, Toy& toy) {
  RunFiles f;
  f.run_dir = dir.string();
  f.checkpoint_root = (dir / "checkpoints").string();
  f.metrics = &log;
  f.model_state = [&toy] { return toy.model->state_dict(); };
  f.config = {{"what", "test"}};
  f.checkpoint_every = 3;
  f.keep_checkpoints = 10;
  f.log_every_s = 1e9;
  return f;
}

std::vector<double> losses(const fs::path& metrics) {
  std::vector<double> out;
  for (const auto& r : MetricsLog::read_all(metrics.string())) out.push_back(r.at("loss").get<double>());
  return out;
}

}  // namespace

TEST_CASE("stage loop: a resumed run repeats the uninterrupted losses bit for bit", "[stage-loop]") {
  TempDir whole("stage_loop"), parts("stage_loop");
  Toy a;
  {
    MetricsLog log((whole.path / "metrics.jsonl").string());
    run_stage(toy_spec(a, 10), files_in(whole.path, log, a));
  }
  const std::vector<double> expected = losses(whole.path / "metrics.jsonl");
  REQUIRE(expected.size() == 10);
  CHECK(expected.back() < expected.front());

  // A process that dies during step 8: checkpoints at 3 and 6, metrics up to 7.
  Toy b;
  {
    MetricsLog log((parts.path / "metrics.jsonl").string());
    StageSpec spec = toy_spec(b, 10);
    spec.step = [&b](int64_t step) -> StepLoss {
      if (step == 7) throw std::runtime_error("simulated crash");
      return b.step(step);
    };
    CHECK_THROWS_WITH(run_stage(spec, files_in(parts.path, log, b)), "simulated crash");
  }
  const std::vector<std::string> saved = list_checkpoints((parts.path / "checkpoints").string());
  REQUIRE(saved == std::vector<std::string>{"2-toy-step000003", "2-toy-step000006"});

  // A new process: fresh weights, then the last checkpoint's weights, optimizer and step.
  Toy c;
  const Checkpoint ckpt = load_checkpoint((parts.path / "checkpoints" / saved.back()).string());
  CHECK(ckpt.state.at("step") == 6);
  CHECK(ckpt.state.at("config").at("what") == "test");
  c.model->load_state_dict(ckpt.model);
  MetricsLog::truncate_for_resume((parts.path / "metrics.jsonl").string(),
                                  [](const nlohmann::json& r) { return r.at("step").get<int64_t>() <= 6; });
  {
    MetricsLog log((parts.path / "metrics.jsonl").string());
    run_stage(toy_spec(c, 10), files_in(parts.path, log, c), StageResume{6, ckpt.optimizer});
  }
  const std::vector<double> resumed = losses(parts.path / "metrics.jsonl");
  REQUIRE(resumed.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(resumed[i] == expected[i]);  // bitwise: same threads, same batches, same state
  }
  CHECK(c.model->weight.to_vector<float>() == a.model->weight.to_vector<float>());
}

TEST_CASE("stage loop: a NaN loss stops before the update and names the last checkpoint", "[stage-loop]") {
  TempDir dir("stage_loop");
  Toy toy;
  MetricsLog log((dir.path / "metrics.jsonl").string());
  StageSpec spec = toy_spec(toy, 10);
  std::vector<float> before_nan;
  spec.step = [&](int64_t step) -> StepLoss {
    StepLoss out = toy.step(step);
    if (step == 4) {
      before_nan = toy.model->weight.to_vector<float>();
      out.loss = mul(out.loss, std::nan(""));
    }
    return out;
  };
  REQUIRE_THROWS_WITH(run_stage(spec, files_in(dir.path, log, toy)),
                      Catch::Contains("toy step 5: the loss is NaN") &&
                          Catch::Contains("2-toy-step000003") && Catch::Contains("--resume"));
  CHECK(toy.model->weight.to_vector<float>() == before_nan);  // no update from the NaN step
  const auto records = MetricsLog::read_all((dir.path / "metrics.jsonl").string());
  REQUIRE(records.size() == 5);
  CHECK(records.back().at("loss").is_null());  // NaN is written as null
  CHECK(is_checkpoint((dir.path / "checkpoints" / "2-toy-step000003").string()));
}

TEST_CASE("stage loop: a NaN before the first checkpoint says there is none", "[stage-loop]") {
  TempDir dir("stage_loop");
  Toy toy;
  MetricsLog log((dir.path / "metrics.jsonl").string());
  StageSpec spec = toy_spec(toy, 10);
  spec.step = [&](int64_t step) -> StepLoss {
    StepLoss out = toy.step(step);
    out.loss = div(out.loss, 0.0);
    return out;
  };
  REQUIRE_THROWS_WITH(run_stage(spec, files_in(dir.path, log, toy)),
                      Catch::Contains("loss is infinite") && Catch::Contains("No checkpoint"));
}

TEST_CASE("stage loop: K accumulated micro-batches step as one batch of K times the size", "[stage-loop]") {
  TempDir dir("stage_loop");
  // Accumulating micro-batches 2s and 2s+1 ...
  Toy accumulated;
  {
    MetricsLog log((dir.path / "a.jsonl").string());
    StageSpec spec = toy_spec(accumulated, 6);
    spec.settings.gradient_accumulation_steps = 2;
    run_stage(spec, files_in(dir.path / "a", log, accumulated));
  }
  // ... is one step on both of them at once (equal sizes: the mean of the means).
  Toy whole;
  {
    MetricsLog log((dir.path / "b.jsonl").string());
    StageSpec spec = toy_spec(whole, 6);
    spec.step = [&whole](int64_t step) -> StepLoss {
      const StepLoss a = whole.step(2 * step), b = whole.step(2 * step + 1);
      return {div(add(a.loss, b.loss), 2.0), a.tokens + b.tokens};
    };
    run_stage(spec, files_in(dir.path / "b", log, whole));
  }
  const auto wa = accumulated.model->weight.to_vector<float>(), wb = whole.model->weight.to_vector<float>();
  for (size_t i = 0; i < wa.size(); ++i) CHECK(wa[i] == Approx(wb[i]).epsilon(1e-5));
  const auto la = MetricsLog::read_all((dir.path / "a.jsonl").string());
  const auto lb = MetricsLog::read_all((dir.path / "b.jsonl").string());
  REQUIRE(la.size() == 6);
  REQUIRE(lb.size() == 6);
  for (size_t i = 0; i < la.size(); ++i) {
    CHECK(la[i].at("loss").get<double>() == Approx(lb[i].at("loss").get<double>()).epsilon(1e-5));
    CHECK(la[i].at("tokens") == 16);
  }
}

namespace {

// A loss that is finite while its gradient is NaN: sqrt(|w - w|²) is 0, and
// its derivative (w - w) / sqrt(0) is 0 / 0.
Tensor finite_loss_nan_gradient(const Toy& toy) {
  const Tensor d = sub(toy.model->weight, toy.model->weight.detach());
  return sqrt(sum(mul(d, d)));
}

}  // namespace

TEST_CASE("stage loop: a NaN gradient under a finite loss stops before the update", "[stage-loop]") {
  TempDir dir("stage_loop");
  Toy toy;
  MetricsLog log((dir.path / "metrics.jsonl").string());
  StageSpec spec = toy_spec(toy, 10);
  spec.settings.max_grad_norm = 0.0;  // no clipping: the norm is checked all the same
  std::vector<float> before;
  std::map<std::string, Tensor> state_before;
  spec.step = [&](int64_t step) -> StepLoss {
    StepLoss out = toy.step(step);
    if (step == 3) {
      before = toy.model->weight.to_vector<float>();
      out.loss = add(out.loss, finite_loss_nan_gradient(toy));
    }
    return out;
  };
  REQUIRE_THROWS_WITH(run_stage(spec, files_in(dir.path, log, toy)),
                      Catch::Contains("toy step 4: the gradient norm is NaN") &&
                          Catch::Contains("training stopped before updating the weights") &&
                          Catch::Contains("2-toy-step000003") && Catch::Contains("--skip-nonfinite"));
  CHECK(toy.model->weight.to_vector<float>() == before);  // no update from the NaN step
  const auto records = MetricsLog::read_all((dir.path / "metrics.jsonl").string());
  REQUIRE(records.size() == 4);
  CHECK(std::isfinite(records.back().at("loss").get<double>()));
  CHECK(records.back().at("grad_norm").is_null());  // NaN is written as null
  // Only the checkpoint of step 3 exists, and it is finite.
  CHECK(list_checkpoints((dir.path / "checkpoints").string()) == std::vector<std::string>{"2-toy-step000003"});
}

TEST_CASE("stage loop: run.skip_nonfinite skips up to N NaN-gradient steps, then stops", "[stage-loop]") {
  TempDir dir("stage_loop");
  Toy toy;
  MetricsLog log((dir.path / "metrics.jsonl").string());
  StageSpec spec = toy_spec(toy, 10);
  std::map<int64_t, std::vector<float>> weight_at;  // before each step's forward
  spec.step = [&](int64_t step) -> StepLoss {
    weight_at[step] = toy.model->weight.to_vector<float>();
    StepLoss out = toy.step(step);
    if (step == 2 || step == 5 || step == 7) out.loss = add(out.loss, finite_loss_nan_gradient(toy));
    return out;
  };
  RunFiles files = files_in(dir.path, log, toy);
  files.skip_nonfinite = 2;
  REQUIRE_THROWS_WITH(run_stage(spec, files),
                      Catch::Contains("toy step 8: the gradient norm is NaN") &&
                          Catch::Contains("2 such step(s) were skipped already"));
  CHECK(weight_at.at(3) == weight_at.at(2));  // step 3 (index 2) skipped: no update
  CHECK(weight_at.at(6) == weight_at.at(5));
  CHECK(weight_at.at(4) != weight_at.at(3));  // the others updated
  const auto records = MetricsLog::read_all((dir.path / "metrics.jsonl").string());
  REQUIRE(records.size() == 8);
  CHECK(records[2].at("skipped").get<bool>());
  CHECK(records[5].at("skipped").get<bool>());
  CHECK(!records[3].contains("skipped"));
  for (const auto& r : records) CHECK(r.contains("grad_norm"));
}

TEST_CASE("stage loop: a weight that overflows is never checkpointed", "[stage-loop]") {
  TempDir dir("stage_loop");
  Toy toy;
  MetricsLog log((dir.path / "metrics.jsonl").string());
  StageSpec spec = toy_spec(toy, 10);
  spec.settings.lr = 1e39;  // past f32's range: the first update makes every weight infinite or NaN
  spec.settings.warmup_ratio = 0.0;
  RunFiles files = files_in(dir.path, log, toy);
  files.checkpoint_every = 1;
  REQUIRE_THROWS_WITH(run_stage(spec, files),
                      Catch::Contains("toy step 1: 'bias' holds a NaN or an infinity after the update") &&
                          Catch::Contains("no checkpoint was written") && Catch::Contains("No checkpoint was written yet"));
  CHECK(list_checkpoints((dir.path / "checkpoints").string()).empty());
}
