#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "model/layers.h"
#include "model/recipes.h"
#include "strata/config.h"
#include "test_util.h"
#include "strata/error.h"

namespace strata {
namespace {

using json = nlohmann::json;

// The published TinyLlama-1.1B-Chat-v1.0 config.json.
const char* kTinyLlamaJson = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
  "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22,
  "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null,
  "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.35.0", "use_cache": true, "vocab_size": 32000})";

void expect_same(const Config& a, const Config& b) {
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.recipe, b.recipe);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling_factor, b.rope_scaling_factor);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.stop_at_bos, b.stop_at_bos);
  EXPECT_EQ(a.initializer_range, b.initializer_range);
  EXPECT_EQ(a.torch_dtype, b.torch_dtype);
  EXPECT_TRUE(a.layers == b.layers) << describe_layer(a.layers.layer(0)) << " vs " << describe_layer(b.layers.layer(0));
  EXPECT_TRUE(a.training == b.training);
  EXPECT_TRUE(a.hypernet == b.hypernet);
}

using test::error_of;

TEST(Config, TinyLlamaPresetMatchesSpec) {
  Config c = preset_config("tinyllama-1.1b");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 5632);
  EXPECT_EQ(c.num_hidden_layers, 22);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.kv_dim(), 256);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  // The published config.json parses to the same configuration.
  expect_same(Config::from_json_text(kTinyLlamaJson, "config.json"), c);
}

TEST(Config, TinyLlamaPresetRoundTrip) {
  Config c = preset_config("tinyllama-1.1b");
  const std::string text = c.to_json_text();
  json j = json::parse(text);
  EXPECT_EQ(j["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["strata_recipe"], "llama");
  EXPECT_TRUE(j["rope_scaling"].is_null());
  EXPECT_EQ(j["eos_token_id"], 2);
  Config back = Config::from_json_text(text, "rt.json");
  expect_same(back, c);
  EXPECT_EQ(back.to_json_text(), text);
}

TEST(Config, EveryPresetValidatesAndRoundTrips) {
  ASSERT_EQ(preset_names().size(), 41u);
  for (const std::string& name : preset_names()) {
    Config c = preset_config(name);
    expect_same(Config::from_json_text(c.to_json_text(), name), c);
  }
  EXPECT_TRUE(preset_config("stories260k").tie_word_embeddings);
  EXPECT_EQ(preset_config("stories260k").num_key_value_heads, 4);
  EXPECT_EQ(preset_config("stories15m").hidden_size, 288);
  EXPECT_FALSE(preset_config("tiny").tie_word_embeddings);
  EXPECT_TRUE(preset_config("tiny-tied").tie_word_embeddings);
}

TEST(Config, ModifiedPresets) {
  const Config t = preset_config("tinyllama-1.1b-modified");
  const Config base = preset_config("tinyllama-1.1b");
  EXPECT_EQ(t.model_type, "strata_modified_llama");
  EXPECT_EQ(t.architecture, "StrataModifiedLlamaForCausalLM");
  EXPECT_EQ(t.recipe, "modified");
  EXPECT_EQ(modified_recipe_of(t).attention, "differential");
  EXPECT_EQ(modified_recipe_of(t).diff_layout, "paper");
  EXPECT_TRUE(modified_recipe_of(t).diff_subln);
  EXPECT_TRUE(modified_recipe_of(t).diff_out_scale);
  EXPECT_FALSE(modified_recipe_of(t).diff_lambda_init_zero);
  EXPECT_EQ(modified_recipe_of(t).ctx_mode, "causal");
  EXPECT_EQ(modified_recipe_of(t).ada_rank, 64);
  EXPECT_EQ(modified_recipe_of(t).tm_kernel, 4);
  EXPECT_EQ(modified_recipe_of(t).se_reduction, 16);
  EXPECT_EQ(t.hidden_size, base.hidden_size);
  EXPECT_EQ(t.num_key_value_heads, base.num_key_value_heads);
  EXPECT_EQ(t.torch_dtype, "bfloat16");
  EXPECT_EQ(modified_recipe_of(preset_config("tinyllama-1.1b-modified-nodiff")).attention, "standard");
  const Config tiny = preset_config("tiny-modified");
  EXPECT_EQ(tiny.hidden_size, 64);
  EXPECT_EQ(modified_recipe_of(tiny).diff_layout, "paper");
  EXPECT_EQ(modified_recipe_of(tiny).ada_rank, 8);
  EXPECT_EQ(modified_recipe_of(tiny).se_reduction, 4);
  const Config s = preset_config("stories260k-modified");
  EXPECT_EQ(modified_recipe_of(s).attention, "differential");
  EXPECT_EQ(modified_recipe_of(s).diff_layout, "paper");
  EXPECT_EQ(modified_recipe_of(s).ada_rank, 16);
  EXPECT_EQ(modified_recipe_of(s).se_reduction, 4);
  EXPECT_TRUE(s.tie_word_embeddings);
  EXPECT_TRUE(s.stop_at_bos);
  // config.json names the modified architecture, so Llama-only tools refuse it.
  json j = json::parse(t.to_json_text());
  EXPECT_EQ(j["model_type"], "strata_modified_llama");
  EXPECT_EQ(j["architectures"], json::array({"StrataModifiedLlamaForCausalLM"}));
}

TEST(Config, ModifiedConfigsNeverClaimTheLlamaArchitecture) {
  Config c = preset_config("tiny-modified");
  c.architecture = "LlamaForCausalLM";
  json j = json::parse(c.to_json_text());
  EXPECT_EQ(j["architectures"], json::array({"StrataModifiedLlamaForCausalLM"}));
  EXPECT_EQ(Config::from_json_text(c.to_json_text(), "c").architecture, "StrataModifiedLlamaForCausalLM");
  j.erase("architectures");
  EXPECT_EQ(Config::from_json_text(j.dump(), "c").architecture, "StrataModifiedLlamaForCausalLM");
}

TEST(Config, UnknownPresetListsNames) {
  std::string msg = error_of([] { preset_config("gpt-5"); });
  EXPECT_NE(msg.find("gpt-5"), std::string::npos) << msg;
  for (const std::string& n : preset_names()) EXPECT_NE(msg.find(n), std::string::npos) << msg;
}

TEST(Config, Defaults) {
  Config c = Config::from_json_text(
      R"({"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4})",
      "min.json");
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling_factor, 1.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{2});
  EXPECT_EQ(c.recipe, "llama");
  EXPECT_FALSE(c.stop_at_bos);
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
}

