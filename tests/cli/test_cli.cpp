// The strata binary end to end: commands, output contracts, and malformed
// input giving one clear line and exit code 1.
#include <gtest/gtest.h>

#include <cstdio>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

using test::run_cli;

// A tiny random model directory (F32), made once.
std::string tiny_dir() {
  static std::string dir;
  if (dir.empty()) {
    dir = test::make_temp_dir("tiny");
    auto r = run_cli("init --preset tiny --dtype f32 --seed 1 -o '" + dir + "'");
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  return dir;
}

std::string copy_dir(const std::string& src, const std::string& tag) {
  std::string dst = test::make_temp_dir(tag);
  for (const auto& e : fs::directory_iterator(src)) fs::copy(e.path(), fs::path(dst) / e.path().filename());
  return dst;
}

// One line on stderr, starting with "strata: error:", containing every needle.
void expect_one_line_error(const test::CliResult& r, std::initializer_list<std::string> needles) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("strata: error:", 0), 0u) << r.err;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
}

TEST(Cli, InitInfoBenchOnTinyModel) {
  auto r = run_cli("info -m '" + tiny_dir() + "' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["config"]["hidden_size"], 64);
  EXPECT_GT(j["total_params"].get<int64_t>(), 0);
  r = run_cli("bench -m '" + tiny_dir() + "' --prompt-len 16 --gen 4 --threads 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  for (const char* k : {"prefill_tok_s", "decode_tok_s", "peak_rss_mib", "threads"}) EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["threads"], 2);
  EXPECT_GT(j["decode_tok_s"].get<double>(), 0);
  r = run_cli("bench --preset tiny --dtype bf16 --prompt-len 8 --gen 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST(Cli, GenerateNeedsATokenizer) {
  expect_one_line_error(run_cli("generate -m '" + tiny_dir() + "' -n 3"), {"tokenizer"});
}

TEST(Cli, TokenizerVocabularyMustMatch) {
  STRATA_REQUIRE_SHARED_DATA(data);
  expect_one_line_error(
      run_cli("generate -m '" + data + "/stories260K.bin' --tokenizer '" + data + "/tokenizer.model' -n 3"),
      {"tokenizer.model", "32000", "512"});
}

TEST(Cli, GenerateWithSamplingIsReproducible) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string cmd = "generate -m '" + data + "/stories260K.bin' --tokenizer '" + data +
                          "/tok512.model' -p 'Once upon' -n 40 --temp 0.8 --top-p 0.9 --top-k 40 --seed 11";
  auto a = run_cli(cmd), b = run_cli(cmd), c = run_cli(cmd + " --no-cache");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.out, c.out);
  EXPECT_EQ(a.out.rfind("Once upon", 0), 0u);
}

// A corpus of samples: sample i is the single generation with seed + i, each
// one document (no blank line inside) followed by a blank line.
TEST(Cli, GenerateWritesACorpusOfSamples) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string out = ::testing::TempDir() + "/strata_samples.txt";
  std::remove(out.c_str());
  const std::string base = "generate -m '" + data + "/stories260K.bin' -p 'Once upon' -n 30 --temp 1.0 --seed 5";
  auto r = run_cli(base + " --samples 3 -o '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string corpus = test::read_file(out);
  std::vector<std::string> docs;
  for (size_t b = 0, e; b < corpus.size(); b = e + 2) {
    e = corpus.find("\n\n", b);
    ASSERT_NE(e, std::string::npos);
    docs.push_back(corpus.substr(b, e - b));
  }
  ASSERT_EQ(docs.size(), 3u);
  auto single = run_cli("generate -m '" + data + "/stories260K.bin' -p 'Once upon' -n 30 --temp 1.0 --seed 6");
  ASSERT_EQ(single.exit_code, 0) << single.err;
  std::string text = single.out;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  std::string collapsed;
  for (char c : text)
    if (c != '\n' || (!collapsed.empty() && collapsed.back() != '\n')) collapsed += c;
  EXPECT_EQ(docs[1], collapsed);
  std::remove(out.c_str());
}

TEST(Cli, LogitsJson) {
  STRATA_REQUIRE_SHARED_DATA(data);
  auto r = run_cli("logits -m '" + data + "/stories260K.bin' --tokenizer '" + data +
                   "/tok512.model' -p 'Once upon a time' --top 3 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"], (std::vector<int>{1, 403, 407, 261, 378}));
  EXPECT_EQ(j["positions"][0]["argmax"], 403);
  EXPECT_NEAR(j["positions"][0]["top"][0]["logit"].get<double>(), 17.023516, 1e-4);
}

