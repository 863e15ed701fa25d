// AdamW against PyTorch's formula (double reference and torch 1.13 golden bits),
// parameter groups, thread-count invariance, state round trip, norm and clipping.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/parallel.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "strata/error.h"
#include "test_util.h"
#include "train/optimizer.h"

namespace strata {
namespace {

using test::error_of;

// Owns the weights and gradients of a few parameters.
struct Params {
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  std::vector<std::vector<float>> w, g;

  void add(const std::string& name, Shape shape, uint64_t seed) {
    const int64_t n = shape_numel(shape);
    Rng rng(seed);
    std::vector<float> wv(n), gv(n);
    for (auto& x : wv) x = static_cast<float>(rng.normal());
    for (auto& x : gv) x = static_cast<float>(rng.normal() * 0.1);
    names.push_back(name);
    shapes.push_back(std::move(shape));
    w.push_back(std::move(wv));
    g.push_back(std::move(gv));
  }
  std::vector<TrainParam> view() {
    std::vector<TrainParam> out;
    for (size_t i = 0; i < names.size(); ++i)
      out.push_back({names[i], w[i].data(), g[i].data(), static_cast<int64_t>(w[i].size()), shapes[i]});
    return out;
  }
  void new_grads(uint64_t seed) {
    Rng rng(seed);
    for (auto& gv : g)
      for (auto& x : gv) x = static_cast<float>(rng.normal() * 0.1);
  }
};

Params small_model() {
  Params p;
  p.add("model.embed_tokens.weight", {6, 5}, 1);
  p.add("model.layers.0.input_layernorm.weight", {5}, 2);
  p.add("model.layers.0.self_attn.q_proj.weight", {5, 5}, 3);
  p.add("model.norm.weight", {5}, 4);
  return p;
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The torch formula in double: decay, moments, bias correction, update.
TEST(AdamW, MatchesDoubleReferenceOfTorchFormula) {
  Params p = small_model();
  AdamWConfig cfg;
  cfg.weight_decay = 0.1;
  AdamW opt(p.view(), cfg);
  std::vector<std::vector<double>> w, m, v;
  for (auto& wv : p.w) {
    w.emplace_back(wv.begin(), wv.end());
    m.emplace_back(wv.size(), 0.0);
    v.emplace_back(wv.size(), 0.0);
  }
  const double lrs[] = {1e-2, 3e-2, 2e-2, 5e-3, 1e-2};
  for (int t = 1; t <= 5; ++t) {
    p.new_grads(100 + t);
    const double lr = lrs[t - 1];
    opt.step(lr, t);
    const double bc1 = 1 - std::pow(0.9, t), bc2 = 1 - std::pow(0.95, t);
    for (size_t i = 0; i < w.size(); ++i) {
      const double wd = p.shapes[i].size() >= 2 ? 0.1 : 0.0;
      for (size_t k = 0; k < w[i].size(); ++k) {
        const double g = p.g[i][k];
        w[i][k] *= 1 - lr * wd;
        m[i][k] = 0.9 * m[i][k] + 0.1 * g;
        v[i][k] = 0.95 * v[i][k] + 0.05 * g * g;
        const double denom = std::sqrt(v[i][k]) / std::sqrt(bc2) + 1e-8;
        w[i][k] -= lr / bc1 * m[i][k] / denom;
      }
    }
  }
  NamedTensors st = opt.state();
  ASSERT_EQ(st.size(), 2 * w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    const float* ms = st[2 * i].second.f32();
    const float* vs = st[2 * i + 1].second.f32();
    EXPECT_EQ(st[2 * i].first, "optim.m." + p.names[i]);
    EXPECT_EQ(st[2 * i + 1].first, "optim.v." + p.names[i]);
    for (size_t k = 0; k < w[i].size(); ++k) {
      EXPECT_NEAR(p.w[i][k], w[i][k], 2e-6 * std::max(1.0, std::abs(w[i][k]))) << p.names[i] << "[" << k << "]";
      EXPECT_NEAR(ms[k], m[i][k], 1e-6 * std::max(1e-2, std::abs(m[i][k])));
      EXPECT_NEAR(vs[k], v[i][k], 1e-6 * std::max(1e-4, std::abs(v[i][k])));
    }
  }
}

// Bits of torch.optim.AdamW (Debian python3-torch 1.13.1, AVX2 kernels) for 64
// weights after 4 steps with changing lr; an unfused update differs in 2 of them.
TEST(AdamW, BitwiseEqualToTorch113) {
  const uint32_t golden[64] = {
      0xbf41f5a9, 0xbe738095, 0x3ed2a479, 0xbf276233, 0xbb791716, 0x3eff9149, 0xbeed00a3, 0x3dc404f7,
      0x3f31b02e, 0xbe995b33, 0x3e693416, 0xbf3226e8, 0xbe416d88, 0x3eec5dff, 0xbf1a74d9, 0x39e3de54,
      0x3f0f233d, 0xbed2b537, 0x3e1ea897, 0x3f3e57d4, 0xbe70e08f, 0x3e8d75e0, 0xbf24c338, 0xbe0e6023,
      0x3f028978, 0xbf0bf439, 0x3d57f7f0, 0x3f1d0f46, 0xbeb92270, 0x3e632166, 0x3f3ddddc, 0xbe37ae2d,
      0x3ea6b79c, 0xbf1836e0, 0xbdbba91a, 0x3f043db1, 0xbefd7a52, 0x3dd39331, 0x3f2e1067, 0xbeb9e184,
      0x3e912e33, 0xbf47992a, 0xbe043b1f, 0x3ec0924e, 0xbf17214c, 0xbd01a89a, 0x3f116365, 0xbedf2745,
      0x3e1c6835, 0x3f3e85de, 0xbea105b0, 0x3eabf594, 0xbf3ad5d0, 0xbda5a27c, 0x3edd9391, 0xbf09be48,
      0x3cba2fd6, 0x3f1e2ccb, 0xbebceadc, 0x3e1a8050, 0x3f4cd275, 0xbe87c3f4, 0x3ec50e44, 0xbf2eb2ea};
  const int N = 64;
  std::vector<float> w(N), g(N);
  for (int i = 0; i < N; ++i) w[i] = static_cast<float>((i * 37) % 101 - 50) / 64.0f;
  AdamW opt({{"w", w.data(), g.data(), N, {8, 8}}}, AdamWConfig{});  // 0.9, 0.95, 1e-8, wd 0.1
  const double lrs[] = {0.01, 0.02, 0.015, 0.005};
  for (int t = 1; t <= 4; ++t) {
    for (int i = 0; i < N; ++i) g[i] = static_cast<float>(((i * 13 + t * 7) % 29) - 14) / 128.0f * (t == 2 ? 3 : 1);
    opt.step(lrs[t - 1], t);
  }
  for (int i = 0; i < N; ++i) {
    uint32_t b;
    std::memcpy(&b, &w[i], 4);
    EXPECT_EQ(b, golden[i]) << "element " << i;
  }
}

TEST(AdamW, DefaultDecaySetAndFrozen) {
  Params p = small_model();
  for (auto& gv : p.g) std::fill(gv.begin(), gv.end(), 0.0f);  // zero grads: only the decay moves weights
  const auto before = p.w;
  AdamWConfig cfg;
  cfg.weight_decay = 0.5;
  cfg.rules.push_back(parse_param_group("model.embed_tokens.*:frozen"));
  AdamW opt(p.view(), cfg);
  opt.step(0.1, 1);
  EXPECT_TRUE(bits_equal(p.w[0], before[0]));  // frozen
  EXPECT_TRUE(bits_equal(p.w[1], before[1]));  // vector: no decay
  EXPECT_TRUE(bits_equal(p.w[3], before[3]));
  for (size_t k = 0; k < p.w[2].size(); ++k) EXPECT_EQ(p.w[2][k], before[2][k] * static_cast<float>(1 - 0.1 * 0.5));
  EXPECT_TRUE(opt.settings(0).frozen);
  EXPECT_EQ(opt.trainable_params().size(), 3u);
  EXPECT_EQ(opt.num_trainable(), 5 + 25 + 5);
  for (const auto& [name, t] : opt.state()) EXPECT_EQ(name.find("embed_tokens"), std::string::npos) << name;
  EXPECT_EQ(opt.state().size(), 6u);
}

TEST(AdamW, RulesLastMatchWins) {
  AdamWConfig cfg;
  cfg.weight_decay = 0.1;
  cfg.rules = {parse_param_group("*:frozen"), parse_param_group("model.layers.*:lr_scale=0.5"),
               parse_param_group("*norm*:wd=0.01,lr=2")};
  const Shape mat{4, 4}, vec{4};
  ParamSettings s = resolve_param("model.embed_tokens.weight", mat, cfg);
  EXPECT_TRUE(s.frozen);
  EXPECT_EQ(s.rule, 0);
  s = resolve_param("model.layers.3.mlp.up_proj.weight", mat, cfg);  // rule 1 alone: default wd for a matrix
  EXPECT_FALSE(s.frozen);
  EXPECT_EQ(s.lr_scale, 0.5);
  EXPECT_EQ(s.weight_decay, 0.1);
  s = resolve_param("model.layers.3.input_layernorm.weight", vec, cfg);  // rules 1 and 2 match: 2 wins entirely
  EXPECT_EQ(s.rule, 2);
  EXPECT_EQ(s.lr_scale, 2.0);
  EXPECT_EQ(s.weight_decay, 0.01);
  s = resolve_param("lm_head.weight", mat, AdamWConfig{});
  EXPECT_EQ(s.rule, -1);
  EXPECT_EQ(s.weight_decay, 0.1);
  EXPECT_EQ(resolve_param("model.norm.weight", vec, AdamWConfig{}).weight_decay, 0.0);
  AdamWConfig all;  // Samba's recipe: vectors (norms, biases, D) decay too, and rules still win
  all.decay_vectors = true;
  all.rules = {parse_param_group("*.D:wd=0")};
  EXPECT_EQ(resolve_param("model.norm.weight", vec, all).weight_decay, 0.1);
  EXPECT_EQ(resolve_param("model.layers.0.mixer.D", vec, all).weight_decay, 0.0);

  // lr_scale really scales the update: same grads, half the rate -> half the first step (Adam's step is +-lr).
  std::vector<float> w1(4, 1.0f), w2(4, 1.0f), g(4, 0.25f);
  AdamWConfig c2;
  c2.weight_decay = 0;
  c2.rules = {parse_param_group("b:lr_scale=0.5")};
  AdamW opt({{"a", w1.data(), g.data(), 4, {4}}, {"b", w2.data(), g.data(), 4, {4}}}, c2);
  opt.step(0.1, 1);
  EXPECT_NEAR(1.0f - w1[0], 0.1, 1e-6);
  EXPECT_NEAR(1.0f - w2[0], 0.05, 1e-6);
}

TEST(AdamW, ParseParamGroupAndErrors) {
  ParamGroupRule r = parse_param_group("model.layers.*.mlp.*:lr_scale=0.1,wd=0,frozen");
  EXPECT_EQ(r.pattern, "model.layers.*.mlp.*");
  EXPECT_EQ(*r.lr_scale, 0.1);
  EXPECT_EQ(*r.weight_decay, 0.0);
  EXPECT_TRUE(r.frozen);
  r = parse_param_group("x:weight_decay=0.2");
  EXPECT_FALSE(r.lr_scale.has_value());
  EXPECT_EQ(*r.weight_decay, 0.2);
  EXPECT_FALSE(r.frozen);

  EXPECT_NE(error_of([] { parse_param_group("model.norm.weight"); }).find("expected PATTERN:OPTIONS"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_param_group(":wd=0"); }).find("empty pattern"), std::string::npos);
  EXPECT_NE(error_of([] { parse_param_group("a:"); }).find("no options"), std::string::npos);
  EXPECT_NE(error_of([] { parse_param_group("a:lr_scale=abc"); }).find("lr_scale='abc' is not a number"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_param_group("a:wd=-1"); }).find("must be >= 0"), std::string::npos);
  EXPECT_NE(error_of([] { parse_param_group("a:momentum=1"); }).find("unknown option 'momentum'"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_param_group("a:wd=1,wd=2"); }).find("given twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_param_group("a:frozen=1"); }).find("takes no value"), std::string::npos);
  EXPECT_NE(error_of([] { parse_param_group("a:wd"); }).find("needs a value"), std::string::npos);
  EXPECT_NE(error_of([] { parse_param_group("a:wd=1,,frozen"); }).find("empty option"), std::string::npos);
}

TEST(AdamW, GlobMatch) {
  EXPECT_TRUE(glob_match("*", "anything.at.all"));
  EXPECT_TRUE(glob_match("model.layers.*.mlp.*", "model.layers.12.mlp.up_proj.weight"));
  EXPECT_FALSE(glob_match("model.layers.*.mlp.*", "model.layers.12.self_attn.q_proj.weight"));
  EXPECT_TRUE(glob_match("model.layers.?.self_attn.*", "model.layers.3.self_attn.k_proj.weight"));
  EXPECT_FALSE(glob_match("model.layers.?.self_attn.*", "model.layers.13.self_attn.k_proj.weight"));
  EXPECT_TRUE(glob_match("*norm*", "model.norm.weight"));
  EXPECT_FALSE(glob_match("norm", "model.norm.weight"));  // full-name match
  EXPECT_TRUE(glob_match("a*b*c", "aXbYbZc"));
  EXPECT_FALSE(glob_match("a*b*c", "aXbYbZ"));
  EXPECT_TRUE(glob_match("", ""));
}

TEST(AdamW, ConstructionErrors) {
  std::vector<float> w(4), g(4);
  EXPECT_NE(error_of([&] { AdamW({{"a", w.data(), g.data(), 4, {2, 3}}}, {}); }).find("'a': n = 4 but shape [2, 3]"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              AdamW({{"a", w.data(), g.data(), 4, {4}}, {"a", w.data(), g.data(), 4, {4}}}, {});
            }).find("given twice"),
            std::string::npos);
  EXPECT_NE(error_of([&] { AdamW({{"a", w.data(), nullptr, 4, {4}}}, {}); }).find("no gradient"), std::string::npos);
  AdamWConfig cfg;
  cfg.rules = {parse_param_group("model.nrom.*:frozen")};  // a typo must not silently train everything
  EXPECT_NE(error_of([&] { AdamW({{"a", w.data(), g.data(), 4, {4}}}, cfg); }).find("matches no parameter"),
            std::string::npos);
  cfg.rules = {parse_param_group("a:frozen")};
  EXPECT_EQ(error_of([&] { AdamW({{"a", w.data(), nullptr, 4, {4}}}, cfg); }), "<no error>");  // frozen: no grads
}

// Elementwise updates and fixed-block reductions: 1 and 2 threads give the same bits.
TEST(AdamW, ThreadCountInvariance) {
  const int saved = num_threads();
  std::vector<float> w_out[2], m_out[2];
  double norms[2];
  for (int run = 0; run < 2; ++run) {
    set_num_threads(run + 1);
    Params p;
    p.add("big", {301, 337}, 7);  // not a multiple of any chunk size
    p.add("vec", {1001}, 8);
    AdamW opt(p.view(), AdamWConfig{});
    for (int t = 1; t <= 3; ++t) {
      p.new_grads(50 + t);
      norms[run] = global_grad_norm(p.view());
      clip_grads(p.view(), norms[run], 1.0f);
      opt.step(1e-3, t);
    }
    w_out[run] = p.w[0];
    const Tensor m = opt.state()[0].second;
    m_out[run].assign(m.f32(), m.f32() + m.numel());
  }
  set_num_threads(saved);
  EXPECT_TRUE(bits_equal(w_out[0], w_out[1]));
  EXPECT_TRUE(bits_equal(m_out[0], m_out[1]));
  EXPECT_EQ(norms[0], norms[1]);
}

TEST(AdamW, StateRoundTripContinuesIdentically) {
  Params a = small_model(), b = small_model();
  AdamWConfig cfg;
  cfg.rules = {parse_param_group("model.norm.weight:frozen")};
  AdamW oa(a.view(), cfg);
  for (int t = 1; t <= 6; ++t) {
    a.new_grads(t);
    oa.step(1e-2, t);
  }
  std::string file = test::make_temp_dir("optim") + "/optimizer.safetensors";
  {
    AdamW ob(b.view(), cfg);
    for (int t = 1; t <= 3; ++t) {
      b.new_grads(t);
      ob.step(1e-2, t);
    }
    write_safetensors(file, ob.state());
  }
  WeightSet ws;
  read_safetensors(file, ws);
  AdamW oc(b.view(), cfg);  // a fresh optimizer, as after a restart
  oc.load_state(ws);
  for (int t = 4; t <= 6; ++t) {
    b.new_grads(t);
    oc.step(1e-2, t);
  }
  for (size_t i = 0; i < a.w.size(); ++i) EXPECT_TRUE(bits_equal(a.w[i], b.w[i])) << a.names[i];

  // Validation: wrong shape, missing tensor, unexpected tensor; nothing is changed on error.
  NamedTensors st = oc.state();  // shares the optimizer's buffers: snapshot them
  std::vector<std::vector<float>> snap;
  for (const auto& [n, t] : st) snap.emplace_back(t.f32(), t.f32() + t.numel());
  NamedTensors bad = st;
  bad[0].second = Tensor::alloc(DType::F32, {5, 6});
  EXPECT_NE(error_of([&] { oc.load_state(bad); }).find("shape [5, 6], expected [6, 5]"), std::string::npos);
  bad = st;
  bad.pop_back();
  EXPECT_NE(error_of([&] { oc.load_state(bad); }).find("missing"), std::string::npos);
  bad = st;
  bad.emplace_back("optim.m.model.norm.weight", Tensor::alloc(DType::F32, {5}));  // frozen: no state expected
  EXPECT_NE(error_of([&] { oc.load_state(bad); }).find("has no trainable parameter"), std::string::npos);
  bad = st;
  bad[1].second = bad[1].second.to(DType::BF16);
  EXPECT_NE(error_of([&] { oc.load_state(bad); }).find("expected F32"), std::string::npos);
  bad = st;
  bad[0].second = Tensor::alloc(DType::F32, st[0].second.shape);  // valid (zeros), but a later one is not
  bad.back().second = Tensor::alloc(DType::F32, {1});
  EXPECT_NE(error_of([&] { oc.load_state(bad); }).find("shape [1]"), std::string::npos);
  st = oc.state();
  for (size_t i = 0; i < st.size(); ++i) {  // all or nothing: unchanged
    const Tensor& t = st[i].second;
    EXPECT_TRUE(bits_equal(std::vector<float>(t.f32(), t.f32() + t.numel()), snap[i])) << st[i].first;
  }
}

TEST(AdamW, GradNormAndClipping) {
  Params p = small_model();
  double ref = 0;
  for (auto& gv : p.g)
    for (float x : gv) ref += static_cast<double>(x) * x;
  ref = std::sqrt(ref);
  const double norm = global_grad_norm(p.view());
  EXPECT_NEAR(norm, ref, 1e-12 * ref);

  const auto before = p.g;
  EXPECT_EQ(clip_grads(p.view(), norm, static_cast<float>(norm * 2)), 1.0f);  // below the limit: untouched
  for (size_t i = 0; i < p.g.size(); ++i) EXPECT_TRUE(bits_equal(p.g[i], before[i]));

  const float max_norm = static_cast<float>(norm / 4);
  const float coef = clip_grads(p.view(), norm, max_norm);
  EXPECT_EQ(coef, (1.0f / (static_cast<float>(norm) + 1e-6f)) * max_norm);  // torch's F32 formula
  for (size_t i = 0; i < p.g.size(); ++i)
    for (size_t k = 0; k < p.g[i].size(); ++k) EXPECT_EQ(p.g[i][k], before[i][k] * coef);
  EXPECT_NEAR(global_grad_norm(p.view()), max_norm, 1e-5 * max_norm);

  // Null gradients (frozen parameters) are skipped.
  std::vector<TrainParam> v = p.view();
  v[0].g = nullptr;
  EXPECT_LT(global_grad_norm(v), global_grad_norm(p.view()));
}

TEST(AdamW, AllFinite) {
  Params p;
  p.add("a", {100, 1000}, 1);
  p.add("b", {10}, 2);
  EXPECT_TRUE(all_finite(p.view()));
  p.g[0][77777] = std::nanf("");
  EXPECT_FALSE(all_finite(p.view()));
  p.g[0][77777] = 0;
  p.g[1][9] = -INFINITY;
  EXPECT_FALSE(all_finite(p.view()));
  EXPECT_FALSE(std::isfinite(global_grad_norm(p.view())));
}

TEST(AdamW, StepErrors) {
  std::vector<float> w(4), g(4);
  AdamW opt({{"a", w.data(), g.data(), 4, {4}}}, {});
  EXPECT_NE(error_of([&] { opt.step(1e-3, 0); }).find("step must be >= 1"), std::string::npos);
  EXPECT_NE(error_of([&] { opt.step(NAN, 1); }).find("learning rate"), std::string::npos);
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// ZeRO-1's slices: two optimizers, each updating a complementary slice of
// every parameter with moments for that slice only, take the whole
// optimizer's step bit for bit (weight decay still follows the whole shape),
// and load their slices from whole-parameter moments.
TEST(AdamW, ComplementarySlicesTakeTheWholeStep) {
  Params whole = small_model(), split = small_model();
  AdamWConfig cfg;
  cfg.weight_decay = 0.1;
  AdamW ref(whole.view(), cfg);
  std::vector<ParamSlice> first, second;
  for (const auto& w : split.w) {
    const int64_t n = static_cast<int64_t>(w.size()), cut = n / 3;
    first.push_back({0, cut});
    second.push_back({cut, n});
  }
  AdamW a(split.view(), cfg, first), b(split.view(), cfg, second);
  EXPECT_TRUE(a.sliced());
  EXPECT_EQ(a.moment_bytes() + b.moment_bytes(), ref.moment_bytes());
  for (int t = 1; t <= 4; ++t) {
    whole.new_grads(50 + t);
    split.new_grads(50 + t);
    ref.step(1e-2 * t, t);
    a.step(1e-2 * t, t);
    b.step(1e-2 * t, t);
  }
  for (size_t i = 0; i < whole.w.size(); ++i) EXPECT_TRUE(bits_equal(whole.w[i], split.w[i])) << whole.names[i];
  EXPECT_NE(error_of([&] { (void)a.state(); }).find("gather them first"), std::string::npos);
  // Loading the whole moments into slices gives each slice its part.
  AdamW c(split.view(), cfg, second);
  c.load_state(ref.state());
  for (size_t i = 0; i < whole.w.size(); ++i) {
    const int64_t lo = second[i].lo;
    EXPECT_EQ(std::memcmp(c.m(i), ref.m(i) + lo, static_cast<size_t>(second[i].size()) * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(c.v(i), b.v(i), static_cast<size_t>(second[i].size()) * sizeof(float)), 0);
  }
  EXPECT_NE(error_of([&] { AdamW bad(split.view(), cfg, {{0, 1}}); }).find("1 slices for 4 parameters"),
            std::string::npos);
  EXPECT_NE(error_of([&] { AdamW bad(split.view(), cfg, {{0, 31}, {0, 1}, {0, 1}, {0, 1}}); }).find("outside its 30"),
            std::string::npos);
}

}  // namespace
}  // namespace strata
