// `strata convert --to modified` end to end on stories260K: the closeness
// report, a directory `strata generate` and `strata info` use, the global-mode
// warnings; `strata info --preset` counts of the TinyLlama presets.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

using test::run_cli;

// The number after `label` in the convert report.
double reported(const std::string& out, const std::string& label) {
  const size_t at = out.find(label);
  if (at == std::string::npos) return -1;
  return std::strtod(out.c_str() + at + label.size(), nullptr);
}

std::string greedy(const std::string& model_args) {
  auto r = run_cli("generate " + model_args + " -p 'Once upon a time' -n 48 --temp 0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

TEST(CliConvert, ModifiedFromStoriesGeneratesLikeTheBase) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string out = test::make_temp_dir("modified");
  auto r = run_cli("convert -m '" + data + "/stories260K.bin' -o '" + out + "' --to modified --seed 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("a fixed English text"), std::string::npos) << r.out;
  EXPECT_GE(reported(r.out, "max |delta logit|"), 0.0) << r.out;
  EXPECT_LE(reported(r.out, "max |delta logit|"), 1e-4) << r.out;
  EXPECT_LE(reported(r.out, "mean KL(base || converted)"), 1e-8) << r.out;
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(out + "/tokenizer.model"));  // tok512.model, the one with the model's vocabulary

  const std::string base = greedy("-m '" + data + "/stories260K.bin' --tokenizer '" + data + "/tok512.model'");
  EXPECT_EQ(greedy("-m '" + out + "'"), base);
  EXPECT_GT(base.size(), 60u);

  r = run_cli("info -m '" + out + "' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["config"]["model_type"], "strata_modified_llama");
  EXPECT_EQ(j["config"]["architectures"][0], "StrataModifiedLlamaForCausalLM");
  EXPECT_EQ(j["config"]["strata_layers"]["unit"][0][0]["layout"], "expanded");
  for (const char* kind : {"ada-rmsnorm", "diff-attn", "token-mix", "mlp", "se", "embed_tokens", "final_norm"})
    EXPECT_TRUE(j["params"].contains(kind)) << kind;
  EXPECT_EQ(j["buffers"], 5);  // lambda_init, one per layer
}

TEST(CliConvert, GlobalContextModeWarnsInConvertAndGenerate) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string out = test::make_temp_dir("modified-global");
  auto r = run_cli("convert -m '" + data + "/stories260K.bin' -o '" + out +
                   "' --to modified --attention standard --ctx-mode global");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("leaks future tokens"), std::string::npos) << r.err;
  EXPECT_LE(reported(r.out, "max |delta logit|"), 1e-4) << r.out;
  auto g = run_cli("generate -m '" + out + "' -p 'Once upon a time' -n 16 --temp 0");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_NE(g.err.find("leaks future tokens"), std::string::npos) << g.err;
  EXPECT_EQ(g.out, [&] {
    auto b = run_cli("generate -m '" + data + "/stories260K.bin' --tokenizer '" + data +
                     "/tok512.model' -p 'Once upon a time' -n 16 --temp 0");
    return b.out;
  }());
}

TEST(CliConvert, PaperLayoutReportsItsDistance) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string out = test::make_temp_dir("modified-paper");
  auto r = run_cli("convert -m '" + data + "/stories260K.bin' -o '" + out + "' --to modified --diff-layout paper");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(reported(r.out, "mean KL(base || converted)"), 0.0) << r.out;
  EXPECT_NE(r.out.find("approximate"), std::string::npos) << r.out;
}

TEST(CliConvert, RefusesModifiedBasesAndStrayOptions) {
  const std::string dir = test::make_temp_dir("tiny-modified");
  ASSERT_EQ(run_cli("init --preset tiny-modified --dtype f32 -o '" + dir + "'").exit_code, 0);
  auto r = run_cli("convert -m '" + dir + "' -o '" + dir + "-out' --to modified");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("only a Llama model"), std::string::npos) << r.err;
  r = run_cli("convert -m '" + dir + "' -o '" + dir + "-hf' --attention standard");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--attention applies to --to modified only"), std::string::npos) << r.err;
}

TEST(CliInfo, TinyLlamaModifiedPresetsAreCountedWithoutAllocating) {
  auto r = run_cli("info --preset tinyllama-1.1b-modified --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["total_params"], 1123398656);
  EXPECT_EQ(j["buffers"], 22);
  EXPECT_EQ(j["layer_params"].get<int64_t>() - j["llama_layer_params"].get<int64_t>(), 1061376);
  EXPECT_EQ(j["params"]["se"], 22 * 526464);
  r = run_cli("info --preset tinyllama-1.1b-modified-nodiff --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["total_params"], 1123390208);
  EXPECT_EQ(j["layer_params"].get<int64_t>() - j["llama_layer_params"].get<int64_t>(), 1060992);
  r = run_cli("info --preset tinyllama-1.1b-modified");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1123398656"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("+ 1061376"), std::string::npos) << r.out;
  EXPECT_EQ(run_cli("info").exit_code, 1);
}

}  // namespace
}  // namespace strata
