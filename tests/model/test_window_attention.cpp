// Sliding-window attention (spec §3, invariant 5): the window masks exactly
// the keys it should, decoding from a ring of w positions equals the full
// forward bit for bit far past w, the state stays w positions long, gradients
// match finite differences of a double reference, and a model of windowed
// layers decodes like it prefills.
#include <gtest/gtest.h>

#include <cmath>

#include "model/module_harness.h"
#include "model/modules/attention_core.h"
#include "model/recipes.h"
#include "model/layers.h"
#include "strata/model.h"
#include "test_util.h"

namespace strata::test {
namespace {

const std::string kPrefix = "model.layers.0.self_attn";

// 4 query heads over 2 KV heads of 8, window w.
CtxConfig window_config(int64_t w) {
  CtxConfig c;
  static_cast<Config&>(c) = llama_config(64, 32, 64, 1, 4, 2, 256, false);
  c.rms_norm_eps = 1e-5;
  c.window = w;
  return c;
}

// Attention in double: RoPE (rotate_half), GQA, each query over its last w keys.
Rows ref_window_attention(const CtxConfig& c, const DoubleParams& p, const Rows& x, const Lens& lens) {
  const int64_t D = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads, hd = c.head_dim;
  auto W = [&](const char* n) -> const std::vector<double>& { return p.at(kPrefix + "." + n); };
  Rows q = ref_linear(x, D, W("q_proj.weight"), H * hd), k = ref_linear(x, D, W("k_proj.weight"), KV * hd),
       v = ref_linear(x, D, W("v_proj.weight"), KV * hd);
  std::vector<int64_t> pos;
  for (int64_t n : lens)
    for (int64_t t = 0; t < n; ++t) pos.push_back(t);
  ref_rope(q, H, hd, pos, c.rope_theta);
  ref_rope(k, KV, hd, pos, c.rope_theta);
  Rows att(pos.size() * H * hd, 0.0);
  int64_t row0 = 0;
  for (int64_t n : lens) {
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < n; ++t) {
        const int64_t lo = c.window > 0 ? std::max<int64_t>(0, t - c.window + 1) : 0, g = h / (H / KV);
        std::vector<double> s;
        double mx = -1e300, sum = 0;
        for (int64_t u = lo; u <= t; ++u) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += q[((row0 + t) * H + h) * hd + i] * k[((row0 + u) * KV + g) * hd + i];
          s.push_back(d / std::sqrt(static_cast<double>(hd)));
          mx = std::max(mx, s.back());
        }
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (int64_t u = lo; u <= t; ++u)
          for (int64_t i = 0; i < hd; ++i)
            att[((row0 + t) * H + h) * hd + i] += s[u - lo] / sum * v[((row0 + u) * KV + g) * hd + i];
      }
    row0 += n;
  }
  return ref_linear(att, H * hd, W("o_proj.weight"), D);
}

class WindowAttention : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam())) GTEST_SKIP() << "ISA " << isa_name(GetParam()) << " not on this CPU: skipping";
    saved_ = active_isa();
    set_active_isa(GetParam());
  }
  void TearDown() override {
    if (!IsSkipped()) set_active_isa(saved_);
  }
  Isa saved_ = Isa::Scalar;
};

// Invariant 5: ring-buffer decode with w slots equals the parallel form for
// L >> w (here 3w + 5 and more), for every prefill split and chunking.
TEST_P(WindowAttention, RingDecodeEqualsFullForwardFarPastTheWindow) {
  for (int64_t w : {1, 3, 6}) {
    ModuleRig rig("attention", window_config(w), kPrefix, 1, 0.3);
    const Lens lens = {3 * w + 5, 2, 2 * w + 1};
    expect_decode_equals_full(rig, random_rows(total_rows(lens), 32, 2), lens);
  }
}

TEST_P(WindowAttention, OnlyTheLastWPositionsReachAnOutput) {
  const int64_t w = 5, T = 20, D = 32;
  ModuleRig rig("attention", window_config(w), kPrefix, 3, 0.3);
  const std::vector<float> x = random_rows(T, D, 4);
  const std::vector<float> base = rig.forward(x, {T});
  for (int64_t s : {0, 7, 13}) {
    std::vector<float> xp = x;
    for (int64_t i = 0; i < D; ++i) xp[s * D + i] += 0.75f;
    const std::vector<float> y = rig.forward(xp, {T});
    for (int64_t t = 0; t < T; ++t) {
      const bool seen = t >= s && t < s + w;  // position s is in t's window
      const bool same = std::memcmp(&y[t * D], &base[t * D], D * sizeof(float)) == 0;
      EXPECT_EQ(same, !seen) << "row " << t << " after changing row " << s;
    }
  }
}

