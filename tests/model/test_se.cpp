// SE gate (spec §3.4, invariants 22-24, 29): identity at init, gate in
// (0, 2), causal squeeze with decode from running sums, global squeeze
// (permutation equivariance), gradients.
#include <gtest/gtest.h>

#include "core/cpu.h"
#include "model/module_harness.h"

namespace strata::test {
namespace {

const std::string kPrefix = "model.layers.0.se";

class Se : public ::testing::TestWithParam<std::string> {
 protected:
  CtxConfig cfg(int64_t D = 16) const { return ctx_test_config(GetParam(), D); }
};

TEST_P(Se, ZeroFc2IsTheIdentityBitwiseOnEveryPath) {
  const Isa saved = active_isa();
  for (Isa isa : kAllIsas) {
    if (!isa_supported(isa)) continue;
    set_active_isa(isa);
    for (DType dt : {DType::F32, DType::BF16}) {
      ModuleRig rig("se", cfg(64), kPrefix, 1, 0.0, dt);
      Rng rng(2);
      float* b1 = rig.param(kPrefix + ".fc1.bias");
      for (int i = 0; i < 16; ++i) b1[i] = static_cast<float>(rng.normal());
      std::vector<float> x = random_rows(40, 64, 3, 100.0);
      const Lens lens = {3, 20, 17};
      expect_bitwise(rig.forward(x, lens), x, std::string(isa_name(isa)) + " " + std::string(dtype_name(dt)));
    }
  }
  set_active_isa(saved);
}

TEST_P(Se, GateStaysInsideZeroToTwo) {
  ModuleRig rig("se", cfg(), kPrefix, 4, 0.0);
  Rng rng(5);
  float* fc2 = rig.param(kPrefix + ".fc2.weight");
  // Large enough to move the gate far from 1, small enough that σ does not
  // round to 0 or 1 in F32 (it does for |z| > 17: the gate is then 0 or 2).
  for (int i = 0; i < 16 * 4; ++i) fc2[i] = static_cast<float>(rng.normal() * 1.5);
  const std::vector<float> x = random_rows(12, 16, 6, 2.0);
  const std::vector<float> y = rig.forward(x, {8, 4});
  double lo = 2, hi = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double gate = static_cast<double>(y[i]) / x[i];
    EXPECT_GT(gate, 0.0);
    EXPECT_LT(gate, 2.0);
    lo = std::min(lo, gate);
    hi = std::max(hi, gate);
  }
  EXPECT_LT(lo, 0.6);  // the gate really moves
  EXPECT_GT(hi, 1.4);
}

TEST_P(Se, PackedBatchEqualsEachSequenceAlone) {
  ModuleRig rig("se", cfg(), kPrefix, 7, 0.5);
  expect_batch_equals_alone(rig, random_rows(15, 16, 8), {5, 1, 9});
}

TEST_P(Se, GradientsMatchFiniteDifferences) {
  const CtxConfig c = cfg();
  ModuleRig rig("se", c, kPrefix, 9, 0.4);
  expect_gradients_match_reference(rig, random_rows(9, 16, 10), {5, 1, 3},
                                   [&](const DoubleParams& p, const Rows& x, const Lens& l) {
                                     return ref_se(c, p, kPrefix, x, l);
                                   });
}

TEST_P(Se, ResultsDoNotDependOnThreadCount) {
  ModuleRig rig("se", cfg(256), kPrefix, 11, 0.2);
  expect_thread_count_invariant(rig, random_rows(73, 256, 12), {40, 33});
}

INSTANTIATE_TEST_SUITE_P(CtxMode, Se, ::testing::Values("causal", "global"),
                         [](const auto& info) { return info.param; });

TEST(SeCausal, LaterRowsDoNotChangeEarlierOutputs) {
  ModuleRig rig("se", ctx_test_config("causal"), kPrefix, 13, 0.5);
  expect_causal(rig, random_rows(12, 16, 14), {7, 5});
}

TEST(SeCausal, DecodeFromRunningSumsEqualsFullForward) {
  ModuleRig rig("se", ctx_test_config("causal"), kPrefix, 15, 0.5);
  expect_decode_equals_full(rig, random_rows(17, 16, 16), {9, 1, 7});
}

TEST(SeGlobal, PermutingPositionsPermutesOutputs) {
  ModuleRig rig("se", ctx_test_config("global"), kPrefix, 17, 0.5);
  const int64_t T = 9, D = 16;
  const std::vector<float> x = random_rows(T, D, 18);
  const std::vector<float> y = rig.forward(x, {T});
  const std::vector<int64_t> perm = {4, 8, 0, 3, 7, 1, 6, 2, 5};
  std::vector<float> xp(x.size());
  for (int64_t t = 0; t < T; ++t) std::copy(&x[perm[t] * D], &x[perm[t] * D] + D, &xp[t * D]);
  const std::vector<float> yp = rig.forward(xp, {T});
  // The squeeze sums in a different order: equal to F32 rounding.
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) EXPECT_NEAR(yp[t * D + i], y[perm[t] * D + i], 1e-6 * (1 + std::fabs(y[perm[t] * D + i])));
  EXPECT_FALSE(rig.module().causal());
  EXPECT_EQ(rig.module().make_state(), nullptr);
}

TEST(SeGlobal, LastPositionEqualsTheCausalOutput) {
  ModuleRig global("se", ctx_test_config("global"), kPrefix, 19, 0.5);
  ModuleRig causal("se", ctx_test_config("causal"), kPrefix, 19, 0.5);  // same parameters
  const Lens lens = {6, 1, 11};
  const std::vector<float> x = random_rows(18, 16, 20);
  const std::vector<float> g = global.forward(x, lens), c = causal.forward(x, lens);
  int64_t row0 = 0;
  for (int64_t len : lens) {
    row0 += len;
    for (int64_t i = 0; i < 16; ++i) EXPECT_EQ(g[(row0 - 1) * 16 + i], c[(row0 - 1) * 16 + i]);
  }
}

}  // namespace
}  // namespace strata::test
