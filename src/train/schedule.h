// Learning-rate schedule: linear warmup, then cosine decay to min_lr.
//
// For a 1-based step s, W = warmup, N = total_steps:
//   s <= W:       lr * s / W                                   (warmup from 0: step 1 gets lr/W)
//   W < s < N:    min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * (s - W) / (N - W)))
//   s >= N:       min_lr                                       (the last step uses min_lr)
// computed in double. The curve is continuous: at s = W the cosine term gives lr.
// warmup = 0 with min_lr == lr is a constant rate (exactly lr at every step).
#pragma once
#include <cstdint>

namespace strata {

struct LrSchedule {
  double lr = 3e-4;
  double min_lr = 3e-5;
  int64_t warmup = 0;
  int64_t total_steps = 1;
};

// Throws strata::Error for a negative rate or warmup, or total_steps < 1.
void validate(const LrSchedule& s);
double lr_at(int64_t step, const LrSchedule& s);

}  // namespace strata