TEST_P(WindowAttention, WindowAsLongAsTheSequenceIsFullAttentionBitwise) {
  ModuleRig full("attention", window_config(0), kPrefix, 5, 0.3), wide("attention", window_config(24), kPrefix, 5, 0.3);
  const std::vector<float> x = random_rows(24 + 9, 32, 6);
  expect_bitwise(wide.forward(x, {24, 9}), full.forward(x, {24, 9}), "window 24 over sequences of 24 and 9");
}

INSTANTIATE_TEST_SUITE_P(Isa, WindowAttention, ::testing::Values(Isa::Scalar, Isa::Avx2, Isa::Avx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

TEST(WindowAttentionGrad, GradientsMatchFiniteDifferencesOfADoubleReference) {
  for (int64_t w : {1, 3, 0}) {
    const CtxConfig c = window_config(w);
    ModuleRig rig("attention", c, kPrefix, 7, 0.3);
    expect_gradients_match_reference(rig, random_rows(11, 32, 8), {7, 4},
                                     [&](const DoubleParams& p, const Rows& x, const Lens& l) {
                                       return ref_window_attention(c, p, x, l);
                                     });
  }
}

TEST(WindowAttentionState, TheRingHoldsWPositionsWhateverTheLength) {
  const int64_t w = 6;
  ModuleRig rig("attention", window_config(w), kPrefix, 9, 0.3);
  const StateSize size = rig.module().state_size();
  EXPECT_EQ(size.max_tokens, w);
  EXPECT_EQ(size.bytes_per_token, 2 * 16 * 4);  // keys and values of 2 KV heads of 8, F32
  EXPECT_EQ(size.at(1000), size.at(w));
  auto st = rig.module().make_state();
  EXPECT_STREQ(st->kind(), "kv-cache");
  const std::vector<float> x = random_rows(40, 32, 10);
  std::vector<float> y(x.size());
  Scratch scratch;
  const Exec ex = Exec::defaults();
  Context ctx{ex, scratch, false};
  LayerState* sp = st.get();
  for (int64_t done = 0; done < 40; done += 10) {
    Batch b{{{0, 10, done}}, 10};
    rig.module().forward(x.data() + done * 32, y.data() + done * 32, b, &sp, ctx);
    EXPECT_EQ(st->bytes(), size.at(done + 10)) << "after " << done + 10 << " positions";
  }
  // A state of another window is refused by name.
  auto other = ModuleRig("attention", window_config(w + 1), kPrefix, 9).module().make_state();
  LayerState* op = other.get();
  Batch b{{{0, 1, 0}}, 1};
  EXPECT_NE(test::error_of([&] { rig.module().forward(x.data(), y.data(), b, &op, ctx); }).find("window 7"), std::string::npos);
  // A state of another kind is refused by the one checked accessor, naming both kinds and the module.
  CtxConfig tc = window_config(w);
  auto conv = ModuleRig("token-mix", tc, "model.layers.0.token_mixing", 9).module().make_state();
  LayerState* cp = conv.get();
  const std::string msg = test::error_of([&] { rig.module().forward(x.data(), y.data(), b, &cp, ctx); });
  EXPECT_NE(msg.find("'conv-window', not the 'kv-cache'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(kPrefix), std::string::npos) << msg;
}

// A model of windowed layers (a Mistral-like pattern): cached decode equals
// the full forward at every position, far past the window.
TEST(WindowAttentionModel, DecodeEqualsFullForwardPastTheWindow) {
  Config c = preset_config("tiny");
  set_layers(c, "custom", {{sublayer("attention", {{"window", 7}}), sublayer("mlp")}});
  c.initializer_range = 0.2;
  auto m = Model::random(c, 3, DType::F32);
  Rng rng(4);
  std::vector<int32_t> ids(40);
  for (auto& t : ids) t = static_cast<int32_t>(rng.next() % c.vocab_size);
  std::vector<float> full, step;
  SeqInput all{ids};
  m->forward({&all, 1}, Logits::All, full);
  auto st = m->new_state();
  SeqInput first{std::span<const int32_t>(ids.data(), 3), st.get()};
  m->forward({&first, 1}, Logits::Last, step);
  const int64_t V = c.vocab_size;
  EXPECT_EQ(std::vector<float>(step.begin(), step.end()), std::vector<float>(full.begin() + 2 * V, full.begin() + 3 * V));
  State* sp = st.get();
  for (size_t t = 3; t < ids.size(); ++t) {
    m->step({&ids[t], 1}, {&sp, 1}, step);
    ASSERT_EQ(step, std::vector<float>(full.begin() + t * V, full.begin() + (t + 1) * V)) << "position " << t;
  }
  EXPECT_LE(st->bytes_by_kind().at("kv-cache"), 2 * 7 * 2 * 32 * 4);  // 2 layers x 7 positions x (k + v) x kv_dim
}

}  // namespace
}  // namespace strata::test
