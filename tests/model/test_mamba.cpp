// The Mamba mixer (docs/samba.md; spec §2, invariants 1, 2, 11, 12): the
// layer against a double reference, decode from its states == full forward
// for every split (L < k_c - 1 included), any scan chunk gives the same bits,
// packed batch == alone, thread-count invariance, FD gradients of the input
// and every parameter, snapshot/restore, and the initialisation.
#include <gtest/gtest.h>

#include "core/rng.h"
#include "model/mamba_reference.h"
#include "model/module_harness.h"

namespace strata::test {
namespace {

const std::string kPrefix = "model.layers.0.mamba";

// d = 16, E = 32, N = 4, k_c = 4, R = 3 unless given.
CtxConfig mamba_config(nlohmann::json opts = {}, int64_t D = 16) {
  CtxConfig c = ctx_test_config("causal", D);
  nlohmann::json o = {{"d_state", 4}, {"d_conv", 4}, {"expand", 2}, {"dt_rank", 3}};
  for (auto& [k, v] : opts.items()) o[k] = v;
  c.extra["mamba"] = o;
  return c;
}

MambaShape shape_of(const CtxConfig& c) {
  const nlohmann::json& o = c.extra.at("mamba");
  MambaShape m;
  m.d = c.hidden_size;
  m.E = o.value("expand", 2) * c.hidden_size;
  m.N = o.value("d_state", 16);
  m.K = o.value("d_conv", 4);
  m.R = o.value("dt_rank", 0) > 0 ? o.value("dt_rank", 0) : (c.hidden_size + 15) / 16;
  m.conv_bias = o.value("conv_bias", true);
  return m;
}

ReferenceFn reference(const CtxConfig& c) {
  return [m = shape_of(c)](const DoubleParams& p, const Rows& x, const Lens& lens) {
    return ref_mamba(m, p, kPrefix, x, lens);
  };
}

TEST(Mamba, ForwardMatchesTheDoubleReference) {
  for (const nlohmann::json& o : {nlohmann::json{}, nlohmann::json{{"d_state", 16}}, nlohmann::json{{"conv_bias", false}}}) {
    const CtxConfig c = mamba_config(o);
    ModuleRig rig("mamba", c, kPrefix, 1, 0.2);
    const Lens lens = {7, 1, 12};
    const std::vector<float> x = random_rows(total_rows(lens), 16, 2);
    const Rows want = reference(c)(rig.double_params(), Rows(x.begin(), x.end()), lens);
    const std::vector<float> y = rig.forward(x, lens);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], want[i], 2e-5 * (1 + std::fabs(want[i]))) << o.dump() << " " << i;
  }
}

TEST(Mamba, DecodeFromItsStatesEqualsFullForward) {
  ModuleRig rig("mamba", mamba_config(), kPrefix, 3, 0.2);
  // Sequences shorter than k_c - 1 exercise the zero-padded conv window.
  expect_decode_equals_full(rig, random_rows(22, 16, 4), {9, 1, 2, 10});
}

TEST(Mamba, LaterRowsDoNotChangeEarlierOutputs) {
  ModuleRig rig("mamba", mamba_config(), kPrefix, 5, 0.2);
  expect_causal(rig, random_rows(13, 16, 6), {8, 5});
}

TEST(Mamba, PackedBatchEqualsEachSequenceAlone) {
  ModuleRig rig("mamba", mamba_config({{"d_state", 16}}), kPrefix, 7, 0.2);
  expect_batch_equals_alone(rig, random_rows(17, 16, 8), {5, 1, 11});
}

TEST(Mamba, ResultsDoNotDependOnTheThreadCount) {
  // E = 640 spans several backward channel groups.
  ModuleRig rig("mamba", mamba_config({{"expand", 2}}, 320), kPrefix, 9, 0.05);
  expect_thread_count_invariant(rig, random_rows(20, 320, 10), {13, 7});
}

TEST(Mamba, GradientsMatchFiniteDifferences) {
  for (const nlohmann::json& o : {nlohmann::json{{"scan_chunk", 3}}, nlohmann::json{{"d_state", 16}, {"scan_chunk", 64}},
                                  nlohmann::json{{"conv_bias", false}, {"scan_chunk", 1}}}) {
    SCOPED_TRACE(o.dump());
    const CtxConfig c = mamba_config(o, 8);
    ModuleRig rig("mamba", c, kPrefix, 11, 0.2);
    expect_gradients_match_reference(rig, random_rows(9, 8, 12), {6, 1, 2}, reference(c));
  }
}

