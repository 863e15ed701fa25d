// Differential attention (module kind diff-attn): the invariants of the spec
// (docs/diff-attention.md) that need no gradients. λ_init values; λ = 0 with
// mirrored weights equals standard attention bitwise; one shared map gives
// (1 − λ)·A1V; rows of A1 − λA2 sum to 1 − λ; KV-group permutations permute
// the outputs; decode and split prefills equal the full forward bitwise; 0-dim
// buffers through safetensors; shape errors name the tensor.
#include <gtest/gtest.h>

#include <cmath>

#include "core/cpu.h"
#include "io/safetensors.h"
#include "model/module_test_util.h"
#include "strata/error.h"
#include "test_util.h"

namespace strata {
namespace {

using test::DiffConfig;

using test::diff_config;
using test::random_weights;
using test::randn;
using test::TestModule;
using test::Weights;

const std::string kPrefix = "model.layers.2.self_attn";
constexpr int64_t kLayer = 2;  // the layer of kPrefix (lambda_init follows it)

float lambda_of(const Weights& w) {
  auto dot = [&](const char* a, const char* b) {
    float s = 0;
    const auto &x = w.at(kPrefix + "." + a), &y = w.at(kPrefix + "." + b);
    for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
    return s;
  };
  return std::exp(dot("lambda_q1", "lambda_k1")) - std::exp(dot("lambda_q2", "lambda_k2")) +
         w.at(kPrefix + ".lambda_init")[0];
}

// Sets λ_q2 = λ_q1, λ_k2 = λ_k1 and λ_init = 0: λ = e^a − e^a + 0 = 0 exactly.
void zero_lambda(Weights& w) {
  w[kPrefix + ".lambda_q2"] = w[kPrefix + ".lambda_q1"];
  w[kPrefix + ".lambda_k2"] = w[kPrefix + ".lambda_k1"];
  w[kPrefix + ".lambda_init"] = {0.0f};
}

// Copies sub-head component 0 of q_proj and k_proj onto component 1.
void mirror_components(Weights& w, int64_t sub_rows, int64_t dim) {
  for (const char* n : {"q_proj.weight", "k_proj.weight"}) {
    std::vector<float>& m = w[kPrefix + "." + n];
    const int64_t pairs = static_cast<int64_t>(m.size()) / (2 * sub_rows * dim);
    for (int64_t h = 0; h < pairs; ++h)
      std::copy(m.begin() + (2 * h) * sub_rows * dim, m.begin() + (2 * h + 1) * sub_rows * dim,
                m.begin() + (2 * h + 1) * sub_rows * dim);
  }
}

void set_identity(std::vector<float>& w, int64_t n) {
  std::fill(w.begin(), w.end(), 0.0f);
  for (int64_t i = 0; i < n; ++i) w[i * n + i] = 1.0f;
}

TEST(DiffAttention, LambdaInitFollowsTheZeroBasedLayerIndex) {
  DiffConfig c = diff_config("paper", 4, 2, 4, 16, true, true);
  const std::map<int, double> expected = {{0, 0.2},           {1, 0.3555090676},  {2, 0.4707130183},
                                          {5, 0.6661219039},  {10, 0.7701277590}, {21, 0.7988982171}};
  for (auto [layer, value] : expected) {
    auto m = test::make_diff(c, "model.layers." + std::to_string(layer) + ".self_attn", layer);
    bool found = false;
    for (const ParamDecl& d : m->params())
      if (d.name.ends_with(".lambda_init")) {
        found = true;
        EXPECT_TRUE(d.shape.empty());
        EXPECT_FALSE(d.trainable);
        EXPECT_EQ(d.init, Init::Constant);
        EXPECT_NEAR(d.init_value, value, 1e-7) << "layer " << layer;
      }
    EXPECT_TRUE(found);
  }
  c.diff_lambda_init_zero = true;
  for (const ParamDecl& d : test::make_diff(c, kPrefix, kLayer)->params())
    if (d.name.ends_with(".lambda_init")) {
      EXPECT_EQ(d.init_value, 0.0f);
    }
  c.diff_lambda_init_zero = false;
  // The layer index comes from the module's place in the model, whatever its name.
  for (const ParamDecl& d : test::make_diff(c, "encoder.self_attn", 2)->params())
    if (d.name.ends_with(".lambda_init")) {
      EXPECT_NEAR(d.init_value, 0.4707130183, 1e-7);
    }
}

TEST(DiffAttention, DeclaresTheSpecShapesInBothLayouts) {
  // TinyLlama's table in the spec (§2.3), counted without building the tensors.
  DiffConfig c = diff_config("paper", 32, 4, 64, 2048, true, true);
  std::map<std::string, Shape> got;
  for (const ParamDecl& d : test::make_diff(c, kPrefix, kLayer)->params()) got[d.name.substr(kPrefix.size() + 1)] = d.shape;
  EXPECT_EQ(got["q_proj.weight"], (Shape{2048, 2048}));
  EXPECT_EQ(got["k_proj.weight"], (Shape{256, 2048}));
  EXPECT_EQ(got["v_proj.weight"], (Shape{256, 2048}));
  EXPECT_EQ(got["o_proj.weight"], (Shape{2048, 2048}));
  EXPECT_EQ(got["lambda_q1"], (Shape{64}));
  EXPECT_EQ(got["subln.weight"], (Shape{128}));
  EXPECT_EQ(got.size(), 10u);
  c.diff_layout = "expanded";
  c.diff_subln = false;
  got.clear();
  for (const ParamDecl& d : test::make_diff(c, kPrefix, kLayer)->params()) got[d.name.substr(kPrefix.size() + 1)] = d.shape;
  EXPECT_EQ(got["q_proj.weight"], (Shape{4096, 2048}));
  EXPECT_EQ(got["k_proj.weight"], (Shape{512, 2048}));
  EXPECT_EQ(got["v_proj.weight"], (Shape{256, 2048}));
  EXPECT_EQ(got["o_proj.weight"], (Shape{2048, 2048}));
  EXPECT_EQ(got.size(), 9u);  // no subln.weight
  c.num_attention_heads = 3;
  c.num_key_value_heads = 1;
  c.diff_layout = "paper";
  EXPECT_NE(test::error_of([&] { test::make_diff(c, kPrefix, kLayer); }).find("must be even"), std::string::npos);
}

// Invariant 8: mirrored q/k, λ = 0, no subln, scale 1 ⇒ standard attention
// with W_q1, W_k1, W_v, W_o, bit for bit (the same core and kernels).
TEST(DiffAttention, ZeroLambdaWithMirroredWeightsIsStandardAttentionBitwise) {
  const int64_t H = 4, KV = 2, hd = 8, D = 32;
  DiffConfig c = diff_config("expanded", H, KV, hd, D, false, false);
  Weights w = random_weights(*test::make_diff(c, kPrefix, kLayer), 1);
  zero_lambda(w);
  mirror_components(w, hd, D);
  Weights ws;  // the standard module's weights: component 0 of every sub-head pair
  auto take_c0 = [&](const std::string& n) {
    const std::vector<float>& m = w[kPrefix + "." + n];
    std::vector<float>& out = ws[kPrefix + "." + n];
    const int64_t block = hd * D;
    for (size_t h = 0; h < m.size() / (2 * block); ++h)
      out.insert(out.end(), m.begin() + 2 * h * block, m.begin() + (2 * h + 1) * block);
  };
  take_c0("q_proj.weight");
  take_c0("k_proj.weight");
  ws[kPrefix + ".v_proj.weight"] = w[kPrefix + ".v_proj.weight"];
  ws[kPrefix + ".o_proj.weight"] = w[kPrefix + ".o_proj.weight"];
  ASSERT_EQ(lambda_of(w), 0.0f);

  TestModule diff("diff-attn", c, kPrefix, w, true), attn("attn", c, kPrefix, ws, true);
  const std::vector<int64_t> lens = {19, 3, 40};
  const auto x = randn(62 * D, 2);
  const auto y_diff = diff.forward(x, lens), y_attn = attn.forward(x, lens);
  ASSERT_EQ(y_diff.size(), y_attn.size());
  for (size_t i = 0; i < y_diff.size(); ++i) ASSERT_EQ(y_diff[i], y_attn[i]) << i;

  // Gradients agree too (component 0 carries everything), and λ can move:
  // ∂λ/∂λ_q1 = e^a λ_k1 ≠ 0.
  const auto dy = randn(y_diff.size(), 3);
  const auto dx_diff = diff.backward(dy, lens, D), dx_attn = attn.backward(dy, lens, D);
  for (size_t i = 0; i < dx_diff.size(); ++i) ASSERT_NEAR(dx_diff[i], dx_attn[i], 1e-5f * (1 + std::fabs(dx_attn[i])));
  const Tensor& gq = diff.grads.at(kPrefix + ".q_proj.weight");
  const Tensor& gq_std = attn.grads.at(kPrefix + ".q_proj.weight");
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < hd * D; ++i) {
      ASSERT_NEAR(gq.f32()[(2 * h) * hd * D + i], gq_std.f32()[h * hd * D + i], 1e-5f);
      ASSERT_EQ(gq.f32()[(2 * h + 1) * hd * D + i], 0.0f);  // A2 has weight λ = 0
    }
  double norm = 0;
  const Tensor& gl = diff.grads.at(kPrefix + ".lambda_q1");
  for (int64_t i = 0; i < gl.numel(); ++i) norm += std::fabs(gl.f32()[i]);
  EXPECT_GT(norm, 1e-6);
}

// Invariant 9: W_q2 = W_q1 and W_k2 = W_k1 ⇒ A2 = A1 and the heads are
// (1 − λ)·A1V; with subln the factor cancels (RMSNorm is scale invariant).
TEST(DiffAttention, OneSharedMapGivesOneMinusLambdaTimesTheMap) {
  for (const char* layout : {"paper", "expanded"}) {
    for (bool subln : {false, true}) {
      const int64_t D = 32, hd = 8;
      DiffConfig c = diff_config(layout, 4, 2, hd, D, subln, true);
      Weights w = random_weights(*test::make_diff(c, kPrefix, kLayer), 5);
      mirror_components(w, hd, D);
      const float lambda = lambda_of(w);
      ASSERT_GT(1.0f - lambda, 0.1f);
      TestModule m("diff-attn", c, kPrefix, w);
      // The same weights with λ = 0 and scale 1: y0 = (SubLN)(A1V)·W_o.
      Weights wz = w;
      zero_lambda(wz);
      DiffConfig cz = c;
      cz.diff_out_scale = false;
      TestModule m0("diff-attn", cz, kPrefix, wz);
      const std::vector<int64_t> lens = {9, 14};
      const auto x = randn(23 * D, 6);
      const auto y = m.forward(x, lens), y0 = m0.forward(x, lens);
      const float s = 1.0f - w[kPrefix + ".lambda_init"][0];
      for (size_t i = 0; i < y.size(); ++i) {
        // no subln: y = s(1 − λ)·A1V·W_o; subln: y = s·RMSNorm(A1V)·W_o (y0 = RMSNorm(A1V)·W_o, eps aside).
        const float expect = subln ? s * y0[i] : s * (1.0f - lambda) * y0[i];
        ASSERT_NEAR(y[i], expect, 1e-4f * (1 + std::fabs(expect))) << layout << " subln " << subln << " at " << i;
      }
    }
  }
}

// Invariant 10, through an observable: with every value row equal to one
// vector c, (A1 − λA2)V = rowsum(A1 − λA2)·c, so with W_o = I each head's
// output must be (1 − λ)·c.
TEST(DiffAttention, RowsOfTheDifferentialMapSumToOneMinusLambda) {
  for (const char* layout : {"paper", "expanded"}) {
    const int64_t D = 16, hd = 4;  // paper: 2 heads × 8; expanded: 4 heads × 4 = D
    DiffConfig c = diff_config(layout, 4, 2, hd, D, false, false);
    Weights w = random_weights(*test::make_diff(c, kPrefix, kLayer), 7, 0.5f);
    w[kPrefix + ".lambda_q1"] = randn(hd, 8, 0.5f);  // λ well away from 0
    std::vector<float>& wv = w[kPrefix + ".v_proj.weight"];
    const int64_t v_rows = static_cast<int64_t>(wv.size()) / D;
    const auto cvec = randn(v_rows, 9);
    std::fill(wv.begin(), wv.end(), 0.0f);
    for (int64_t r = 0; r < v_rows; ++r) wv[r * D] = cvec[r];  // v = x[0]·c, and x[0] = 1
    set_identity(w[kPrefix + ".o_proj.weight"], D);
    const float lambda = lambda_of(w);
    ASSERT_GT(std::fabs(lambda), 0.2f);
    TestModule m("diff-attn", c, kPrefix, w);
    const std::vector<int64_t> lens = {11, 6};
    auto x = randn(17 * D, 10);
    for (int64_t r = 0; r < 17; ++r) x[r * D] = 1.0f;
    const auto y = m.forward(x, lens);
    const int64_t heads = std::string(layout) == "paper" ? 2 : 4, dv = D / heads, rep = heads / (v_rows / dv);
    for (int64_t r = 0; r < 17; ++r)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < dv; ++i)
          ASSERT_NEAR(y[r * D + h * dv + i], (1.0f - lambda) * cvec[(h / rep) * dv + i], 2e-6f)
              << layout << " row " << r << " head " << h;
  }
}

