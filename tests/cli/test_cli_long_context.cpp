// Long-context commands through the binary (docs/long-context.md):
// --self-extend on logits / ppl / generate (G = 1 and W >= the length print
// byte-identical output; bad settings give one clear line).
#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace strata {
namespace {

using test::run_cli;

void expect_one_line_error(const test::CliResult& r, std::initializer_list<std::string> needles) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
}

TEST(CliSelfExtend, IdentitiesAndErrors) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string m = "-m '" + data + "/stories260K.bin' --tokenizer '" + data + "/tok512.model' ";
  const std::string prompt = "-p 'Once upon a time, there was a little girl named Lily. She loved to play.' ";
  auto plain = run_cli("logits " + m + prompt + "--top 3 --json");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  for (const char* se : {"1,4", "4,512", "2,64"}) {  // G = 1; W beyond the prompt
    auto r = run_cli("logits " + m + prompt + "--top 3 --json --self-extend " + se);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, plain.out) << se;
  }
  auto grouped = run_cli("logits " + m + prompt + "--top 3 --json --self-extend 2,4");
  ASSERT_EQ(grouped.exit_code, 0) << grouped.err;
  EXPECT_NE(grouped.out, plain.out);
  auto g = run_cli("generate " + m + "-p 'Once upon a time' -n 40 --temp 0 --self-extend 2,8");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  const std::string text = test::make_temp_dir("se") + "/t.txt";
  test::write_file(text, "Once upon a time, there was a little girl named Lily. She loved to play outside.\n");
  auto p = run_cli("ppl " + m + "--text '" + text + "' --self-extend 4,16 --json");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  expect_one_line_error(run_cli("logits " + m + prompt + "--self-extend 3,8"), {"--self-extend", "multiple of the group size 3"});
  expect_one_line_error(run_cli("logits " + m + prompt + "--self-extend 4"), {"--self-extend '4'", "G,W"});
  expect_one_line_error(run_cli("logits " + m + prompt + "--self-extend a,8"), {"--self-extend 'a,8'"});
  const std::string dir = test::make_temp_dir("se-mamba");
  ASSERT_EQ(run_cli("init --preset tiny-mamba -o '" + dir + "/m'").exit_code, 0);
  expect_one_line_error(run_cli("logits -m '" + dir + "/m' --tokenizer '" + data + "/tok512.model' " + prompt +
                                "--self-extend 2,8"),
                        {"no RoPE attention layer"});
}

// --decoding sets the paper's temperature, top-p and length; explicit flags win.
TEST(CliDecoding, PresetsEqualTheirFlags) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string g = "generate -m '" + data + "/stories260K.bin' --tokenizer '" + data +
                        "/tok512.model' -p 'Once upon a time' --seed 3 ";
  auto same = [&](const std::string& a, const std::string& b) {
    auto ra = run_cli(g + a), rb = run_cli(g + b);
    ASSERT_EQ(ra.exit_code, 0) << ra.err;
    ASSERT_EQ(rb.exit_code, 0) << rb.err;
    EXPECT_EQ(ra.out, rb.out) << a << " vs " << b;
  };
  same("-n 30 --decoding humaneval", "-n 30 --temp 0.2 --top-p 0.95");
  same("-n 30 --decoding mbpp", "-n 30 --temp 0.01 --top-p 0.95");
  same("-n 30 --decoding gsm8k", "-n 30 --temp 0");
  same("--decoding govreport", "--temp 0 -n 450");
  same("--decoding squality --temp 0.7", "--temp 0.7 -n 600");  // explicit --temp wins
  expect_one_line_error(run_cli(g + "--decoding mmlu"), {"unknown preset 'mmlu'", "humaneval"});
}

// eval passkey's table and JSON, data passkey's lines and sft --template none
// on them, eval length's table, JSON and plot for two models.
TEST(CliLongContext, PasskeyDataTuningAndLengthEval) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("longctx");
  const std::string tok = "--tokenizer '" + data + "/tok512.model' ";
  const std::string m260 = "-m '" + data + "/stories260K.bin' " + tok;
  auto r = run_cli("eval passkey " + m260 + "--lengths 200,300 --depths 0,1 --samples 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["lengths"], nlohmann::json({200, 300}));
  EXPECT_EQ(j["trials"].size(), 8u);
  for (const auto& t : j["trials"]) EXPECT_LE(t["prompt_tokens"].get<int64_t>(), t["length"].get<int64_t>());
  EXPECT_GE(j["overall"].get<double>(), 0.0);
  r = run_cli("eval passkey " + m260 + "--lengths 200 --depths 0.5 --samples 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("overall accuracy"), std::string::npos) << r.out;
  expect_one_line_error(run_cli("eval passkey " + m260 + "--lengths 20"), {"shorter than the prompt without filler"});
  expect_one_line_error(run_cli("eval passkey " + m260 + "--depths 0,2"), {"--depths", "'2'"});
  expect_one_line_error(run_cli("eval passkey " + m260 + "--lengths 64m"), {"--lengths", "'64m'"});
  // A KV cache that would not fit is refused before any work.
  expect_one_line_error(run_cli("eval passkey " + m260 + "--lengths 1k,500000k"),
                        {"passkey length 512000000 needs", "MiB of decode state", "available"});

  // Tuning data and one SFT run on it with the plain template.
  r = run_cli("data passkey " + tok + "--length 256 --count 6 -o '" + dir + "/pk.jsonl'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string lines = test::read_file(dir + "/pk.jsonl");
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 6);
  const auto first = nlohmann::json::parse(lines.substr(0, lines.find('\n')));
  EXPECT_NE(first["prompt"].get<std::string>().find("The pass key is"), std::string::npos);
  EXPECT_EQ(first["completion"].get<std::string>().size(), 7u);  // " 12345."
  ASSERT_EQ(run_cli("init --preset tiny-samba -o '" + dir + "/s'").exit_code, 0);
  r = run_cli("sft --init '" + dir + "/s' " + tok + "--data '" + dir + "/pk.jsonl' --template none --batch 2 --seq 256 "
              "--steps 2 -o '" + dir + "/tuned'");
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // Two models, one line each.
  const std::string text = dir + "/t.txt";
  std::string words;
  for (int i = 0; i < 600; ++i) words += i % 7 == 0 ? "Lily played in the park. " : "the dog ran ";
  test::write_file(text, words);
  r = run_cli("eval length -m '" + data + "/stories260K.bin' -m '" + dir + "/s' " + tok + "--text '" + text +
              "' --lengths 64,128,256 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto pts = nlohmann::json::parse(r.out);
  ASSERT_EQ(pts.size(), 6u);
  for (const auto& p : pts) {
    EXPECT_EQ(p["scored"], pts[0]["scored"]) << "not the same tokens at every length";
    EXPECT_GT(p["perplexity"].get<double>(), 1.0);
  }
  r = run_cli("eval length -m '" + data + "/stories260K.bin' " + tok + "--text '" + text + "' --lengths 64,100000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("length 100000 skipped"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace strata