TEST(Config, ExplicitHeadDimAndEosListAndStrataFields) {
  json j = json::parse(kTinyLlamaJson);
  j["head_dim"] = 128;  // need not equal hidden / heads when given
  j["eos_token_id"] = {2, 32, 7};
  j["model_type"] = "strata_modified_llama";
  j["strata_recipe"] = "modified";
  j["ctx_mode"] = "global";
  j["diff_attn"] = {{"layout", "expanded"}, {"subln", false}, {"out_scale", "one"}, {"lambda_init", "zero"}};
  j["strata_stop_at_bos"] = true;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  Config c = Config::from_json_text(j.dump(), "c.json");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.q_dim(), 4096);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{2, 32, 7}));
  EXPECT_EQ(c.recipe, "modified");
  EXPECT_EQ(modified_recipe_of(c).ctx_mode, "global");
  EXPECT_EQ(modified_recipe_of(c).diff_layout, "expanded");
  EXPECT_FALSE(modified_recipe_of(c).diff_subln);
  EXPECT_FALSE(modified_recipe_of(c).diff_out_scale);
  EXPECT_TRUE(modified_recipe_of(c).diff_lambda_init_zero);
  EXPECT_TRUE(c.stop_at_bos);
  EXPECT_DOUBLE_EQ(c.rope_scaling_factor, 4.0);
  expect_same(Config::from_json_text(c.to_json_text(), "rt"), c);
  // The newer "rope_type" spelling is accepted too.
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  EXPECT_DOUBLE_EQ(Config::from_json_text(j.dump(), "c.json").rope_scaling_factor, 2.0);
}

TEST(Config, RopeScalingUnknownType) {
  json j = json::parse(kTinyLlamaJson);
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  EXPECT_EQ(error_of([&] { Config::from_json_text(j.dump(), "dir/config.json"); }),
            "dir/config.json: rope_scaling type 'dynamic' is not supported");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_NE(error_of([&] { Config::from_json_text(j.dump(), "x"); }).find("'llama3' is not supported"),
            std::string::npos);
}

TEST(Config, InvalidJson) {
  std::string msg = error_of([] { Config::from_json_text("{\"vocab_size\": 3,", "bad/config.json"); });
  EXPECT_EQ(msg.rfind("bad/config.json: invalid JSON: ", 0), 0u) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  msg = error_of([] { Config::from_json_text("[1, 2]", "arr.json"); });
  EXPECT_EQ(msg.rfind("arr.json: ", 0), 0u) << msg;
}

struct BadField {
  const char* field;
  std::function<void(json&)> edit;
};

