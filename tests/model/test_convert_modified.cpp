// Llama -> modified decoder conversion (src/model/convert_modified.h):
// invariants 11 and 25 (expanded and standard conversions reproduce the base's
// logits and greedy text, both context modes, stories260K and random models),
// the paper layout's head mapping, the conversion inits, saving and reloading,
// refusals, and the parameter counts of the TinyLlama presets (invariant 28).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "core/weights.h"
#include "model/checkpoint.h"
#include "model/convert_modified.h"
#include "model/layers.h"
#include "model/recipes.h"
#include "model/module_test_util.h"
#include "strata/error.h"
#include "strata/generate.h"
#include "strata/tokenizer.h"
#include "test_util.h"

namespace strata {
namespace {

using test::error_of;

std::unique_ptr<Model> from_tensors(const Config& cfg, const NamedTensors& tensors) {
  WeightSet w;
  for (const auto& [name, t] : tensors) w.add(name, t, "<converted>");
  return Model::from_weights(cfg, w);
}

std::unique_ptr<Model> convert(const Model& base, const ModifiedOptions& opt) {
  Config cfg;
  NamedTensors t = convert_to_modified(base, opt, &cfg);
  return from_tensors(cfg, t);
}

ModifiedOptions options(const std::string& attention, const std::string& layout, const std::string& ctx_mode) {
  ModifiedOptions o;
  o.attention = attention;
  o.diff_layout = layout;
  o.ctx_mode = ctx_mode;
  o.seed = 7;
  o.ada_rank = 8;
  o.tm_kernel = 3;
  o.se_reduction = 4;
  return o;
}

std::vector<float> all_logits(Model& m, const std::vector<int32_t>& ids) {
  std::vector<float> l;
  SeqInput in{ids};
  m.forward({&in, 1}, Logits::All, l);
  return l;
}

std::vector<int32_t> random_ids(int64_t n, uint64_t seed, int64_t vocab) {
  Rng r(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<int32_t>(r.next() % static_cast<uint64_t>(vocab));
  return v;
}

// A tiny random Llama with weights large enough that differences would show.
std::unique_ptr<Model> random_llama(uint64_t seed, int64_t heads = 4, int64_t kv_heads = 2) {
  Config c = preset_config("tiny");
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = c.hidden_size / heads;
  c.initializer_range = 0.1;
  c.validate("test config");
  return Model::random(c, seed, DType::F32);
}

const Tensor& tensor(const NamedTensors& t, const std::string& name) {
  for (const auto& [n, x] : t)
    if (n == name) return x;
  throw std::runtime_error("no tensor " + name);
}

// ---- stories260K: the exact conversions (invariants 11, 25) ----

struct ExactCase {
  std::string attention, layout, ctx_mode;
};

void PrintTo(const ExactCase& c, std::ostream* os) { *os << c.attention << "/" << c.layout << "/" << c.ctx_mode; }

class StoriesExactConversion : public ::testing::TestWithParam<ExactCase> {};

TEST_P(StoriesExactConversion, LogitsAndGreedyTextEqualTheBase) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const ExactCase& p = GetParam();
  auto base = Model::load(data + "/stories260K.bin");
  auto conv = convert(*base, options(p.attention, p.layout, p.ctx_mode));
  EXPECT_EQ(conv->causal(), p.ctx_mode == "causal");

  auto tok = Tokenizer::load(data + "/tok512.model");
  const std::vector<int32_t> ids =
      tok->encode("Once upon a time, there was a little girl named Lily. She loved to play outside.", true);
  const LogitComparison c = compare_logits(*base, *conv, ids);
  EXPECT_LE(c.max_abs_diff, 1e-4);
  EXPECT_LE(c.mean_kl, 1e-8);
  EXPECT_EQ(c.positions, static_cast<int64_t>(ids.size()));
  const auto a = all_logits(*base, ids), b = all_logits(*conv, ids);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-4) << "entry " << i;

