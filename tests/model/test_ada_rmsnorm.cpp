// AdaRMSNorm (spec §3.2, invariants 14-17, 29): identity at init, bounded
// modulation, scale invariance, causal and global context, decode from
// running sums, gradients.
#include <gtest/gtest.h>

#include "core/cpu.h"
#include "model/module_harness.h"
#include "strata/error.h"

namespace strata::test {
namespace {

const std::string kPrefix = "model.layers.0.input_layernorm";

class AdaRmsNorm : public ::testing::TestWithParam<std::string> {
 protected:
  CtxConfig cfg(int64_t D = 16) const { return ctx_test_config(GetParam(), D); }
  bool causal() const { return GetParam() == "causal"; }
};

// Modulation factor of every output element: y / (weight ⊙ x̂), weight = 1.
std::vector<double> modulation(const std::vector<float>& x, const std::vector<float>& y, int64_t D, double eps) {
  std::vector<double> m(x.size());
  for (size_t r = 0; r < x.size() / D; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(x[r * D + i]) * x[r * D + i];
    const double inv = 1.0 / std::sqrt(ss / D + eps);
    for (int64_t i = 0; i < D; ++i) m[r * D + i] = y[r * D + i] / (x[r * D + i] * inv);
  }
  return m;
}

TEST_P(AdaRmsNorm, ZeroCtxUpIsRmsNormBitwiseOnEveryPath) {
  const Isa saved = active_isa();
  for (Isa isa : kAllIsas) {
    if (!isa_supported(isa)) continue;
    set_active_isa(isa);
    for (DType dt : {DType::F32, DType::BF16}) {
      for (int64_t rank : {int64_t{4}, int64_t{0}}) {
        CtxConfig c = cfg(80);  // not a multiple of the vector width: tails too
        c.ada_rank = rank;
        ModuleRig ada("ada-rmsnorm", c, kPrefix, 1, 0.0, dt);
        ModuleRig plain("rmsnorm", c, kPrefix, 2);
        const std::vector<float> w = random_rows(1, 80, 3);
        std::copy(w.begin(), w.end(), ada.param(kPrefix + ".weight"));
        std::copy(w.begin(), w.end(), plain.param(kPrefix + ".weight"));
        const Lens lens = {7, 20, 1};
        const std::vector<float> x = random_rows(28, 80, 4, 30.0);
        const std::string what = std::string(isa_name(isa)) + " " + std::string(dtype_name(dt)) + " rank " +
                                 std::to_string(rank);
        expect_bitwise(ada.forward(x, lens), plain.forward(x, lens), what);
        EXPECT_EQ(ada.module().params().size(), rank > 0 ? 3u : 1u);
      }
    }
  }
  set_active_isa(saved);
}

TEST_P(AdaRmsNorm, ModulationStaysInsideZeroToTwo) {
  ModuleRig rig("ada-rmsnorm", cfg(), kPrefix, 5, 0.0);
  Rng rng(6);
  float* up = rig.param(kPrefix + ".ctx_up.weight");
  // Large enough to move the factor far from 1, small enough that tanh does
  // not round to ±1 in F32 (it does for |g| > 9: the factor is then 0 or 2).
  for (int i = 0; i < 16 * 4; ++i) up[i] = static_cast<float>(rng.normal() * 1.5);
  const Lens lens = {9, 4};
  const std::vector<float> x = random_rows(13, 16, 7, 2.0);
  const std::vector<double> m = modulation(x, rig.forward(x, lens), 16, 1e-5);
  double lo = 2, hi = 0;
  for (double v : m) {
    EXPECT_GT(v, 0.0);
    EXPECT_LT(v, 2.0);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  EXPECT_LT(lo, 0.6);  // the factor really moves
  EXPECT_GT(hi, 1.4);
}

TEST_P(AdaRmsNorm, InvariantToScalingTheInputSequence) {
  ModuleRig rig("ada-rmsnorm", cfg(), kPrefix, 8, 0.5);
  const Lens lens = {6, 3};
  const std::vector<float> x = random_rows(9, 16, 9, 10.0);
  const std::vector<float> y = rig.forward(x, lens);
  for (float alpha : {0.5f, 4.0f, 100.0f}) {
    std::vector<float> xs = x;
    for (float& v : xs) v *= alpha;
    const std::vector<float> ys = rig.forward(xs, lens);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(ys[i], y[i], 1e-5 * (1 + std::fabs(y[i]))) << "alpha " << alpha;
  }
}

TEST_P(AdaRmsNorm, PackedBatchEqualsEachSequenceAlone) {
  ModuleRig rig("ada-rmsnorm", cfg(), kPrefix, 10, 0.5);
  expect_batch_equals_alone(rig, random_rows(15, 16, 11), {5, 1, 9});
}

TEST_P(AdaRmsNorm, GradientsMatchFiniteDifferences) {
  const CtxConfig c = cfg();
  ModuleRig rig("ada-rmsnorm", c, kPrefix, 12, 0.3);
  expect_gradients_match_reference(rig, random_rows(9, 16, 13), {5, 1, 3},
                                   [&](const DoubleParams& p, const Rows& x, const Lens& l) {
                                     return ref_ada_rmsnorm(c, p, kPrefix, x, l);
                                   });
}

TEST_P(AdaRmsNorm, RankZeroGradientsMatchFiniteDifferences) {
  CtxConfig c = cfg();
  c.ada_rank = 0;
  ModuleRig rig("ada-rmsnorm", c, kPrefix, 14, 0.3);
  EXPECT_TRUE(rig.module().causal());
  EXPECT_EQ(rig.module().make_state(), nullptr);
  expect_gradients_match_reference(rig, random_rows(7, 16, 15), {4, 3},
                                   [&](const DoubleParams& p, const Rows& x, const Lens& l) {
                                     return ref_ada_rmsnorm(c, p, kPrefix, x, l);
                                   });
}

TEST_P(AdaRmsNorm, ResultsDoNotDependOnThreadCount) {
  ModuleRig rig("ada-rmsnorm", cfg(200), kPrefix, 16, 0.2);
  expect_thread_count_invariant(rig, random_rows(73, 200, 17), {40, 33});
}

INSTANTIATE_TEST_SUITE_P(CtxMode, AdaRmsNorm, ::testing::Values("causal", "global"),
                         [](const auto& info) { return info.param; });

TEST(AdaRmsNormCausal, LaterRowsDoNotChangeEarlierOutputs) {
  ModuleRig rig("ada-rmsnorm", ctx_test_config("causal"), kPrefix, 20, 0.5);
  expect_causal(rig, random_rows(12, 16, 21), {7, 5});
}

TEST(AdaRmsNormCausal, DecodeFromRunningSumsEqualsFullForward) {
  ModuleRig rig("ada-rmsnorm", ctx_test_config("causal"), kPrefix, 22, 0.5);
  expect_decode_equals_full(rig, random_rows(17, 16, 23), {9, 1, 7});
}

TEST(AdaRmsNormGlobal, EveryPositionGetsTheSameModulation) {
  CtxConfig c = ctx_test_config("global");
  ModuleRig rig("ada-rmsnorm", c, kPrefix, 24, 0.0);
  Rng rng(25);
  float* up = rig.param(kPrefix + ".ctx_up.weight");
  for (int i = 0; i < 16 * 4; ++i) up[i] = static_cast<float>(rng.normal());
  const Lens lens = {6, 4};
  const std::vector<float> x = random_rows(10, 16, 26);
  const std::vector<double> m = modulation(x, rig.forward(x, lens), 16, 1e-5);
  int64_t row0 = 0;
  for (int64_t len : lens) {
    for (int64_t t = 1; t < len; ++t)
      for (int64_t i = 0; i < 16; ++i) EXPECT_NEAR(m[(row0 + t) * 16 + i], m[row0 * 16 + i], 1e-6);
    row0 += len;
  }
  EXPECT_FALSE(rig.module().causal());
  EXPECT_EQ(rig.module().make_state(), nullptr);
}

TEST(AdaRmsNormGlobal, LastPositionEqualsTheCausalOutput) {
  ModuleRig global("ada-rmsnorm", ctx_test_config("global"), kPrefix, 27, 0.5);
  ModuleRig causal("ada-rmsnorm", ctx_test_config("causal"), kPrefix, 27, 0.5);  // same parameters
  const Lens lens = {6, 1, 11};
  const std::vector<float> x = random_rows(18, 16, 28);
  const std::vector<float> g = global.forward(x, lens), c = causal.forward(x, lens);
  int64_t row0 = 0;
  for (int64_t len : lens) {
    row0 += len;
    for (int64_t i = 0; i < 16; ++i) EXPECT_EQ(g[(row0 - 1) * 16 + i], c[(row0 - 1) * 16 + i]);
  }
  EXPECT_NE(g[0], c[0]);  // the first row of a longer sequence does differ
}

TEST(AdaRmsNormGlobal, RefusesDecodeStates) {
  ModuleRig rig("ada-rmsnorm", ctx_test_config("causal"), kPrefix, 29, 0.5);
  auto state = rig.module().make_state();  // a causal state handed to a global module
  ModuleRig global("ada-rmsnorm", ctx_test_config("global"), kPrefix, 29, 0.5);
  const std::vector<float> x = random_rows(2, 16, 30);
  std::vector<float> y(x.size());
  LayerState* st = state.get();
  Scratch scratch;
  const Exec ex = Exec::defaults();
  Context ctx{ex, scratch, false};
  EXPECT_THROW(global.module().forward(x.data(), y.data(), packed_batch({2}), &st, ctx), Error);
}

}  // namespace
}  // namespace strata::test
