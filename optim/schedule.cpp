// Learning-rate schedules (see schedule.h).
#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace vlmc::optim {

int64_t warmup_steps_from_ratio(double warmup_ratio, int64_t total_steps) {
  VLMC_CHECK(warmup_ratio >= 0 && warmup_ratio <= 1, "warmup_steps_from_ratio: warmup_ratio ",
             warmup_ratio, " must be in [0, 1]");
  VLMC_CHECK(total_steps >= 0, "warmup_steps_from_ratio: total_steps ", total_steps,
             " must be >= 0");
  // Same product order as transformers (num_training_steps * warmup_ratio).
  return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

CosineWithWarmup::CosineWithWarmup(int64_t total, int64_t warmup, double min_lr)
    : total_steps(total), warmup_steps(warmup), min_lr_ratio(min_lr) {
  VLMC_CHECK(total_steps >= 1, "CosineWithWarmup: total_steps ", total_steps, " must be >= 1");
  VLMC_CHECK(warmup_steps >= 0, "CosineWithWarmup: warmup_steps ", warmup_steps, " must be >= 0");
  VLMC_CHECK(min_lr_ratio >= 0 && min_lr_ratio <= 1, "CosineWithWarmup: min_lr_ratio ",
             min_lr_ratio, " must be in [0, 1]");
}

CosineWithWarmup CosineWithWarmup::from_ratio(int64_t total, double warmup_ratio, double min_lr) {
  return CosineWithWarmup(total, warmup_steps_from_ratio(warmup_ratio, total), min_lr);
}

double CosineWithWarmup::multiplier(int64_t step) const {
  VLMC_CHECK(step >= 0, "CosineWithWarmup: step ", step, " must be >= 0");
  if (step < warmup_steps)
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  const double progress = static_cast<double>(step - warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  // Past total_steps the cosine climbs again, as transformers' (num_cycles 0.5).
  const double cosine = std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  return min_lr_ratio + (1.0 - min_lr_ratio) * cosine;
}

}  // namespace vlmc::optim
