#include "train/stats.h"

#include <cmath>

namespace vlmc::train {

SeedSummary summarize(const std::vector<double>& values) {
  SeedSummary s;
  s.n = static_cast<int>(values.size());
  if (s.n == 0) return s;
  for (const double v : values) s.mean += v;
  s.mean /= s.n;
  if (s.n < 2) return s;
  double squares = 0;
  for (const double v : values) squares += (v - s.mean) * (v - s.mean);
  s.sd = std::sqrt(squares / (s.n - 1));
  s.half_width = t_quantile_975(s.n - 1) * s.sd / std::sqrt(static_cast<double>(s.n));
  return s;
}

double t_quantile_975(double df) {
  // t(0.975, df) for df = 1..30 (the usual table), then 40, 60, 120, infinity.
  static const double table[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                 2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                 2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (!(df >= 1)) return INFINITY;
  const int whole = static_cast<int>(std::floor(df));
  if (whole <= 30) return table[whole - 1];
  if (whole < 40) return 2.042;  // rounded down to the next table row, as a table is read
  if (whole < 60) return 2.021;
  if (whole < 120) return 2.000;
  return 1.980;
}

WelchTest welch_test(const std::vector<double>& a, const std::vector<double>& b) {
  WelchTest w;
  const SeedSummary sa = summarize(a), sb = summarize(b);
  w.difference = sa.mean - sb.mean;
  if (sa.n < 2 || sb.n < 2) return w;
  const double va = sa.sd * sa.sd / sa.n, vb = sb.sd * sb.sd / sb.n;
  if (va + vb == 0) return w;
  w.testable = true;
  w.t = w.difference / std::sqrt(va + vb);
  w.df = (va + vb) * (va + vb) / (va * va / (sa.n - 1) + vb * vb / (sb.n - 1));
  w.significant = std::fabs(w.t) > t_quantile_975(w.df);
  return w;
}

}  // namespace vlmc::train