// Invariant 12: moving KV group g to π(g) together with its query heads (and
// shuffling heads within a group) moves each head's output with it, bitwise
// (W_o = I makes the head outputs the module output).
TEST(DiffAttention, PermutingGroupsWithTheirHeadsPermutesTheOutputs) {
  for (const char* layout : {"paper", "expanded"}) {
    const bool paper = std::string(layout) == "paper";
    const int64_t hd = 4, H = paper ? 8 : 4, KV = paper ? 4 : 2;  // 4 diff heads, 2 groups either way
    const int64_t heads = 4, groups = 2, rep = 2, dv = paper ? 2 * hd : hd, D = heads * dv;
    DiffConfig c = diff_config(layout, H, KV, hd, D, true, true);
    Weights w = random_weights(*test::make_diff(c, kPrefix, kLayer), 11);
    set_identity(w[kPrefix + ".o_proj.weight"], D);
    const int64_t group_of[groups] = {1, 0};            // π
    const int64_t within[rep] = {1, 0};                 // σ inside each group
    std::vector<int64_t> head_to(heads);
    for (int64_t h = 0; h < heads; ++h) head_to[h] = group_of[h / rep] * rep + within[h % rep];
    Weights wp = w;
    auto move_rows = [&](const std::string& n, int64_t block, int64_t count, auto dest) {
      const std::vector<float>& src = w[kPrefix + "." + n];
      std::vector<float>& dst = wp[kPrefix + "." + n];
      for (int64_t b = 0; b < count; ++b)
        std::copy(src.begin() + b * block, src.begin() + (b + 1) * block, dst.begin() + dest(b) * block);
    };
    move_rows("q_proj.weight", hd * D, 2 * heads, [&](int64_t m) { return 2 * head_to[m / 2] + m % 2; });
    move_rows("k_proj.weight", hd * D, 2 * groups, [&](int64_t m) { return 2 * group_of[m / 2] + m % 2; });
    move_rows("v_proj.weight", dv * D, groups, [&](int64_t g) { return group_of[g]; });
    TestModule m("diff-attn", c, kPrefix, w), mp("diff-attn", c, kPrefix, wp);
    const std::vector<int64_t> lens = {13, 5};
    const auto x = randn(18 * D, 12);
    const auto y = m.forward(x, lens), yp = mp.forward(x, lens);
    for (int64_t r = 0; r < 18; ++r)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < dv; ++i)
          ASSERT_EQ(y[r * D + h * dv + i], yp[r * D + head_to[h] * dv + i]) << layout << " head " << h;
  }
}

