// Seed statistics against values computed by hand and by scipy's conventions.
#include <catch2/catch.hpp>

#include "train/stats.h"

using namespace vlmc::train;

TEST_CASE("stats: mean, sample deviation and the 95 % interval over seeds", "[stats]") {
  const SeedSummary s = summarize({0.80, 0.84, 0.82});
  CHECK(s.n == 3);
  CHECK(s.mean == Approx(0.82));
  CHECK(s.sd == Approx(0.02));                                 // sqrt((0.0004 + 0.0004) / 2)
  CHECK(s.half_width == Approx(4.303 * 0.02 / std::sqrt(3.0)));  // t(0.975, 2)
  const SeedSummary one = summarize({0.5});
  CHECK(one.mean == 0.5);
  CHECK(one.sd == 0);
  CHECK(one.half_width == 0);
  CHECK(t_quantile_975(1) == 12.706);
  CHECK(t_quantile_975(30.7) == 2.042);
  CHECK(t_quantile_975(1000) == 1.980);
}

TEST_CASE("stats: Welch's test separates clear differences from noise", "[stats]") {
  // Means 0.90 and 0.80 with spreads of 0.01: t = 0.1 / sqrt(2 * 0.0001 / 3) = 12.2, df = 4.
  const WelchTest clear = welch_test({0.89, 0.90, 0.91}, {0.79, 0.80, 0.81});
  CHECK(clear.testable);
  CHECK(clear.difference == Approx(0.10));
  CHECK(clear.t == Approx(12.247).epsilon(1e-3));
  CHECK(clear.df == Approx(4.0));
  CHECK(clear.significant);
  const WelchTest noise = welch_test({0.85, 0.88, 0.82}, {0.84, 0.86, 0.83});
  CHECK(noise.testable);
  CHECK_FALSE(noise.significant);
  CHECK_FALSE(welch_test({0.9}, {0.8, 0.7}).testable);  // one seed: no test
}