TEST(Cli, Perplexity) {
  STRATA_REQUIRE_SHARED_DATA(data);
  std::string text = test::make_temp_dir("ppl") + "/t.txt";
  test::write_file(text, "Once upon a time, there was a little girl named Lily. She loved to play outside.\n");
  auto r = run_cli("ppl -m '" + data + "/stories260K.bin' --tokenizer '" + data + "/tok512.model' --text '" + text +
                   "' --ctx 8 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  EXPECT_LT(j["perplexity"].get<double>(), 20.0);  // a trained model on in-domain text
  const int64_t n = j["tokens"];
  const int64_t rem = n % 8;
  EXPECT_EQ(j["predicted"].get<int64_t>(), n / 8 * 7 + (rem >= 2 ? rem - 1 : 0));
}

TEST(CliErrors, MissingFiles) {
  expect_one_line_error(run_cli("info -m /nonexistent/model"), {"/nonexistent/model"});
  std::string empty = test::make_temp_dir("empty");
  expect_one_line_error(run_cli("info -m '" + empty + "'"), {"config.json"});
}

TEST(CliErrors, UnknownRopeScaling) {
  std::string d = copy_dir(tiny_dir(), "rope");
  auto cfg = nlohmann::json::parse(test::read_file(d + "/config.json"));
  cfg["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  test::write_file(d + "/config.json", cfg.dump());
  expect_one_line_error(run_cli("info -m '" + d + "'"), {"rope_scaling", "yarn"});
}

TEST(CliErrors, ShapeDisagreesWithConfig) {
  std::string d = copy_dir(tiny_dir(), "shape");
  auto cfg = nlohmann::json::parse(test::read_file(d + "/config.json"));
  cfg["intermediate_size"] = 128;
  test::write_file(d + "/config.json", cfg.dump());
  expect_one_line_error(run_cli("info -m '" + d + "'"), {"model.safetensors", "mlp.gate_proj.weight"});
}

TEST(CliErrors, MissingTensor) {
  std::string d = copy_dir(tiny_dir(), "missing");
  auto cfg = nlohmann::json::parse(test::read_file(d + "/config.json"));
  cfg["num_hidden_layers"] = 3;  // layer 2 is not in the file
  test::write_file(d + "/config.json", cfg.dump());
  expect_one_line_error(run_cli("info -m '" + d + "'"), {"model.layers.2."});
}

TEST(CliErrors, TruncatedSafetensors) {
  std::string d = copy_dir(tiny_dir(), "trunc");
  const std::string bytes = test::read_file(d + "/model.safetensors");
  for (size_t cut : {size_t{4}, size_t{40}, bytes.size() / 2, bytes.size() - 1}) {
    test::write_file(d + "/model.safetensors", bytes.substr(0, cut));
    expect_one_line_error(run_cli("info -m '" + d + "'"), {"model.safetensors"});
  }
}

TEST(CliErrors, CorruptSafetensorsHeader) {
  std::string d = copy_dir(tiny_dir(), "corrupt");
  std::string bytes = test::read_file(d + "/model.safetensors");
  // An unknown dtype.
  std::string b1 = bytes;
  auto p = b1.find("\"F32\"");
  ASSERT_NE(p, std::string::npos);
  b1.replace(p, 5, "\"Q99\"");
  test::write_file(d + "/model.safetensors", b1);
  expect_one_line_error(run_cli("info -m '" + d + "'"), {"model.safetensors", "Q99"});
  // A header length far past the end of the file.
  std::string b2 = bytes;
  b2[5] = '\x7f';
  test::write_file(d + "/model.safetensors", b2);
  expect_one_line_error(run_cli("info -m '" + d + "'"), {"model.safetensors"});
}

TEST(CliErrors, Llama2cHeaders) {
  STRATA_REQUIRE_SHARED_DATA(data);
  std::string d = test::make_temp_dir("l2c");
  const std::string bytes = test::read_file(data + "/stories260K.bin");
  std::string magic = bytes;
  magic.replace(0, 4, std::string("\x32\x34\x6b\x61", 4));  // 0x616b3432 little-endian: llama2.c v1/v2
  test::write_file(d + "/v1.bin", magic);
  expect_one_line_error(run_cli("info -m '" + d + "/v1.bin'"), {"v1.bin", "not supported"});
  test::write_file(d + "/short.bin", bytes.substr(0, bytes.size() - 100));
  expect_one_line_error(run_cli("info -m '" + d + "/short.bin'"), {"short.bin"});
  std::string neg = bytes;
  neg.replace(8, 4, std::string("\xff\xff\xff\xff", 4));  // n_layers = -1
  test::write_file(d + "/neg.bin", neg);
  expect_one_line_error(run_cli("info -m '" + d + "/neg.bin'"), {"neg.bin", "layers"});
}

TEST(CliErrors, BadFlags) {
  expect_one_line_error(run_cli("generate -m x --top-p 2"), {"--top-p"});
  expect_one_line_error(run_cli("generate -m x --temp -1"), {"--temp"});
  expect_one_line_error(run_cli("bench --preset nope"), {"nope"});
  auto r = run_cli("generate -m '" + tiny_dir() + "' -n 2", "STRATA_ISA=sse9");
  expect_one_line_error(r, {"STRATA_ISA"});
  // NaN is no number, and the message names the flag as typed.
  expect_one_line_error(run_cli("generate -m x --temp nan"), {"--temp", "must be >= 0"});
  expect_one_line_error(run_cli("generate -m x --top-p 0"), {"--top-p", "(0, 1]"});
  // A negative window is an error, not "the whole context".
  expect_one_line_error(run_cli("ppl -m x --text y --ctx -5"), {"--ctx", "must be >= 0"});
}

TEST(Cli, NoArgumentsListsTheCommandsAndHelpShowsDefaults) {
  auto r = run_cli("");
  EXPECT_EQ(r.exit_code, 1);
  for (const char* c : {"generate", "logits", "init", "info", "ppl", "bench", "convert", "train-tokenizer", "tokenize",
                        "plot", "train", "sft", "module-run", "exact-match", "eval", "data", "quantize", "serve", "chat"})
    EXPECT_NE(r.out.find("\n  " + std::string(c) + " "), std::string::npos) << c << " missing in:\n" << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 5 + 19) << r.out;  // a header, then one line per command
  r = run_cli("generate --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("-n,--n-tokens INT:>= 0=256"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--temp FLOAT:>= 0=1"), std::string::npos) << r.out;
  EXPECT_NE(run_cli("bench --help").out.find("--prompt-len INT:> 0=512"), std::string::npos);
}

