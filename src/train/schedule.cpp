// Warmup + cosine learning-rate schedule (formula in schedule.h).
#include "train/schedule.h"

#include <cmath>
#include <numbers>

#include "strata/error.h"

namespace strata {

void validate(const LrSchedule& s) {
  if (!(s.lr >= 0) || !std::isfinite(s.lr)) fail("learning rate must be finite and >= 0, got ", s.lr);
  if (!(s.min_lr >= 0) || !std::isfinite(s.min_lr)) fail("min learning rate must be finite and >= 0, got ", s.min_lr);
  if (s.warmup < 0) fail("warmup must be >= 0 steps, got ", s.warmup);
  if (s.total_steps < 1) fail("total steps must be >= 1, got ", s.total_steps);
}

double lr_at(int64_t step, const LrSchedule& s) {
  if (step < 1) fail("lr_at: step must be >= 1, got ", step);
  if (step <= s.warmup) return s.lr * static_cast<double>(step) / static_cast<double>(s.warmup);
  if (step >= s.total_steps) return s.min_lr;
  const double progress = static_cast<double>(step - s.warmup) / static_cast<double>(s.total_steps - s.warmup);
  return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace strata
