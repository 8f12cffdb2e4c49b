// Small-sample statistics for results over training seeds: the mean, the
// sample standard deviation, a 95 % interval for the mean (Student's t), and
// Welch's two-sided t-test at the 5 % level for a difference of two means.
#pragma once

#include <vector>

namespace vlmc::train {

struct SeedSummary {
  int n = 0;
  double mean = 0;
  double sd = 0;          // sample standard deviation (n - 1); 0 for n = 1
  double half_width = 0;  // of the 95 % interval mean ± half_width; 0 for n = 1 (no interval)
};
SeedSummary summarize(const std::vector<double>& values);

// Student's t quantile t(0.975, df), df >= 1 (df rounded down, as tables are
// read; large df tends to 1.96).
double t_quantile_975(double df);

struct WelchTest {
  double difference = 0;  // mean(a) - mean(b)
  double t = 0;
  double df = 0;
  bool significant = false;  // |t| > t(0.975, df): the means differ at the 5 % level
  bool testable = false;     // both have n >= 2 and some spread
};
WelchTest welch_test(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace vlmc::train