  GenerateOptions g;
  g.max_new_tokens = 64;
  g.sampler.temperature = 0;
  const std::vector<int32_t> prompt = tok->encode("Once upon a time", true);
  const GenerateResult want = generate(*base, prompt, g, [](int32_t) { return true; });
  const GenerateResult got = generate(*conv, prompt, g, [](int32_t) { return true; });
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.stop_reason, want.stop_reason);
  EXPECT_GE(want.tokens.size(), 32u);  // a real continuation, not an immediate stop
}

INSTANTIATE_TEST_SUITE_P(Modes, StoriesExactConversion,
                         ::testing::Values(ExactCase{"differential", "expanded", "causal"},
                                           ExactCase{"differential", "expanded", "global"},
                                           ExactCase{"standard", "expanded", "causal"},
                                           ExactCase{"standard", "expanded", "global"}),
                         [](const auto& info) { return info.param.attention + "_" + info.param.ctx_mode; });

TEST(ConvertModified, StoriesPaperLayoutRunsAndIsApproximate) {
  STRATA_REQUIRE_SHARED_DATA(data);
  auto base = Model::load(data + "/stories260K.bin");
  auto conv = convert(*base, options("differential", "paper", "causal"));
  EXPECT_EQ(modified_recipe_of(conv->config()).diff_layout, "paper");
  const auto ids = random_ids(40, 3, 512);
  const LogitComparison c = compare_logits(*base, *conv, ids);
  EXPECT_TRUE(std::isfinite(c.max_abs_diff) && std::isfinite(c.mean_kl));
  EXPECT_GT(c.mean_kl, 0.0);  // half of every head's value channels use another head's map
}

// ---- random models ----

TEST(ConvertModified, RandomLlamaExpandedAndStandardGiveTheBaseLogits) {
  auto base = random_llama(1);
  const auto ids = random_ids(30, 2, base->config().vocab_size);
  const auto want = all_logits(*base, ids);
  for (const char* attention : {"differential", "standard"})
    for (const char* mode : {"causal", "global"}) {
      auto conv = convert(*base, options(attention, "expanded", mode));
      const auto got = all_logits(*conv, ids);
      ASSERT_EQ(got.size(), want.size());
      double worst = 0;
      for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(got[i] - want[i])));
      EXPECT_LE(worst, 1e-5) << attention << " " << mode;
    }
}

// The paper mapping is exact when the heads it merges agree: with base q
// head (2g+1)·n_rep + r equal to head 2g·n_rep + r and KV head 2g+1 equal to
// 2g, both halves of every diff head reproduce their base heads. A wrong
// head, group or o_proj column placement would show.
TEST(ConvertModified, PaperLayoutIsExactWhenMergedHeadsAgree) {
  for (auto [H, KV] : {std::pair{4, 2}, std::pair{8, 2}, std::pair{8, 4}, std::pair{4, 4}}) {
    auto rnd = random_llama(5, H, KV);
    const Config& c = rnd->config();
    const int64_t d = c.head_dim, D = c.hidden_size, rep = H / KV;
    WeightSet w;
    for (const auto& [name, t] : rnd->named_tensors()) {
      Tensor x = t.to(DType::F32);
      auto copy_rows = [&](int64_t from, int64_t to) {
        std::copy(x.f32() + from * d * D, x.f32() + (from + 1) * d * D, x.f32() + to * d * D);
      };
      if (name.ends_with("q_proj.weight"))
        for (int64_t g = 0; g < KV / 2; ++g)
          for (int64_t r = 0; r < rep; ++r) copy_rows(2 * g * rep + r, (2 * g + 1) * rep + r);
      if (name.ends_with("k_proj.weight"))
        for (int64_t g = 0; g < KV / 2; ++g) copy_rows(2 * g, 2 * g + 1);
      w.add(name, x, "<test>");
    }
    auto base = Model::from_weights(c, w);
    auto conv = convert(*base, options("differential", "paper", "causal"));
    const auto ids = random_ids(25, 6, c.vocab_size);
    EXPECT_LE(compare_logits(*base, *conv, ids).max_abs_diff, 1e-5) << H << " heads, " << KV << " KV heads";
  }
}

