// Learning-rate schedules as pure functions of the step: a multiplier of each
// group's base lr (apply with AdamW::set_lr_multiplier), as PyTorch's LambdaLR.
#pragma once

#include <cstdint>

namespace vlmc::optim {

// Hugging Face's warmup length from a ratio: ceil(warmup_ratio * total_steps).
// LLaVA's 0.03 of 20 steps is 1 step.
int64_t warmup_steps_from_ratio(double warmup_ratio, int64_t total_steps);

// transformers.get_cosine_schedule_with_warmup (num_cycles 0.5), with a floor as
// its cosine_with_min_lr variant. For step (0-based, the number of optimizer
// steps already taken; the update at that step uses this multiplier):
//   step < warmup: step / max(1, warmup)            (so the first step's lr is 0)
//   else: p = (step - warmup) / max(1, total - warmup)
//         min_lr_ratio + (1 - min_lr_ratio) * max(0, 0.5 * (1 + cos(pi * p)))
struct CosineWithWarmup {
  int64_t total_steps = 1;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;

  // Checks total_steps >= 1, 0 <= warmup_steps, 0 <= min_lr_ratio <= 1.
  CosineWithWarmup(int64_t total_steps, int64_t warmup_steps, double min_lr_ratio = 0.0);
  static CosineWithWarmup from_ratio(int64_t total_steps, double warmup_ratio,
                                     double min_lr_ratio = 0.0);

  double multiplier(int64_t step) const;
};

}  // namespace vlmc::optim