// Every command that loads a model takes the same loading flags.
TEST(Cli, ModelCommandsShareTheLoadingFlags) {
  for (const char* c : {"generate", "logits", "ppl", "bench", "info", "convert"}) {
    const std::string help = run_cli(std::string(c) + " --help").out;
    for (const char* flag : {"-m,--model", "--tokenizer", "--threads"})
      EXPECT_NE(help.find(flag), std::string::npos) << c << " has no " << flag;
  }
}

// bench -m honours --dtype (the matrices are converted), else keeps the stored one.
TEST(Cli, BenchDtypeAppliesToModels) {
  auto r = run_cli("bench -m '" + tiny_dir() + "' --prompt-len 8 --gen 2 --no-probe --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["dtype"], "F32");
  r = run_cli("bench -m '" + tiny_dir() + "' --dtype bf16 --prompt-len 8 --gen 2 --no-probe --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["dtype"], "BF16");
}

// convert --to hf keeps a BF16 model BF16 unless asked otherwise.
TEST(Cli, ConvertKeepsTheSourceDtype) {
  const std::string dir = test::make_temp_dir("bf16-src");
  ASSERT_EQ(run_cli("init --preset tiny --dtype bf16 -o '" + dir + "/m'").exit_code, 0);
  auto dtypes = [&](const std::string& d) {
    auto r = run_cli("info -m '" + d + "' --json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out)["bytes_by_dtype"];
  };
  ASSERT_EQ(run_cli("convert -m '" + dir + "/m' -o '" + dir + "/same' --to hf").exit_code, 0);
  EXPECT_TRUE(dtypes(dir + "/same").contains("BF16"));
  EXPECT_EQ(nlohmann::json::parse(test::read_file(dir + "/same/config.json"))["torch_dtype"], "bfloat16");
  ASSERT_EQ(run_cli("convert -m '" + dir + "/m' -o '" + dir + "/f32' --to hf --dtype f32").exit_code, 0);
  EXPECT_FALSE(dtypes(dir + "/f32").contains("BF16"));
}

// init and info take any config.json with a layer pattern.
TEST(Cli, InitAndInfoFromAConfigJson) {
  const std::string dir = test::make_temp_dir("cfg-init");
  test::write_file(dir + "/config.json", R"({"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
      "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
      "strata_layers": {"unit": [[{"kind": "swa", "window": 8}, "mlp"], ["attention", "mlp"]], "repeat": 2}})");
  auto r = run_cli("info --config '" + dir + "/config.json' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["config"]["num_hidden_layers"], 4);
  EXPECT_EQ(j["state"]["attention"]["modules"], 4);
  // Two windowed layers hold 8 positions, two full ones grow: at the full context (64) that is
  // (2 x 8 + 2 x 64) positions x (keys + values) x 2 KV heads x 8 x 4 bytes.
  EXPECT_EQ(j["state_bytes_at_context"], (2 * 8 + 2 * 64) * 2 * 16 * 4);
  r = run_cli("init --config '" + dir + "/config.json' -o '" + dir + "/m'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("info -m '" + dir + "/m'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("attention(window=8,"), std::string::npos) << r.out;
  expect_one_line_error(run_cli("init --config '" + dir + "/nope.json' -o '" + dir + "/x'"), {"nope.json"});
}

}  // namespace
}  // namespace strata
