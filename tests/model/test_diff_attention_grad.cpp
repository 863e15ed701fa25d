// Differential attention against an independent double-precision reference of
// the spec's formulas: the forward, and the gradient of every parameter and of
// the input against central finite differences of the reference (both layouts,
// subln on and off, KV groups shared or not). Also: the flash GQA pairing
// equals the naive one when no KV group is shared (n_rep = 1), and backward
// gives the same bits for any thread count.
#include <gtest/gtest.h>

#include <cmath>

#include "core/parallel.h"
#include "model/module_test_util.h"

namespace strata {
namespace {

using test::DiffConfig;

using test::diff_config;
using test::diff_attention_reference;
using test::random_weights;
using test::randn;
using test::TestModule;
using test::Weights;

const std::string kPrefix = "model.layers.1.self_attn";
constexpr int64_t kLayer = 1;  // the layer of kPrefix (lambda_init follows it)
using DParams = std::map<std::string, std::vector<double>>;

DParams to_double(const Weights& w) {
  DParams p;
  for (const auto& [n, v] : w) p[n] = std::vector<double>(v.begin(), v.end());
  return p;
}

struct Case {
  const char* layout;
  int64_t heads, kv_heads;
  bool subln, out_scale;
};

class DiffAttentionGrad : public ::testing::TestWithParam<Case> {};

TEST_P(DiffAttentionGrad, ForwardAndGradientsMatchTheDoubleReference) {
  const Case k = GetParam();
  const int64_t D = 16, hd = 4;
  DiffConfig c = diff_config(k.layout, k.heads, k.kv_heads, hd, D, k.subln, k.out_scale);
  Weights w = random_weights(*test::make_diff(c, kPrefix, kLayer), 21, 0.4f);
  if (k.subln) w[kPrefix + ".subln.weight"] = randn(w[kPrefix + ".subln.weight"].size(), 22, 0.3f);
  if (k.subln)
    for (float& v : w[kPrefix + ".subln.weight"]) v += 1.0f;
  TestModule m("diff-attn", c, kPrefix, w, /*train=*/true);
  const std::vector<int64_t> lens = {5, 3};
  const int64_t rows = 8;
  const auto x = randn(rows * D, 23);
  const auto R = randn(rows * D, 24);  // loss = Σ y ⊙ R, so dy = R

  DParams p = to_double(w);
  std::vector<double> xd(x.begin(), x.end());
  const auto y = m.forward(x, lens);
  const auto y_ref = diff_attention_reference(c, kPrefix, p, xd, lens);
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y_ref[i], 1e-5 * (1 + std::fabs(y_ref[i]))) << i;

  const auto dx = m.backward(R, lens, D);
  auto loss = [&]() {
    const auto yr = diff_attention_reference(c, kPrefix, p, xd, lens);
    double l = 0;
    for (size_t i = 0; i < yr.size(); ++i) l += yr[i] * R[i];
    return l;
  };
  // Every entry of every tensor: central differences, step 1e-6, in double.
  auto check = [&](const std::string& what, std::vector<double>& v, const float* g) {
    std::vector<double> fd(v.size());
    double largest = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const double saved = v[i], eps = 1e-6;
      v[i] = saved + eps;
      const double up = loss();
      v[i] = saved - eps;
      const double down = loss();
      v[i] = saved;
      fd[i] = (up - down) / (2 * eps);
      largest = std::max(largest, std::fabs(fd[i]));
    }
    EXPECT_GT(largest, 1e-3) << what << ": the check needs a gradient that is not ~0";
    for (size_t i = 0; i < v.size(); ++i)
      ASSERT_NEAR(g[i], fd[i], 1e-4 * largest + 1e-3 * std::fabs(fd[i])) << what << "[" << i << "]";
  };
  for (const ParamDecl& d : m.m->params()) {
    if (!d.trainable) {
      EXPECT_EQ(m.grads.count(d.name), 0u) << d.name;
      continue;
    }
    check(d.name, p[d.name], m.grads.at(d.name).f32());
  }
  check("input", xd, dx.data());
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, DiffAttentionGrad,
    ::testing::Values(Case{"paper", 4, 2, true, true}, Case{"paper", 4, 2, false, false},
                      Case{"paper", 8, 2, true, false}, Case{"expanded", 4, 2, true, true},
                      Case{"expanded", 4, 2, false, true}, Case{"expanded", 4, 4, false, false}),
    [](const auto& info) {
      const Case& k = info.param;
      return std::string(k.layout) + "_h" + std::to_string(k.heads) + "_kv" + std::to_string(k.kv_heads) +
             (k.subln ? "_subln" : "_nosubln") + (k.out_scale ? "_scaled" : "_unscaled");
    });

// Invariant 12, second half: without shared KV groups the flash pairing (both
// components of head h use group h's key sub-heads 2h, 2h + 1) and the naive
// one (sub-head m uses key sub-head m / n_rep) coincide; with sharing they
// differ, and the module follows the flash variant.
TEST(DiffAttentionPairing, FlashEqualsNaiveWithoutSharedGroups) {
  const int64_t D = 16, hd = 4;
  for (int64_t kv : {4, 2}) {
    DiffConfig c = diff_config("expanded", 4, kv, hd, D, true, true);
    Weights w = random_weights(*test::make_diff(c, kPrefix, kLayer), 31, 0.5f);
    TestModule m("diff-attn", c, kPrefix, w);
    const std::vector<int64_t> lens = {7};
    const auto x = randn(7 * D, 32);
    const auto y = m.forward(x, lens);
    const DParams p = to_double(w);
    const std::vector<double> xd(x.begin(), x.end());
    const auto flash = diff_attention_reference(c, kPrefix, p, xd, lens, false);
    const auto naive = diff_attention_reference(c, kPrefix, p, xd, lens, true);
    double naive_gap = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_NEAR(y[i], flash[i], 1e-5 * (1 + std::fabs(flash[i])));
      naive_gap = std::max(naive_gap, std::fabs(flash[i] - naive[i]));
    }
    if (kv == 4) EXPECT_EQ(naive_gap, 0.0);
    else EXPECT_GT(naive_gap, 1e-3);
  }
}

TEST(DiffAttentionThreads, BackwardGivesTheSameBitsForAnyThreadCount) {
  const int64_t D = 32;
  DiffConfig c = diff_config("paper", 8, 4, 8, D, true, true);
  const Weights w = random_weights(*test::make_diff(c, kPrefix, kLayer), 41);
  const std::vector<int64_t> lens = {40, 17, 3, 64};
  const auto x = randn(124 * D, 42), dy = randn(124 * D, 43);
  std::map<std::string, std::vector<float>> grads[2];
  std::vector<float> dx[2];
  const int saved = num_threads();
  for (int t = 0; t < 2; ++t) {
    set_num_threads(t + 1);
    TestModule m("diff-attn", c, kPrefix, w, true);
    m.forward(x, lens);
    dx[t] = m.backward(dy, lens, D);
    for (const auto& [n, g] : m.grads) grads[t][n] = std::vector<float>(g.f32(), g.f32() + g.numel());
  }
  set_num_threads(saved);
  EXPECT_EQ(dx[0], dx[1]);
  EXPECT_EQ(grads[0], grads[1]);
}

}  // namespace
}  // namespace strata
