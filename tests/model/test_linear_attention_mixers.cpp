// The GLA and RetNet mixers (docs/linear-attention.md; spec §4, §5,
// invariants 3, 4, 12) as modules: the forward against the double recurrent
// reference for several chunk sizes, decode from states == full forward for
// every split (to F32 rounding: prefill runs the chunked form, decode the
// recurrence), causality, packed batch == alone and thread-count invariance
// bit for bit, FD gradients of the input and every parameter (the gate
// projection included), snapshot/restore, the state's size and export, and
// the initialisation.
#include <gtest/gtest.h>

#include "core/rng.h"
#include "model/linear_attention_reference.h"
#include "model/module_harness.h"

namespace strata::test {
namespace {

struct MixerCase {
  std::string kind;
  nlohmann::json options;
};

// d = 16: GLA with 2 heads (dk 4, dv 8), gate rank 4; RetNet with 2 heads (dk 8, dv 16).
CtxConfig mixer_config(const MixerCase& m, int64_t D = 16) {
  CtxConfig c = ctx_test_config("causal", D);
  c.num_attention_heads = 4;
  nlohmann::json o = m.kind == "gla" ? nlohmann::json{{"num_heads", 2}, {"gate_low_rank_dim", 4}}
                                     : nlohmann::json{{"num_heads", 2}};
  for (auto& [k, v] : m.options.items()) o[k] = v;
  c.extra[m.kind] = o;
  return c;
}

RefLinAttnLayer layer_of(const MixerCase& m, const CtxConfig& c) {
  const nlohmann::json& o = c.extra.at(m.kind);
  RefLinAttnLayer L;
  L.retnet = m.kind == "retnet";
  L.d = c.hidden_size;
  L.H = o.value("num_heads", 2);
  L.Kd = static_cast<int64_t>(L.d * o.value("expand_k", L.retnet ? 1.0 : 0.5));
  L.Vd = static_cast<int64_t>(L.d * o.value("expand_v", L.retnet ? 2.0 : 1.0));
  L.rank = o.value("gate_low_rank_dim", 16);
  L.theta = c.rope_theta;
  return L;
}

std::string prefix_of(const MixerCase& m) { return "model.layers.0." + m.kind; }

ReferenceFn reference(const MixerCase& m, const CtxConfig& c) {
  return [L = layer_of(m, c), p = prefix_of(m)](const DoubleParams& dp, const Rows& x, const Lens& lens) {
    return ref_linattn_layer(L, dp, p, x, lens);
  };
}

class Mixer : public ::testing::TestWithParam<std::string> {
 protected:
  MixerCase mc(nlohmann::json o = {}) const { return {GetParam(), std::move(o)}; }
  // Gate biases spread so that channels decay fast and slow.
  ModuleRig rig(const MixerCase& m, uint64_t seed) const {
    const CtxConfig c = mixer_config(m);
    ModuleRig r(m.kind, c, prefix_of(m), seed, 0.3);
    if (m.kind == "gla") {
      float* b = r.param(prefix_of(m) + ".gk_proj.1.bias");
      for (int64_t i = 0; i < 8; ++i) b[i] = static_cast<float>(i % 4) * 2.0f - 2.0f;
      r.rebind();
    }
    return r;
  }
};

TEST_P(Mixer, ForwardMatchesTheDoubleRecurrence) {
  for (int64_t chunk : {1, 16, 64, 5}) {
    const MixerCase m = mc({{"chunk", chunk}});
    ModuleRig r = rig(m, 1);
    const Lens lens = {7, 1, 70};
    const std::vector<float> x = random_rows(total_rows(lens), 16, 2);
    const Rows want = reference(m, mixer_config(m))(r.double_params(), Rows(x.begin(), x.end()), lens);
    const std::vector<float> y = r.forward(x, lens);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], want[i], 2e-5 * (1 + std::fabs(want[i]))) << chunk << " " << i;
  }
}

TEST_P(Mixer, DecodeFromItsStatesEqualsFullForward) {
  ModuleRig r = rig(mc({{"chunk", 4}}), 3);
  expect_decode_equals_full(r, random_rows(22, 16, 4), {9, 1, 2, 10}, 2e-6);
}

TEST_P(Mixer, LaterRowsDoNotChangeEarlierOutputs) {
  ModuleRig r = rig(mc({{"chunk", 4}}), 5);
  expect_causal(r, random_rows(19, 16, 6), {11, 8});
}

TEST_P(Mixer, PackedBatchEqualsEachSequenceAlone) {
  ModuleRig r = rig(mc({{"chunk", 8}}), 7);
  expect_batch_equals_alone(r, random_rows(40, 16, 8), {13, 1, 26});
}

