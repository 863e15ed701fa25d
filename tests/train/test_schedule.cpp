// Learning-rate schedule: warmup, cosine decay, constant case.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "strata/error.h"
#include "test_util.h"
#include "train/schedule.h"

namespace strata {
namespace {

TEST(Schedule, LinearWarmupFromZero) {
  const LrSchedule s{1e-3, 1e-4, 10, 110};
  EXPECT_DOUBLE_EQ(lr_at(1, s), 1e-4);  // lr * 1/10
  EXPECT_DOUBLE_EQ(lr_at(5, s), 5e-4);
  EXPECT_DOUBLE_EQ(lr_at(10, s), 1e-3);  // peak at the last warmup step
}

TEST(Schedule, CosineMidpointAndEnd) {
  const LrSchedule s{1e-3, 1e-4, 10, 110};
  EXPECT_DOUBLE_EQ(lr_at(60, s), 0.5 * (1e-3 + 1e-4));  // half way through the decay
  const double p = 25.0 / 100.0;
  EXPECT_DOUBLE_EQ(lr_at(35, s), 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + std::cos(std::numbers::pi * p)));
  EXPECT_LT(lr_at(11, s), 1e-3);
  EXPECT_GT(lr_at(11, s), lr_at(12, s));
  EXPECT_EQ(lr_at(110, s), 1e-4);  // the last step uses min_lr
  EXPECT_EQ(lr_at(500, s), 1e-4);
  for (int64_t t = 11; t < 110; ++t) EXPECT_GE(lr_at(t, s), lr_at(t + 1, s)) << t;
}

TEST(Schedule, ConstantAndNoWarmup) {
  const LrSchedule c{3e-4, 3e-4, 0, 100};
  for (int64_t t : {1, 2, 50, 99, 100, 1000}) EXPECT_EQ(lr_at(t, c), 3e-4) << t;
  const LrSchedule d{1e-3, 0.0, 0, 4};
  EXPECT_DOUBLE_EQ(lr_at(1, d), 0.5e-3 * (1 + std::cos(std::numbers::pi * 0.25)));
  EXPECT_DOUBLE_EQ(lr_at(2, d), 0.5e-3);
  EXPECT_EQ(lr_at(4, d), 0.0);
  const LrSchedule w{1e-3, 1e-4, 20, 10};  // warmup longer than the run: warmup wins
  EXPECT_DOUBLE_EQ(lr_at(10, w), 0.5e-3);
}

TEST(Schedule, Validation) {
  EXPECT_NE(test::error_of([] { validate(LrSchedule{-1, 0, 0, 10}); }).find("learning rate"), std::string::npos);
  EXPECT_NE(test::error_of([] { validate(LrSchedule{1, 0, -1, 10}); }).find("warmup"), std::string::npos);
  EXPECT_NE(test::error_of([] { validate(LrSchedule{1, 0, 0, 0}); }).find("total steps"), std::string::npos);
  EXPECT_EQ(test::error_of([] { validate(LrSchedule{1e-3, 1e-4, 10, 100}); }), "<no error>");
  EXPECT_NE(test::error_of([] { lr_at(0, LrSchedule{}); }).find("step must be >= 1"), std::string::npos);
}

}  // namespace
}  // namespace strata
