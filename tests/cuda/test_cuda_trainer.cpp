// The whole trainer on CUDA against the CPU: the same seed (so the same
// initial weights, built on the CPU and moved), the same batches, 20 optimizer
// steps over the four stages (5 each), f32 on both. Every step's loss must
// agree within 1e-4 relative (issue 6's end-to-end check): cuBLAS and OpenBLAS
// sum in other orders, so the weights are expected to drift apart in the last
// bits step by step, far below that bound unless a CUDA kernel is wrong
// (the bound held on an H200, 2026-12-04; how far below it was not recorded).
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "train/metrics_log.h"
#include "train/trainer.h"
#include "tests/support/temp_dir.h"
#include "tests/support/toy_run.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;

namespace {

// The toy run, 5 steps per stage (20 in all), clipping on (the device-side path).
TrainConfig tiny_run(const fs::path& root, const std::string& device, const std::string& precision) {
  TrainConfig c = test::toy_run_config(root);
  c.name = "run";
  c.device = device;
  c.precision = precision;
  c.checkpoint_every = 100;
  for (StageSettings* s : {&c.stage0_vision, &c.stage0_language, &c.stage1, &c.stage2}) {
    s->steps = 5;
    s->max_grad_norm = 1.0;
  }
  return c;
}

std::vector<std::pair<std::string, double>> run_losses(const TrainConfig& c) {
  TrainOptions o;
  o.config_toml = "# test\n";
  o.config_json = {{"run.seed", c.seed}, {"run.precision", c.precision}};
  run_training(c, o);
  std::vector<std::pair<std::string, double>> out;
  for (const auto& r : MetricsLog::read_all((fs::path(c.runs_dir) / c.name / "metrics.jsonl").string()))
    if (r.contains("loss") && r.at("loss").is_number()) out.emplace_back(r.at("stage"), r.at("loss").get<double>());
  return out;
}

void compare_runs(const std::string& precision, double tol) {
  test::TempDir cpu_dir("cuda-trainer-cpu"), gpu_dir("cuda-trainer-gpu");
  const auto cpu = run_losses(tiny_run(cpu_dir.path, "cpu", precision));
  const auto gpu = run_losses(tiny_run(gpu_dir.path, "cuda", precision));
  REQUIRE(cpu.size() == 20);
  REQUIRE(gpu.size() == cpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    INFO(cpu[i].first << " record " << i << ": cpu " << cpu[i].second << ", cuda " << gpu[i].second);
    CHECK(gpu[i].first == cpu[i].first);
    CHECK(std::isfinite(gpu[i].second));
    CHECK(std::abs(gpu[i].second - cpu[i].second) <= tol * std::abs(cpu[i].second));
  }
}

}  // namespace

TEST_CASE("cuda trainer: 20 f32 steps give the CPU's losses within 1e-4", "[cuda][trainer]") {
  compare_runs("f32", 1e-4);
}

// bf16: both devices round the same operands to bf16 and accumulate in f32, but
// an operand that differs in its last f32 bits can round to the neighbouring
// bf16 value (2^-8 relative), so the runs are expected to drift faster than in
// f32.
TEST_CASE("cuda trainer: 20 bf16 steps stay within 1e-2 of the CPU's bf16 emulation", "[cuda][trainer]") {
  compare_runs("bf16", 1e-2);
}