// Spec §2.4 at layer level: the first d output channels of every paper-layout
// diff head are exactly its base head (compared through o_proj with the
// second halves' columns zeroed on both sides).
TEST(ConvertModified, PaperLayoutFirstHalfOfEveryHeadIsTheBaseHead) {
  auto base = random_llama(8, 8, 4);
  const Config& bc = base->config();
  Config mc;
  const NamedTensors conv = convert_to_modified(*base, options("differential", "paper", "causal"), &mc);
  const std::string pre = "model.layers.1.self_attn";
  const int64_t H = bc.num_attention_heads, d = bc.head_dim, D = bc.hidden_size;
  test::Weights wb, wc;
  for (const auto& [name, t] : base->named_tensors())
    if (name.starts_with(pre)) wb[name].assign(t.f32(), t.f32() + t.numel());
  for (const auto& [name, t] : conv)
    if (name.starts_with(pre)) wc[name].assign(t.f32(), t.f32() + t.numel());
  auto zero_cols = [&](std::vector<float>& o, int64_t block) {
    for (int64_t r = 0; r < D; ++r) std::fill_n(o.begin() + r * H * d + block * d, d, 0.0f);
  };
  for (int64_t slot = 1; slot < H; slot += 2) {
    zero_cols(wc[pre + ".o_proj.weight"], slot);
    zero_cols(wb[pre + ".o_proj.weight"], paper_source_head(slot, H, bc.num_key_value_heads));
  }
  const ModuleConf& dconf = mc.layers.layer(1)[0].mixer;  // the converted layer's differential attention
  test::TestModule attn("attn", bc, pre, wb, false, nlohmann::json::object()),
      diff("diff-attn", mc, pre, wc, false, nlohmann::json::parse(module_options_json(dconf).dump()), 1);
  const std::vector<int64_t> lens = {9, 14};
  const auto x = test::randn(static_cast<size_t>(23 * D), 4);
  const auto a = attn.forward(x, lens), b = diff.forward(x, lens);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-5) << i;
}

TEST(ConvertModified, PaperHeadMappingOfTinyLlama) {
  // Diff head h = 8g + r: component 0 <- q head 16g + r, component 1 <- 16g + 8 + r.
  for (int64_t g = 0; g < 2; ++g)
    for (int64_t r = 0; r < 8; ++r) {
      const int64_t h = 8 * g + r;
      EXPECT_EQ(paper_source_head(2 * h, 32, 4), 16 * g + r);
      EXPECT_EQ(paper_source_head(2 * h + 1, 32, 4), 16 * g + 8 + r);
    }
  for (auto [H, KV] : {std::pair{8, 4}, std::pair{4, 2}, std::pair{12, 2}, std::pair{6, 6}}) {
    std::set<int64_t> seen;
    for (int64_t m = 0; m < H; ++m) {
      const int64_t src = paper_source_head(m, H, KV);
      EXPECT_EQ(src / (H / KV), 2 * (m / 2 / (H / KV)) + m % 2) << "keeps the KV head of component " << m % 2;
      seen.insert(src);
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(H)) << "a permutation";
  }
}

