// Cosine-with-warmup learning-rate schedule (optim/schedule.h), tag [optim].
#include <catch2/catch.hpp>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

#include "core/io/tensor_io.h"
#include "optim/schedule.h"

using namespace vlmc;
using namespace vlmc::optim;

TEST_CASE("warmup_steps_from_ratio is ceil(ratio * total) as Hugging Face", "[optim]") {
  CHECK(warmup_steps_from_ratio(0.03, 20) == 1);   // 0.6 -> 1
  CHECK(warmup_steps_from_ratio(0.2, 20) == 4);
  CHECK(warmup_steps_from_ratio(0.03, 2181) == 66);  // 65.43 -> 66
  CHECK(warmup_steps_from_ratio(0.0, 100) == 0);
  REQUIRE_THROWS_WITH(warmup_steps_from_ratio(1.5, 10), Catch::Contains("warmup_ratio 1.5"));
}

TEST_CASE("CosineWithWarmup on hand-checked steps", "[optim]") {
  const CosineWithWarmup s(10, 2);
  CHECK(s.multiplier(0) == 0.0);  // the first update runs at lr 0, as LambdaLR
  CHECK(s.multiplier(1) == 0.5);
  CHECK(s.multiplier(2) == 1.0);
  // progress (6 - 2) / 8 = 0.5: cos(pi/2) = 0 -> 0.5.
  CHECK(s.multiplier(6) == Approx(0.5).epsilon(1e-15));
  CHECK(s.multiplier(10) == Approx(0.0).margin(1e-15));
  const CosineWithWarmup floor(10, 2, 0.1);
  CHECK(floor.multiplier(6) == Approx(0.1 + 0.9 * 0.5).epsilon(1e-15));
  CHECK(floor.multiplier(10) == Approx(0.1).epsilon(1e-15));
  CHECK(floor.multiplier(1) == 0.5);  // the floor does not touch the warmup
  // No warmup: starts at the full rate.
  CHECK(CosineWithWarmup(5, 0).multiplier(0) == 1.0);
  REQUIRE_THROWS_WITH(CosineWithWarmup(0, 0), Catch::Contains("total_steps 0"));
  REQUIRE_THROWS_WITH(CosineWithWarmup(5, 1, 2.0), Catch::Contains("min_lr_ratio 2"));
  REQUIRE_THROWS_WITH(s.multiplier(-1), Catch::Contains("step -1"));
}

TEST_CASE("CosineWithWarmup matches the golden LambdaLR learning rates", "[optim][golden]") {
  const std::string path = std::string(VLMC_GOLDEN_DIR) + "/optim.safetensors";
  const auto meta = io::load_safetensors_metadata(path);
  REQUIRE(meta.at("family") == "optim");
  int cases = 0;
  for (const auto& [key, value] : meta) {
    const std::string suffix = ".args";
    if (key.size() <= suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    INFO(key);
    ++cases;
    const nlohmann::json args = nlohmann::json::parse(value);
    const int64_t steps = args.at("steps");
    const auto s = CosineWithWarmup::from_ratio(steps, args.at("warmup_ratio").get<double>(),
                                                args.at("min_lr_ratio").get<double>());
    CHECK(s.warmup_steps == args.at("warmup_steps").get<int64_t>());
    const auto& groups = args.at("groups");
    for (int64_t step = 0; step < steps; ++step)
      for (size_t g = 0; g < groups.size(); ++g) {
        const double base = groups[g].at("lr");
        const double want = args.at("lrs")[step][g];
        INFO("step " << step << " group " << g);
        CHECK(std::abs(base * s.multiplier(step) - want) <= 1e-7 * std::abs(want));
      }
  }
  CHECK(cases == 3);
}
