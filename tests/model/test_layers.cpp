// Layer patterns in config.json (`strata_layers`): a repeated unit, overrides,
// module options declared by their module types, aliases, round trips, and
// one-line errors naming the field for every bad kind, option or value.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/layers.h"
#include "model/recipes.h"
#include "model/registry.h"
#include "model/stack.h"
#include "strata/config.h"
#include "strata/error.h"
#include "test_util.h"

namespace strata {
namespace {

using json = nlohmann::json;
using test::error_of;

json J(const char* text) { return json::parse(text); }

// A small config.json with the given strata_layers.
json with_layers(const json& layers) {
  json j = json::parse(preset_config("tiny").to_json_text());
  j.erase("num_hidden_layers");
  j.erase("strata_recipe");
  j["model_type"] = "strata";
  j["strata_layers"] = layers;
  return j;
}

Config parse(const json& j) { return Config::from_json_text(j.dump(), "c.json"); }

// The example of the issue that asked for the schema: a Samba-like unit, repeated,
// with one layer switched to full attention.
TEST(LayerPattern, UnitRepeatAndOverrides) {
  const json j = with_layers(J(R"({"unit": [["mlp", {"kind": "swa", "window": 16}], ["attention", "mlp"]],
                                   "repeat": 3, "overrides": {"3": {"kind": "attention"}}})"));
  const Config c = parse(j);
  EXPECT_EQ(c.num_hidden_layers, 6);
  EXPECT_EQ(c.recipe, "custom");
  EXPECT_EQ(c.model_type, "strata");
  EXPECT_FALSE(c.is_llama());
  // Layer 0: [mlp, attention with window 16]; layer 3 (a unit's second layer): its first sub-layer patched.
  EXPECT_EQ(c.layers.layer(0)[1].mixer.kind, "attention");
  EXPECT_EQ(opt_int(c.layers.layer(0)[1].mixer.options, "window"), 16);
  EXPECT_EQ(opt_int(c.layers.layer(2)[1].mixer.options, "window"), 16);
  ASSERT_EQ(c.layers.layer(3).size(), 2u);  // the patch replaced sub-layer 0, the MLP stays
  EXPECT_EQ(c.layers.layer(3)[0].mixer.kind, "attention");
  EXPECT_EQ(c.layers.layer(3)[1].mixer.kind, "mlp");
  EXPECT_EQ(c.layers.layer(5)[0].mixer.kind, "attention");  // the unit's own second layer
  // HF-style names: input_layernorm / post_attention_layernorm, the type's name per mixer.
  const auto blocks = layer_blocks(c, 0);
  EXPECT_EQ(blocks[0].norm.prefix, "model.layers.0.input_layernorm");
  EXPECT_EQ(blocks[0].mixer.prefix, "model.layers.0.mlp");
  EXPECT_EQ(blocks[1].norm.prefix, "model.layers.0.post_attention_layernorm");
  EXPECT_EQ(blocks[1].mixer.prefix, "model.layers.0.self_attn");
  EXPECT_EQ(blocks[1].mixer.layer, 0);
  // Written back and read again: the same layers.
  const Config back = Config::from_json_text(c.to_json_text(), "rt.json");
  EXPECT_TRUE(back.layers == c.layers);
  EXPECT_EQ(back.to_json_text(), c.to_json_text());
}

TEST(LayerPattern, PatchesWithoutKindChangeOnlyTheNamedOptionsAndSubLayerKeys) {
  const json j = with_layers(J(R"({"unit": [[{"kind": "swa", "window": 8}, "mlp"]], "repeat": 4,
                                   "overrides": {"1": {"window": 0},
                                                 "2.1": {"intermediate_size": 256, "post": {"kind": "se", "reduction": 8}}}})"));
  const Config c = parse(j);
  EXPECT_EQ(opt_int(c.layers.layer(0)[0].mixer.options, "window"), 8);
  EXPECT_EQ(opt_int(c.layers.layer(1)[0].mixer.options, "window"), 0);
  EXPECT_EQ(opt_int(c.layers.layer(2)[1].mixer.options, "intermediate_size"), 256);
  ASSERT_TRUE(c.layers.layer(2)[1].post.has_value());
  EXPECT_EQ(opt_int(c.layers.layer(2)[1].post->options, "reduction"), 8);
  // The options shape the parameters: a wider MLP in layer 2 only.
  int64_t up2 = 0, up3 = 0;
  for (const DeclaredParam& p : declared_params(c)) {
    if (p.decl.name == "model.layers.2.mlp.up_proj.weight") up2 = p.decl.shape[0];
    if (p.decl.name == "model.layers.3.mlp.up_proj.weight") up3 = p.decl.shape[0];
  }
  EXPECT_EQ(up2, 256);
  EXPECT_EQ(up3, c.intermediate_size);
}

TEST(LayerPattern, AliasesAndDefaults) {
  const Config c = parse(with_layers(J(R"({"unit": [["swa", "mlp"], ["attn", "mlp"]]})")));
  EXPECT_EQ(c.num_hidden_layers, 2);  // no repeat: the unit once
  EXPECT_EQ(c.layers.layer(0)[0].mixer.kind, "attention");
  EXPECT_EQ(opt_int(c.layers.layer(0)[0].mixer.options, "window"), 2048);  // swa's preset
  EXPECT_EQ(opt_int(c.layers.layer(1)[0].mixer.options, "window"), 0);
  EXPECT_EQ(c.layers.layer(0)[0].norm.kind, "rmsnorm");
  // A Llama pattern spelled out is a Llama: it writes as one.
  const Config l = parse(with_layers(J(R"({"unit": [["attention", "mlp"]], "repeat": 2})")));
  EXPECT_TRUE(l.is_llama());
  const json out = json::parse(l.to_json_text());
  EXPECT_EQ(out["model_type"], "llama");
  EXPECT_EQ(out["architectures"][0], "LlamaForCausalLM");
}

TEST(LayerPattern, PresetsWriteOnlyWhatTheirRecipeDoesNotSay) {
  // A Llama preset's config.json stays a plain HF LlamaConfig.
  EXPECT_FALSE(json::parse(preset_config("tinyllama-1.1b").to_json_text()).contains("strata_layers"));
  EXPECT_FALSE(json::parse(preset_config("tinyllama-1.1b-modified").to_json_text()).contains("strata_layers"));
  // Recipe parameters other than the defaults are spelled out.
  const json tiny = json::parse(preset_config("tiny-modified").to_json_text());
  ASSERT_TRUE(tiny.contains("strata_layers"));
  EXPECT_EQ(tiny["strata_layers"]["unit"][0][0]["norm"]["rank"], 8);
  EXPECT_EQ(tiny["strata_recipe"], "modified");
}

TEST(LayerPattern, ModelTypeNoLongerDecidesTheLayers) {
  // strata_layers decides, whatever model_type says (a strata type here).
  json j = with_layers(J(R"({"unit": [["mlp"]], "repeat": 2})"));
  j["model_type"] = "strata_modified_llama";
  EXPECT_EQ(parse(j).layers.layer(0)[0].mixer.kind, "mlp");
  // A config claiming to be a Llama with other layers is refused, naming model_type.
  j["model_type"] = "llama";
  const std::string msg = error_of([&] { parse(j); });
  EXPECT_EQ(msg.rfind("c.json: field 'model_type': ", 0), 0u) << msg;
}

struct BadPattern {
  const char* field;  // what the message must name
  json layers;
};

TEST(LayerPattern, EveryBadKindOptionOrValueIsOneLineNamingTheField) {
  const std::vector<BadPattern> cases = {
      {"strata_layers.unit[0][0].kind", J(R"({"unit": [["mamba-9"]]})")},
      {"strata_layers.unit[0][1].kind", J(R"({"unit": [["mlp", {"window": 4}]]})")},  // an object with no kind
      {"strata_layers.unit[0][0].windw", J(R"({"unit": [[{"kind": "attention", "windw": 4}]]})")},
      {"strata_layers.unit[0][0].window", J(R"({"unit": [[{"kind": "attention", "window": "wide"}]]})")},
      {"strata_layers.unit[0][0].window", J(R"({"unit": [[{"kind": "attention", "window": -1}]]})")},
      {"strata_layers.unit[0][0].window", J(R"({"unit": [[{"kind": "attention", "window": 4.5}]]})")},
      {"strata_layers.unit[0][0].post.kernel", J(R"({"unit": [[{"kind": "mlp", "post": {"kind": "token-mix", "kernel": 9}}]]})")},
      {"strata_layers.unit[0][0].post.reduction", J(R"({"unit": [[{"kind": "mlp", "post": {"kind": "se", "reduction": 7}}]]})")},
      {"strata_layers.unit[0][0].norm.ctx_mode",
       J(R"({"unit": [[{"kind": "mlp", "norm": {"kind": "ada-rmsnorm", "ctx_mode": "future"}}]]})")},
      {"strata_layers.unit[0][0].layout", J(R"({"unit": [[{"kind": "diff-attn", "layout": "odd"}]]})")},
      {"strata_layers.unit[0][0].subln", J(R"({"unit": [[{"kind": "diff-attn", "subln": "yes"}]]})")},
      {"strata_layers.unit", J(R"({"unit": []})")},
      {"strata_layers.unit[0]", J(R"({"unit": [[]]})")},
      {"strata_layers.repeat", J(R"({"unit": [["mlp"]], "repeat": 0})")},
      {"strata_layers.units", J(R"({"units": [["mlp"]]})")},
      {"strata_layers.overrides.9", J(R"({"unit": [["mlp"]], "repeat": 2, "overrides": {"9": ["mlp"]}})")},
      {"strata_layers.overrides.x", J(R"({"unit": [["mlp"]], "overrides": {"x": ["mlp"]}})")},
      {"strata_layers.overrides.0.3", J(R"({"unit": [["mlp"]], "overrides": {"0.3": {"intermediate_size": 4}}})")},
      {"strata_layers.overrides.0.windw", J(R"({"unit": [["swa"]], "overrides": {"0": {"windw": 4}}})")},
  };
  for (const BadPattern& bp : cases) {
    const std::string msg = error_of([&] { parse(with_layers(bp.layers)); });
    const std::string want = std::string("c.json: field '") + bp.field + "'";
    EXPECT_EQ(msg.rfind(want, 0), 0u) << bp.layers.dump() << "\n  got: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // An unknown kind lists the known ones.
  const std::string msg = error_of([&] { parse(with_layers(J(R"({"unit": [["mamba-9"]]})"))); });
  EXPECT_NE(msg.find("known: rmsnorm, attention, mlp"), std::string::npos) << msg;
  // The layer count must agree with the unit.
  json j = with_layers(J(R"({"unit": [["mlp"], ["mlp"]], "repeat": 2})"));
  j["num_hidden_layers"] = 3;
  EXPECT_EQ(error_of([&] { parse(j); }).rfind("c.json: field 'num_hidden_layers'", 0), 0u);
  // Recipe parameters beside strata_layers would be ignored: refused.
  j = with_layers(J(R"({"unit": [["mlp"]]})"));
  j["strata_recipe"] = "modified";
  j["ada_rank"] = 8;
  EXPECT_EQ(error_of([&] { parse(j); }).rfind("c.json: field 'ada_rank'", 0), 0u);
}

TEST(LayerPattern, OptionsMadeInCodeAreCheckedToo) {
  Config c = preset_config("tiny");
  set_module_option(c.layers, "attention", "window", int64_t{-3});
  EXPECT_NE(error_of([&] { c.validate("cfg"); }).find("window"), std::string::npos);
  c = preset_config("tiny");
  set_module_option(c.layers, "mlp", "no_such_option", int64_t{1});
  EXPECT_NE(error_of([&] { c.validate("cfg"); }).find("no_such_option"), std::string::npos);
}

}  // namespace
}  // namespace strata