// Saving the scan state every C steps and recomputing inside chunks gives
// the same bits as any other C (invariant 1 for the training path).
TEST(Mamba, AnyScanChunkGivesTheSameGradientBits) {
  const Lens lens = {23, 4};
  const std::vector<float> x = random_rows(27, 16, 14), dy = random_rows(27, 16, 15);
  std::vector<float> dx1;
  std::map<std::string, std::vector<float>> g1;
  for (int64_t C : {1, 2, 7, 23, 64}) {
    ModuleRig rig("mamba", mamba_config({{"scan_chunk", C}}), kPrefix, 13, 0.2);
    const std::vector<float> dx = rig.backward(x, lens, dy);
    if (dx1.empty()) {
      dx1 = dx;
      for (const auto& [n, g] : rig.grads()) g1[n] = std::vector<float>(g.f32(), g.f32() + g.numel());
      continue;
    }
    expect_bitwise(dx, dx1, "dx, chunk " + std::to_string(C));
    for (const auto& [n, g] : rig.grads()) expect_bitwise(std::vector<float>(g.f32(), g.f32() + g.numel()), g1[n], n);
  }
}

TEST(Mamba, SnapshotThenRestoreEqualsContinuing) {
  ModuleRig rig("mamba", mamba_config(), kPrefix, 17, 0.2);
  Module& m = rig.module();
  const std::vector<float> x = random_rows(12, 16, 18);
  auto st = m.make_state();
  Exec ex = Exec::defaults();
  Scratch scratch;
  Context ctx{ex, scratch, false};
  auto run = [&](LayerState* s, int64_t pos, int64_t row, int64_t n) {
    Batch b;
    b.seqs.push_back({0, n, pos});
    b.rows = n;
    std::vector<float> y(static_cast<size_t>(n * 16));
    LayerState* sp[1] = {s};
    m.forward(x.data() + row * 16, y.data(), b, sp, ctx);
    return y;
  };
  run(st.get(), 0, 0, 5);
  auto snap = st->clone();
  const std::vector<float> a = run(st.get(), 5, 5, 7);
  run(st.get(), 12, 5, 3);  // wander off
  st->copy_from(*snap);
  expect_bitwise(run(st.get(), 5, 5, 7), a, "continuing after restore");
  EXPECT_EQ(st->bytes(), static_cast<int64_t>((3 * 32 + 4 * 32) * sizeof(float) + sizeof(int64_t)));
  EXPECT_EQ(m.state_size().at(1 << 20), st->bytes()) << "the state does not grow with the sequence";
}

TEST(Mamba, StateOfAnotherShapeIsRefusedByName) {
  ModuleRig a("mamba", mamba_config(), kPrefix, 19, 0.2);
  ModuleRig b("mamba", mamba_config({{"d_state", 8}}), kPrefix, 19, 0.2);
  auto st = b.module().make_state();
  expect_foreign_state_refused(a, *st, kPrefix);
}

// Spec §2.6 / invariant 11: softplus(dt bias) log-uniform in [dt_min,
// dt_max], A_log = ln(n + 1), D = 1, dt_proj and conv uniform with their bounds.
TEST(Mamba, InitialisationFollowsTheMambaRecipe) {
  const CtxConfig cfg = mamba_config({{"d_state", 16}, {"dt_rank", 0}}, 64);
  auto m = make_module("mamba", cfg, kPrefix, cfg.options("mamba"), 0);
  Rng rng(21);
  double log_sum = 0;
  int64_t n_bias = 0;
  for (const ParamDecl& d : m->params()) {
    const int64_t n = shape_numel(d.shape);
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[i] = declared_value(d, i, rng, 0.02f);
    const std::string name = d.name.substr(kPrefix.size() + 1);
    if (name == "dt_proj.bias") {
      for (float b : v) {
        const double dt = std::log1p(std::exp(static_cast<double>(b)));
        ASSERT_GE(dt, 1e-3 * (1 - 1e-5));
        ASSERT_LE(dt, 0.1 * (1 + 1e-5));
        log_sum += std::log(dt);
        ++n_bias;
      }
    } else if (name == "A_log") {
      for (int64_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(v[i], static_cast<float>(std::log(i % 16 + 1.0)));
    } else if (name == "D") {
      for (float x : v) ASSERT_EQ(x, 1.0f);
    } else if (name == "dt_proj.weight") {
      EXPECT_EQ(d.shape, (Shape{128, 4})) << "dt_rank auto = ceil(64 / 16)";
      for (float x : v) ASSERT_LE(std::fabs(x), 0.5f);  // 1/sqrt(4)
    } else if (name == "conv1d.weight" || name == "conv1d.bias") {
      for (float x : v) ASSERT_LE(std::fabs(x), 0.5f);  // 1/sqrt(k_c)
    } else if (name == "out_proj.weight") {
      EXPECT_TRUE(d.residual_out);
    }
  }
  // log Δ uniform in [ln 1e-3, ln 0.1]: mean ln(1e-2).
  EXPECT_NEAR(log_sum / n_bias, std::log(1e-2), 0.25);
}

}  // namespace
}  // namespace strata::test
