// Self-Extend (docs/long-context.md; spec §7, invariant 8): the position
// maps (continuous and non-decreasing in the distance when G divides W), an
// attention layer against a double reference that rotates the projections
// at the mapped positions and takes one softmax over the merged logits (with
// GQA, with and without a window), decode == the prefill's row bit for bit,
// G = 1 and W >= length give plain attention bit for bit, and the errors.
#include <gtest/gtest.h>

#include <cmath>

#include "model/linear_attention_reference.h"
#include "model/module_harness.h"
#include "strata/model.h"
#include "test_util.h"

namespace strata::test {
namespace {

// The effective relative position of query i and key j.
int64_t relative(const SelfExtend& se, int64_t i, int64_t j) {
  return i - j < se.window ? i - j : se.query_pos(i) - se.key_pos(j);
}

TEST(SelfExtend, RelativePositionsAreMonotoneAndContinuous) {
  for (const auto& [G, W] : {std::pair<int64_t, int64_t>{2, 4}, {4, 8}, {4, 1024}, {3, 9}})
    for (int64_t i = 0; i < 3 * W + 17; ++i) {
      const SelfExtend se{G, W};
      for (int64_t j = i; j > 0; --j) {  // distance i - j growing
        const int64_t a = relative(se, i, j), b = relative(se, i, j - 1);
        ASSERT_LE(a, b) << "G " << G << " W " << W << " i " << i << " j " << j;
        ASSERT_LE(b - a, 1) << "a jump in the relative position";
      }
      if (i >= W) ASSERT_EQ(relative(se, i, i - W), W) << "not continuous at distance W";
    }
}

// y = W_o softmax-attention with the Self-Extend positions, in double.
Rows reference(const DoubleParams& p, const std::string& pre, const Rows& x, int64_t T, int64_t D, int64_t H,
               int64_t KV, int64_t hd, int64_t window, const SelfExtend& se, double theta) {
  const std::vector<double> q = ref_linear(x, T, D, p.at(pre + ".q_proj.weight"), H * hd);
  const std::vector<double> k = ref_linear(x, T, D, p.at(pre + ".k_proj.weight"), KV * hd);
  const std::vector<double> v = ref_linear(x, T, D, p.at(pre + ".v_proj.weight"), KV * hd);
  auto rotated = [&](const double* row, int64_t pos) {
    std::vector<double> r(row, row + hd);
    for (int64_t a = 0; a < hd / 2; ++a) {
      const double ang = static_cast<double>(pos) * std::pow(theta, -2.0 * a / static_cast<double>(hd));
      r[a] = row[a] * std::cos(ang) - row[a + hd / 2] * std::sin(ang);
      r[a + hd / 2] = row[a + hd / 2] * std::cos(ang) + row[a] * std::sin(ang);
    }
    return r;
  };
  std::vector<double> att(static_cast<size_t>(T * H * hd), 0.0);
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / KV);
    for (int64_t i = 0; i < T; ++i) {
      const int64_t lo = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
      std::vector<double> logit;
      for (int64_t j = lo; j <= i; ++j) {
        const bool near = !se.active() || i - j < se.window;
        const std::vector<double> qr = rotated(&q[i * H * hd + h * hd], near ? i : se.query_pos(i));
        const std::vector<double> kr = rotated(&k[j * KV * hd + g * hd], near ? j : se.key_pos(j));
        double s = 0;
        for (int64_t a = 0; a < hd; ++a) s += qr[a] * kr[a];
        logit.push_back(s / std::sqrt(static_cast<double>(hd)));
      }
      double mx = -1e300, sum = 0;
      for (double l : logit) mx = std::max(mx, l);
      for (double& l : logit) sum += (l = std::exp(l - mx));
      for (int64_t j = lo; j <= i; ++j)
        for (int64_t a = 0; a < hd; ++a) att[i * H * hd + h * hd + a] += logit[j - lo] / sum * v[j * KV * hd + g * hd + a];
    }
  }
  return ref_linear(att, T, H * hd, p.at(pre + ".o_proj.weight"), D);
}