TEST(ConvertModified, InitsConfigAndSeeds) {
  auto base = random_llama(9);
  Config cfg;
  const ModifiedOptions opt = options("differential", "expanded", "causal");
  const NamedTensors t = convert_to_modified(*base, opt, &cfg);
  EXPECT_EQ(cfg.model_type, "strata_modified_llama");
  EXPECT_EQ(cfg.architecture, "StrataModifiedLlamaForCausalLM");
  EXPECT_EQ(cfg.recipe, "modified");
  EXPECT_FALSE(modified_recipe_of(cfg).diff_subln);
  EXPECT_FALSE(modified_recipe_of(cfg).diff_out_scale);
  EXPECT_TRUE(modified_recipe_of(cfg).diff_lambda_init_zero);
  EXPECT_EQ(modified_recipe_of(cfg).ada_rank, 8);
  for (const auto& [name, x] : t) EXPECT_EQ(x.dtype, DType::F32) << name;

  const std::string l = "model.layers.0.";
  auto values = [&](const std::string& name) {
    const Tensor& x = tensor(t, name);
    return std::vector<float>(x.f32(), x.f32() + x.numel());
  };
  EXPECT_EQ(values(l + "self_attn.lambda_q1"), values(l + "self_attn.lambda_q2"));
  EXPECT_EQ(values(l + "self_attn.lambda_k1"), values(l + "self_attn.lambda_k2"));
  EXPECT_NE(values(l + "self_attn.lambda_q1"), values(l + "self_attn.lambda_k1"));
  EXPECT_NE(values(l + "self_attn.lambda_q1"), std::vector<float>(cfg.head_dim, 0.0f));
  EXPECT_EQ(values(l + "self_attn.lambda_init"), std::vector<float>{0.0f});
  for (const char* zero : {"input_layernorm.ctx_up.weight", "se.fc2.weight", "se.fc2.bias", "se.fc1.bias",
                           "token_mixing.bias"})
    for (float v : values(l + zero)) ASSERT_EQ(v, 0.0f) << zero;
  const auto taps = values(l + "token_mixing.weight");
  for (size_t i = 0; i < taps.size(); ++i) ASSERT_EQ(taps[i], (i + 1) % 3 == 0 ? 1.0f : 0.0f);
  // ctx_down ~ N(0, 1/D): the sample variance is near 1/D.
  const auto down = values(l + "post_attention_layernorm.ctx_down.weight");
  double ss = 0;
  for (float v : down) ss += v * v;
  EXPECT_NEAR(ss / down.size() * cfg.hidden_size, 1.0, 0.2);
  // Norm weights are copied; the seed decides the random tensors.
  const NamedTensors base_tensors = base->named_tensors();
  const Tensor& nw = tensor(base_tensors, l + "input_layernorm.weight");
  EXPECT_EQ(values(l + "input_layernorm.weight"), std::vector<float>(nw.f32(), nw.f32() + nw.numel()));
  ModifiedOptions other = opt;
  const NamedTensors same = convert_to_modified(*base, opt, nullptr);
  other.seed = 8;
  const NamedTensors diff = convert_to_modified(*base, other, nullptr);
  const Tensor &a = tensor(t, l + "se.fc1.weight"), &b = tensor(same, l + "se.fc1.weight"),
               &c = tensor(diff, l + "se.fc1.weight");
  EXPECT_TRUE(std::equal(a.f32(), a.f32() + a.numel(), b.f32()));
  EXPECT_FALSE(std::equal(a.f32(), a.f32() + a.numel(), c.f32()));
}

TEST(ConvertModified, SavedCheckpointReloadsWithTheSameLogits) {
  auto base = random_llama(10);
  for (const char* attention : {"differential", "standard"}) {
    Config cfg;
    const NamedTensors t = convert_to_modified(*base, options(attention, "expanded", "causal"), &cfg);
    const std::string dir = test::make_temp_dir("converted");
    save_hf_checkpoint(dir, cfg, t);
    const auto j = nlohmann::json::parse(test::read_file(dir + "/config.json"));
    EXPECT_EQ(j["model_type"], "strata_modified_llama");
    EXPECT_EQ(j["architectures"], nlohmann::json::array({"StrataModifiedLlamaForCausalLM"}));
    EXPECT_EQ(j["strata_layers"]["unit"][0][0]["kind"], std::string(attention) == "differential" ? "diff-attn" : "attention");
    auto reloaded = Model::load(dir);
    auto direct = from_tensors(cfg, t);
    const auto ids = random_ids(17, 11, cfg.vocab_size);
    EXPECT_EQ(all_logits(*reloaded, ids), all_logits(*direct, ids)) << attention;
  }
}