TEST_P(Mixer, ResultsDoNotDependOnTheThreadCount) {
  ModuleRig r = rig(mc({{"chunk", 8}}), 9);
  expect_thread_count_invariant(r, random_rows(40, 16, 10), {21, 19});
}

TEST_P(Mixer, GradientsMatchFiniteDifferences) {
  for (int64_t chunk : {4, 64}) {
    const MixerCase m = mc({{"chunk", chunk}});
    ModuleRig r = rig(m, 11);
    const Lens lens = {9, 5};
    expect_gradients_match_reference(r, random_rows(total_rows(lens), 16, 12), lens, reference(m, mixer_config(m)));
  }
}

TEST_P(Mixer, SnapshotThenRestoreEqualsContinuing) {
  ModuleRig r = rig(mc({{"chunk", 4}}), 13);
  Module& m = r.module();
  const std::vector<float> x = random_rows(12, 16, 14);
  auto st = m.make_state();
  Exec ex = Exec::defaults();
  Scratch scratch;
  Context ctx{ex, scratch, false};
  auto run = [&](int64_t pos, int64_t row, int64_t n) {
    Batch b;
    b.seqs.push_back({0, n, pos});
    b.rows = n;
    std::vector<float> y(static_cast<size_t>(n * 16));
    LayerState* sp[1] = {st.get()};
    m.forward(x.data() + row * 16, y.data(), b, sp, ctx);
    return y;
  };
  run(0, 0, 5);
  auto snap = st->clone();
  const std::vector<float> a = run(5, 5, 7);
  run(12, 5, 3);  // wander off
  st->copy_from(*snap);
  expect_bitwise(run(5, 5, 7), a, "continuing after restore");
  const bool ret = GetParam() == "retnet";
  const int64_t values = 2 * (ret ? 8 * 16 : 4 * 8);  // H dk dv
  EXPECT_EQ(st->bytes(), static_cast<int64_t>(values * sizeof(float) + sizeof(int64_t)));
  EXPECT_EQ(m.state_size().at(1 << 20), st->bytes()) << "the state does not grow with the sequence";
  const auto exported = st->export_tensors();
  ASSERT_EQ(exported.size(), 1u);
  EXPECT_EQ(exported[0].first, "state");
  EXPECT_EQ(exported[0].second.shape, (Shape{2, ret ? 8 : 4, ret ? 16 : 8}));
}

TEST_P(Mixer, StateOfAnotherShapeIsRefusedByName) {
  ModuleRig a = rig(mc(), 15);
  const CtxConfig other = mixer_config(mc({{"num_heads", 1}}));
  ModuleRig b(GetParam(), other, prefix_of(mc()), 15, 0.2);
  auto st = b.module().make_state();
  expect_foreign_state_refused(a, *st, prefix_of(mc()));
}

// Widths that do not split into the heads are refused naming the option.
TEST_P(Mixer, WidthsThatDoNotSplitAreRefused) {
  const CtxConfig c = mixer_config(mc({{"num_heads", 3}}));
  try {
    make_module(GetParam(), c, prefix_of(mc()), c.options(GetParam()), 0);
    FAIL() << "3 heads accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expand_"), std::string::npos) << e.what();
  }
}

// Spec §1.6: under the mamba scheme the mixers keep their own xavier-uniform
// (gain 2^-2.5), o_proj divided by sqrt(n_res · layers); the gate bias is 0
// and the norm weight 1.
TEST_P(Mixer, InitialisationFollowsTheMixersRecipe) {
  CtxConfig cfg = mixer_config(mc(), 64);
  cfg.init_scheme = "mamba";
  cfg.num_hidden_layers = 6;
  auto m = make_module(GetParam(), cfg, prefix_of(mc()), cfg.options(GetParam()), 0);
  for (const ParamDecl& d : m->params()) {
    const std::string name = d.name.substr(prefix_of(mc()).size() + 1);
    if (name == "g_norm_swish_gate.weight") {
      EXPECT_EQ(d.init, Init::Ones);
    } else if (name == "gk_proj.1.bias") {
      EXPECT_EQ(d.init, Init::Zeros);
    } else {
      ASSERT_EQ(d.init, Init::Uniform) << name;
      double bound = std::pow(2.0, -2.5) * std::sqrt(6.0 / static_cast<double>(d.shape[0] + d.shape[1]));
      if (name == "o_proj.weight") bound /= std::sqrt(6.0);  // one sub-layer per layer here, 6 layers
      EXPECT_NEAR(d.init_value, bound, 1e-7) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, Mixer, ::testing::Values("gla", "retnet"), [](const auto& info) { return info.param; });

}  // namespace
}  // namespace strata::test