// Invariant 13 (decode): cached decoding and split prefills of several
// sequences packed in one batch give the full forward's bits at every
// position, on every ISA.
class DiffAttentionDecode : public ::testing::TestWithParam<std::tuple<const char*, Isa>> {};

TEST_P(DiffAttentionDecode, CachedDecodingAndSplitPrefillsEqualTheFullForward) {
  const auto [layout, isa] = GetParam();
  if (!isa_supported(isa)) GTEST_SKIP() << "ISA not supported on this CPU";
  const Isa saved = active_isa();
  set_active_isa(isa);
  const int64_t D = 32;
  DiffConfig c = diff_config(layout, 4, 2, 8, D, true, true);
  TestModule m("diff-attn", c, kPrefix, random_weights(*test::make_diff(c, kPrefix, kLayer), 13));
  const std::vector<int64_t> lens = {23, 5, 40};
  std::vector<int64_t> start = {0, 23, 28};
  const auto x = randn(68 * D, 14);
  const auto full = m.forward(x, lens);

  // Calls over subsets of the sequences: (sequence, rows) per call.
  using Call = std::vector<std::pair<int, int64_t>>;
  const std::vector<std::vector<Call>> plans = {
      {{{0, 7}, {1, 1}, {2, 18}}, {{0, 1}, {1, 4}, {2, 1}}, {{0, 15}, {2, 21}}},  // split prefills
      {},                                                                         // one row at a time (filled below)
  };
  std::vector<std::vector<Call>> all = plans;
  for (int64_t t = 0; t < 40; ++t) {
    Call call;
    for (int s = 0; s < 3; ++s)
      if (t < lens[s]) call.push_back({s, 1});
    all[1].push_back(call);
  }
  for (size_t p = 0; p < all.size(); ++p) {
    std::vector<std::unique_ptr<LayerState>> st;
    for (int s = 0; s < 3; ++s) st.push_back(m.m->make_state());
    std::vector<int64_t> done(3, 0);
    for (const Call& call : all[p]) {
      Batch b;
      std::vector<float> xin;
      std::vector<LayerState*> states;
      for (auto [s, n] : call) {
        b.seqs.push_back({b.rows, n, done[s]});
        b.rows += n;
        xin.insert(xin.end(), x.begin() + (start[s] + done[s]) * D, x.begin() + (start[s] + done[s] + n) * D);
        states.push_back(st[s].get());
      }
      std::vector<float> y(static_cast<size_t>(b.rows * D));
      Context ctx = m.context();
      if (p == 1) m.m->step(xin.data(), y.data(), b, states.data(), ctx);
      else m.m->forward(xin.data(), y.data(), b, states.data(), ctx);
      for (size_t i = 0; i < call.size(); ++i) {
        const auto [s, n] = call[i];
        for (int64_t r = 0; r < n * D; ++r)
          ASSERT_EQ(y[b.seqs[i].row * D + r], full[(start[s] + done[s]) * D + r])
              << "plan " << p << " sequence " << s << " position " << done[s] + r / D;
        done[s] += n;
      }
    }
    EXPECT_EQ(done, lens);
  }
  // A state that does not continue where the batch starts is an error.
  auto st = m.m->make_state();
  LayerState* sp = st.get();
  Batch b{{{0, 1, 3}}, 1};
  std::vector<float> y(D);
  Context ctx = m.context();
  EXPECT_NE(test::error_of([&] { m.m->forward(x.data(), y.data(), b, &sp, ctx); }).find("positions"),
            std::string::npos);
  set_active_isa(saved);
}