TEST(Config, EveryInvalidFieldIsNamed) {
  const std::vector<BadField> cases = {
      {"vocab_size", [](json& j) { j.erase("vocab_size"); }},
      {"vocab_size", [](json& j) { j["vocab_size"] = "32000"; }},
      {"vocab_size", [](json& j) { j["vocab_size"] = 0; }},
      {"vocab_size", [](json& j) { j["vocab_size"] = 1 << 23; }},
      {"hidden_size", [](json& j) { j["hidden_size"] = -2048; }},
      {"hidden_size", [](json& j) { j["hidden_size"] = 2048.5; }},
      {"hidden_size", [](json& j) { j["hidden_size"] = (1 << 20) + 32; }},
      {"intermediate_size", [](json& j) { j["intermediate_size"] = 0; }},
      {"intermediate_size", [](json& j) { j["intermediate_size"] = true; }},
      {"num_hidden_layers", [](json& j) { j["num_hidden_layers"] = -1; }},
      {"num_hidden_layers", [](json& j) { j["num_hidden_layers"] = 5000; }},
      {"num_attention_heads", [](json& j) { j["num_attention_heads"] = 0; }},
      {"num_attention_heads", [](json& j) { j["num_attention_heads"] = 30; }},  // does not divide 2048
      {"num_key_value_heads", [](json& j) { j["num_key_value_heads"] = 5; }},
      {"num_key_value_heads", [](json& j) { j["num_key_value_heads"] = -4; }},
      {"head_dim", [](json& j) { j["head_dim"] = 63; }},
      {"head_dim", [](json& j) { j["head_dim"] = 0; }},
      {"max_position_embeddings", [](json& j) { j["max_position_embeddings"] = 0; }},
      {"max_position_embeddings", [](json& j) { j["max_position_embeddings"] = "long"; }},
      {"rms_norm_eps", [](json& j) { j["rms_norm_eps"] = -1e-5; }},
      {"rms_norm_eps", [](json& j) { j["rms_norm_eps"] = "1e-5"; }},
      {"rope_theta", [](json& j) { j["rope_theta"] = 0.0; }},
      {"rope_scaling", [](json& j) { j["rope_scaling"] = "linear"; }},
      {"rope_scaling",
       [](json& j) {
         j["rope_scaling"] = {{"type", "linear"}};
       }},
      {"rope_scaling",
       [](json& j) {
         j["rope_scaling"] = {{"type", "linear"}, {"factor", -1.0}};
       }},
      {"tie_word_embeddings", [](json& j) { j["tie_word_embeddings"] = 1; }},
      {"bos_token_id", [](json& j) { j["bos_token_id"] = -1; }},
      {"bos_token_id", [](json& j) { j["bos_token_id"] = 32000; }},
      {"eos_token_id",
       [](json& j) {
         j["eos_token_id"] = {2, "x"};
       }},
      {"eos_token_id", [](json& j) { j["eos_token_id"] = 99999; }},
      {"hidden_act", [](json& j) { j["hidden_act"] = "gelu"; }},
      {"attention_bias", [](json& j) { j["attention_bias"] = true; }},
      {"mlp_bias", [](json& j) { j["mlp_bias"] = true; }},
      {"model_type", [](json& j) { j["model_type"] = "mistral"; }},
      {"architectures", [](json& j) { j["architectures"] = "LlamaForCausalLM"; }},
      {"torch_dtype", [](json& j) { j["torch_dtype"] = "int8"; }},
      {"strata_recipe", [](json& j) { j["strata_recipe"] = 3; }},
      {"model_type", [](json& j) { j["strata_recipe"] = "modified"; }},
      {"ctx_mode", [](json& j) { j["model_type"] = "strata_modified_llama"; j["ctx_mode"] = "future"; }},
      {"tm_kernel", [](json& j) { j["model_type"] = "strata_modified_llama"; j["tm_kernel"] = 9; }},
      {"se_reduction", [](json& j) { j["model_type"] = "strata_modified_llama"; j["se_reduction"] = 7; }},
      {"diff_attn.layout", [](json& j) { j["model_type"] = "strata_modified_llama"; j["diff_attn"] = {{"layout", "x"}}; }},
      {"strata_stop_at_bos", [](json& j) { j["strata_stop_at_bos"] = "yes"; }},
      {"initializer_range", [](json& j) { j["initializer_range"] = "small"; }},
  };
  for (const BadField& bf : cases) {
    json j = json::parse(kTinyLlamaJson);
    bf.edit(j);
    const std::string msg = error_of([&] { Config::from_json_text(j.dump(), "m/config.json"); });
    const std::string want = std::string("m/config.json: field '") + bf.field + "': ";
    EXPECT_EQ(msg.rfind(want, 0), 0u) << "case " << bf.field << " " << j.dump() << "\n  got: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // The model type is named in its error.
  json j = json::parse(kTinyLlamaJson);
  j["model_type"] = "mistral";
  EXPECT_NE(error_of([&] { Config::from_json_text(j.dump(), "x"); }).find("mistral"), std::string::npos);
}

TEST(Config, ValidateCatchesHandBuiltConfigs) {
  Config c = preset_config("tiny");
  c.num_key_value_heads = 3;
  EXPECT_NE(error_of([&] { c.validate("src"); }).find("src: field 'num_key_value_heads'"), std::string::npos);
}

}  // namespace
}  // namespace strata
