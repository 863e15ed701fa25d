// Token mixing (spec §3.3, invariants 18-21, 29): Dirac identity, k = 1
// affine, explicit-sum and padded-convolution references, causality, decode
// from the conv window, left padding, gradients.
#include <gtest/gtest.h>

#include <cmath>

#include "model/module_harness.h"

namespace strata::test {
namespace {

const std::string kPrefix = "model.layers.0.token_mixing";

CtxConfig with_taps(int64_t k, int64_t D = 16) {
  CtxConfig c = ctx_test_config("causal", D);
  c.tm_kernel = k;
  return c;
}

TEST(TokenMix, DiracInitPassesTheInputThroughBitwise) {
  for (int64_t k : {1, 3, 4, 8}) {
    ModuleRig rig("token-mix", with_taps(k, 40), kPrefix, 1);
    std::vector<float> x = random_rows(14, 40, 2, 1e3);
    x[5] = 1e-30f;  // tiny and huge values pass unchanged too
    x[6] = 3e30f;
    const Lens lens = {9, 2, 3};
    expect_bitwise(rig.forward(x, lens), x, "k = " + std::to_string(k));
    expect_bitwise(rig.run_with_states(x, lens, {2}), x, "decode, k = " + std::to_string(k));
  }
}

TEST(TokenMix, OneTapIsAPerChannelAffineMap) {
  ModuleRig rig("token-mix", with_taps(1), kPrefix, 3, 0.7);
  const std::vector<float> x = random_rows(8, 16, 4);
  const std::vector<float> y = rig.forward(x, {5, 3});
  const float* w = rig.param(kPrefix + ".weight");
  const float* b = rig.param(kPrefix + ".bias");
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t c = 0; c < 16; ++c) {  // one rounding (fused multiply-add) or two
      const float v = y[r * 16 + c], xv = x[r * 16 + c];
      EXPECT_TRUE(v == b[c] + w[c] * xv || v == std::fma(w[c], xv, b[c])) << r << " " << c;
    }
}

// Depthwise convolution of the sequence left-padded with k-1 zero rows
// (PyTorch Conv1d(groups=D, padding=k-1) keeping the first T outputs).
Rows padded_conv(const DoubleParams& p, const Rows& x, int64_t T, int64_t D, int64_t k) {
  Rows padded(static_cast<size_t>((k - 1) * D), 0.0);
  padded.insert(padded.end(), x.begin(), x.begin() + T * D);
  const std::vector<double>& w = p.at(kPrefix + ".weight");
  const std::vector<double>& b = p.at(kPrefix + ".bias");
  Rows y(static_cast<size_t>(T * D));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < D; ++c) {
      double acc = b[c];
      for (int64_t j = 0; j < k; ++j) acc += w[c * k + j] * padded[(t + j) * D + c];
      y[t * D + c] = acc;
    }
  return y;
}

TEST(TokenMix, MatchesTheExplicitSumAndAPaddedConvolution) {
  for (int64_t k : {1, 2, 3, 5}) {
    const CtxConfig c = with_taps(k);
    ModuleRig rig("token-mix", c, kPrefix, 5, 0.5);
    const std::vector<float> x = random_rows(7, 16, 6);
    const std::vector<float> y = rig.forward(x, {7});
    const Rows xd(x.begin(), x.end());
    const Rows sum = ref_token_mix(c, rig.double_params(), kPrefix, xd, {7});
    const Rows conv = padded_conv(rig.double_params(), xd, 7, 16, k);
    for (size_t i = 0; i < y.size(); ++i) {
      EXPECT_NEAR(sum[i], conv[i], 1e-12);
      EXPECT_NEAR(y[i], sum[i], 1e-6 * (1 + std::fabs(sum[i]))) << "k " << k << " at " << i;
    }
  }
}

TEST(TokenMix, LaterRowsDoNotChangeEarlierOutputs) {
  ModuleRig rig("token-mix", with_taps(3), kPrefix, 7, 0.5);
  expect_causal(rig, random_rows(13, 16, 8), {8, 5});
}

TEST(TokenMix, DecodeFromTheConvWindowEqualsFullForward) {
  for (int64_t k : {1, 3, 5}) {  // sequences of 1 and 2 rows are shorter than the window
    ModuleRig rig("token-mix", with_taps(k), kPrefix, 9, 0.5);
    expect_decode_equals_full(rig, random_rows(19, 16, 10), {9, 1, 2, 7});
  }
}

TEST(TokenMix, LeftZeroPaddingLeavesValidOutputsUnchanged) {
  ModuleRig rig("token-mix", with_taps(4), kPrefix, 11, 0.5);
  const std::vector<float> x = random_rows(6, 16, 12);
  const std::vector<float> y = rig.forward(x, {6});
  for (int64_t pad : {1, 2, 3, 7}) {
    std::vector<float> xp(static_cast<size_t>(pad * 16), 0.0f);
    xp.insert(xp.end(), x.begin(), x.end());
    const std::vector<float> yp = rig.forward(xp, {pad + 6});
    expect_bitwise(std::vector<float>(yp.begin() + pad * 16, yp.end()), y, "pad " + std::to_string(pad));
  }
}

TEST(TokenMix, PackedBatchEqualsEachSequenceAlone) {
  ModuleRig rig("token-mix", with_taps(3), kPrefix, 13, 0.5);
  expect_batch_equals_alone(rig, random_rows(15, 16, 14), {5, 1, 9});
}

TEST(TokenMix, GradientsMatchFiniteDifferences) {
  for (int64_t k : {1, 3}) {
    const CtxConfig c = with_taps(k);
    ModuleRig rig("token-mix", c, kPrefix, 15, 0.5);
    expect_gradients_match_reference(rig, random_rows(9, 16, 16), {5, 1, 3},
                                     [&](const DoubleParams& p, const Rows& x, const Lens& l) {
                                       return ref_token_mix(c, p, kPrefix, x, l);
                                     });
  }
}

TEST(TokenMix, ResultsDoNotDependOnThreadCount) {
  ModuleRig rig("token-mix", with_taps(4, 200), kPrefix, 17, 0.3);
  expect_thread_count_invariant(rig, random_rows(73, 200, 18), {40, 33});
}

}  // namespace
}  // namespace strata::test