TEST(SelfExtend, AttentionMatchesTheMergedSoftmaxReference) {
  const int64_t D = 32, H = 4, KV = 2, hd = 8, T = 45;
  for (int64_t window : {0, 20})
    for (const auto& [G, W] : {std::pair<int64_t, int64_t>{2, 4}, {4, 8}, {3, 12}}) {
      CtxConfig c = ctx_test_config("causal", D);
      c.num_attention_heads = H, c.num_key_value_heads = KV, c.head_dim = hd, c.window = window;
      const std::string pre = "model.layers.0.self_attn";
      ModuleRig rig("attention", c, pre, 3, 0.3);
      const std::vector<float> x = random_rows(T, D, 4);
      const SelfExtend se{G, W};
      Exec ex = Exec::defaults();
      Scratch scratch;
      Context ctx{ex, scratch, false, se};
      Batch b;
      b.seqs.push_back({0, T, 0});
      b.rows = T;
      std::vector<float> y(static_cast<size_t>(T * D));
      rig.module().forward(x.data(), y.data(), b, nullptr, ctx);
      const Rows want = reference(rig.double_params(), pre, Rows(x.begin(), x.end()), T, D, H, KV, hd, window, se,
                                  c.rope_theta);
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], want[i], 2e-5 * (1 + std::fabs(want[i]))) << "G " << G << " W " << W << " window " << window
                                                                     << " at " << i;
      // Decode: one row at a time from the cache, the same bits as the prefill's rows.
      auto st = rig.module().make_state();
      for (int64_t t = 0; t < T; ++t) {
        Batch s;
        s.seqs.push_back({0, 1, t});
        s.rows = 1;
        LayerState* sp[1] = {st.get()};
        std::vector<float> yt(static_cast<size_t>(D));
        rig.module().step(x.data() + t * D, yt.data(), s, sp, ctx);
        for (int64_t i = 0; i < D; ++i) ASSERT_EQ(yt[i], y[t * D + i]) << "decode row " << t;
      }
    }
}

std::vector<int32_t> ids_of(int64_t n, int64_t vocab) {
  std::vector<int32_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(static_cast<int32_t>((i * 37 + 11) % vocab));
  return v;
}

TEST(SelfExtend, ModelIdentitiesAndDecode) {
  for (DType dt : {DType::F32, DType::BF16}) {
    Config cfg = preset_config("tiny");
    cfg.torch_dtype = dt == DType::BF16 ? "bfloat16" : "float32";
    auto m = Model::random(cfg, 5, dt);
    const int64_t V = cfg.vocab_size, T = 70;
    const std::vector<int32_t> ids = ids_of(T, V);
    std::vector<float> plain, got;
    SeqInput in{ids};
    m->forward({&in, 1}, Logits::All, plain);
    for (const auto& [G, W] : {std::pair<int64_t, int64_t>{1, 4}, {4, 72}, {8, 128}}) {
      m->set_self_extend(G, W);
      m->forward({&in, 1}, Logits::All, got);
      ASSERT_EQ(got, plain) << "G " << G << " W " << W << " is plain attention";
    }
    m->set_self_extend(4, 16);
    std::vector<float> se;
    m->forward({&in, 1}, Logits::All, se);
    EXPECT_NE(se, plain);
    // Prefill 30, then steps: each step's logits are the full forward's row.
    auto st = m->new_state();
    SeqInput p{std::span<const int32_t>(ids).first(30), st.get()};
    m->forward({&p, 1}, Logits::All, got);
    for (int64_t t = 30; t < T; ++t) {
      State* s = st.get();
      m->step({&ids[t], 1}, {&s, 1}, got);
      if (dt == DType::F32) {
        ASSERT_TRUE(std::equal(got.begin(), got.end(), se.begin() + t * V)) << "step " << t;
      } else {  // BF16 products round prefill activations (as without Self-Extend)
        EXPECT_LE(relative_error(got.data(), se.data() + t * V, V), 1.0 / 32) << "step " << t;
      }
    }
    m->set_self_extend(1, 0);
    m->forward({&in, 1}, Logits::All, got);
    ASSERT_EQ(got, plain) << "turned off again";
  }
}

TEST(SelfExtend, BadSettingsAreRefused) {
  auto m = Model::random(preset_config("tiny"), 1, DType::F32);
  auto message = [&](int64_t g, int64_t w) {
    try {
      m->set_self_extend(g, w);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  EXPECT_NE(message(4, 10).find("multiple of the group size 4"), std::string::npos);
  EXPECT_NE(message(0, 8).find("at least 1"), std::string::npos);
  auto mamba = Model::random(preset_config("tiny-mamba"), 1, DType::F32);
  try {
    mamba->set_self_extend(2, 8);
    FAIL() << "a model without attention accepted Self-Extend";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no RoPE attention layer"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace strata::test