INSTANTIATE_TEST_SUITE_P(All, DiffAttentionDecode,
                         ::testing::Combine(::testing::Values("paper", "expanded"),
                                            ::testing::Values(Isa::Scalar, Isa::Avx2, Isa::Avx512)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param)) + "_" +
                                  std::string(isa_name(std::get<1>(info.param)));
                         });

TEST(DiffAttention, ZeroDimBufferSurvivesSafetensorsAndBinds) {
  DiffConfig c = diff_config("paper", 4, 2, 4, 16, true, true);
  auto proto = test::make_diff(c, kPrefix, kLayer);
  Weights w = random_weights(*proto, 15);
  NamedTensors tensors;
  for (const ParamDecl& d : proto->params()) {
    Tensor t = Tensor::alloc(DType::F32, d.shape);
    std::copy(w[d.name].begin(), w[d.name].end(), t.f32());
    tensors.emplace_back(d.name, t);
  }
  const std::string path = test::make_temp_dir("diffattn") + "/layer.safetensors";
  write_safetensors(path, tensors);
  EXPECT_NE(test::read_file(path).find(".lambda_init\":{\"dtype\":\"F32\",\"shape\":[],"), std::string::npos);
  WeightSet ws;
  read_safetensors(path, ws);
  const Tensor* li = ws.find(kPrefix + ".lambda_init");
  ASSERT_NE(li, nullptr);
  EXPECT_TRUE(li->shape.empty());
  EXPECT_EQ(li->numel(), 1);
  EXPECT_FLOAT_EQ(li->f32()[0], 0.4707130183f);
  auto m = test::make_diff(c, kPrefix, kLayer);
  ParamBinder b(ws);
  m->bind(b);  // shapes match, including []
  TestModule direct("diff-attn", c, kPrefix, w);
  const auto x = randn(6 * 16, 16);
  Scratch sc;
  const Exec ex = Exec::defaults();
  Context ctx{ex, sc, false};
  std::vector<float> y(x.size());
  Batch batch = TestModule::packed({6});
  m->forward(x.data(), y.data(), batch, nullptr, ctx);
  EXPECT_EQ(y, direct.forward(x, {6}));
}

TEST(DiffAttention, WrongShapesNameTheTensor) {
  DiffConfig c = diff_config("expanded", 4, 2, 4, 16, true, true);
  auto m = test::make_diff(c, kPrefix, kLayer);
  for (const auto& [name, bad] : std::vector<std::pair<std::string, Shape>>{
           {kPrefix + ".lambda_init", {1}}, {kPrefix + ".lambda_k2", {8}}, {kPrefix + ".k_proj.weight", {8, 16}}}) {
    WeightSet ws;
    ws.origin = "ckpt";
    for (const ParamDecl& d : m->params()) ws.add(d.name, Tensor::alloc(DType::F32, d.name == name ? bad : d.shape), "ckpt.safetensors");
    ParamBinder b(ws);
    const std::string err = test::error_of([&] { m->bind(b); });
    EXPECT_NE(err.find("'" + name + "'"), std::string::npos) << err;
    EXPECT_NE(err.find(shape_str(bad)), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace strata