TEST(ConvertModified, RefusesNonLlamaBasesAndUnpairableHeads) {
  auto modified = Model::random(preset_config("tiny-modified"), 1, DType::F32);
  const std::string msg = error_of([&] { convert_to_modified(*modified, ModifiedOptions(), nullptr); });
  EXPECT_NE(msg.find("only a Llama model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'modified'"), std::string::npos) << msg;
  auto odd = random_llama(2, 4, 1);  // one KV head: the paper layout cannot pair it
  const std::string paper = error_of([&] { convert_to_modified(*odd, options("differential", "paper", "causal"), nullptr); });
  EXPECT_NE(paper.find("must be even"), std::string::npos) << paper;
  EXPECT_EQ(error_of([&] { convert_to_modified(*odd, options("differential", "expanded", "causal"), nullptr); }),
            "<no error>");
}

// ---- parameter counts (invariant 28), from declarations: nothing allocated ----

TEST(ModifiedParamCounts, TinyLlamaPresetsMatchTheSpec) {
  const Config diff = preset_config("tinyllama-1.1b-modified");
  const ParamCounts pd = count_params(diff);
  EXPECT_EQ(pd.total, 1123398656);
  EXPECT_EQ(pd.buffers, 22);  // one lambda_init scalar per layer, not a parameter
  const ParamCounts pn = count_params(preset_config("tinyllama-1.1b-modified-nodiff"));
  EXPECT_EQ(pn.total, 1123390208);
  EXPECT_EQ(pn.buffers, 0);
  EXPECT_EQ(count_params(preset_config("tinyllama-1.1b")).total, 1100048384);
  Config expanded = diff;  // with the conversion's settings: no subln
  set_module_option(expanded.layers, "diff-attn", "layout", std::string("expanded"));
  set_module_option(expanded.layers, "diff-attn", "subln", false);
  EXPECT_EQ(count_params(expanded).total, 1227204864);

  std::map<std::string, int64_t> g(pd.by_group.begin(), pd.by_group.end());
  EXPECT_EQ(g["ada-rmsnorm"], 22 * 2 * (2048 + 262144));
  EXPECT_EQ(g["token-mix"], 22 * 10240);
  EXPECT_EQ(g["se"], 22 * 526464);
  EXPECT_EQ(g["diff-attn"], 22 * (9437184 + 256 + 128));
  EXPECT_EQ(g["mlp"], 22 * 3 * 2048 * 5632);
  EXPECT_EQ(g["embed_tokens"], 32000 * 2048);
  EXPECT_EQ(g["lm_head"], 32000 * 2048);
  EXPECT_EQ(g["final_norm"], 2048);
}

TEST(ModifiedParamCounts, DeclaredCountsEqualABuiltModel) {
  for (const char* preset : {"tiny-modified", "stories260k-modified", "tiny"}) {
    const Config c = preset_config(preset);
    auto m = Model::random(c, 1, DType::F32);
    // One count: the declarations' and the built model's agree, buffers apart in both.
    const ParamCounts pc = count_params(c);
    EXPECT_EQ(pc.total, m->num_params()) << preset;
    const ParamCounts counts = m->param_counts();
    EXPECT_EQ(counts.by_group, pc.by_group) << preset;
    EXPECT_EQ(counts.buffers, pc.buffers) << preset;
    std::vector<std::string> names;
    for (const auto& [name, t] : m->named_tensors()) names.push_back(name);
    std::vector<std::string> declared;
    for (const DeclaredParam& p : declared_params(c)) declared.push_back(p.decl.name);
    EXPECT_EQ(declared, names) << preset;
  }
}

}  // namespace
}  // namespace strata
