// The Sliding GLA / Sliding RetNet test models through the binary, as a user
// runs them: init, train, resume (the resumed losses equal an uninterrupted
// run's), info (a constant decode state), bench; and, with the shared
// tokenizer, generate (the same tokens twice for a seed), ppl and logits.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "test_util.h"

namespace strata {
namespace {

using test::run_cli;

const char* const kPresets[] = {"tiny-sliding-gla", "tiny-sliding-retnet"};

std::string tokens_bin(const std::string& dir) {
  const std::string path = dir + "/tokens.bin";
  std::ofstream f(path, std::ios::binary);
  Rng r(3);
  for (int64_t i = 0; i < 8000; ++i) {
    const uint16_t v = static_cast<uint16_t>(r.uniform() < 0.8f ? i % 512 : r.next() % 512);
    f.write(reinterpret_cast<const char*>(&v), 2);
  }
  return path;
}

std::vector<double> losses(const std::string& run) {
  std::ifstream f(run + "/metrics.jsonl");
  std::vector<double> l;
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && j.contains("step")) l.push_back(j["loss"].get<double>());
  }
  return l;
}

TEST(CliLinearAttention, TrainResumeInfoBench) {
  for (const char* preset : kPresets) {
    SCOPED_TRACE(preset);
    const std::string dir = test::make_temp_dir("linattn");
    const std::string data = tokens_bin(dir);
    ASSERT_EQ(run_cli(std::string("init --preset ") + preset + " --seed 2 -o '" + dir + "/init'").exit_code, 0);
    const std::string base = "train --init '" + dir + "/init' --data '" + data + "' --batch 2 --seq 40 --lr 3e-3 --threads 2 ";
    auto r = run_cli(base + "--steps 6 -o '" + dir + "/full'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // A run that stopped after its checkpoint-3 (the later one removed), resumed.
    r = run_cli(base + "--steps 6 --save-every 3 -o '" + dir + "/part'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::filesystem::remove_all(dir + "/part/checkpoint-6");
    r = run_cli(base + "--steps 6 --save-every 3 --resume -o '" + dir + "/part'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("resuming from"), std::string::npos) << r.err;
    const std::vector<double> a = losses(dir + "/full"), b = losses(dir + "/part");
    ASSERT_EQ(a.size(), 6u);
    ASSERT_EQ(b, a) << "the resumed run differs from the uninterrupted one";
    EXPECT_LT(a.back(), a.front());
    r = run_cli("info -m '" + dir + "/full/checkpoint-6' --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto info = nlohmann::json::parse(r.out);
    EXPECT_NE(info.dump().find(std::string(preset).substr(5)), std::string::npos) << info.dump();
    r = run_cli("bench -m '" + dir + "/full/checkpoint-6' --prompt-len 100 --gen 8 --threads 2 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_GT(nlohmann::json::parse(r.out)["decode_tok_s"].get<double>(), 0);
  }
}

TEST(CliLinearAttention, GeneratePerplexityLogits) {
  STRATA_REQUIRE_SHARED_DATA(data);
  for (const char* preset : kPresets) {
    SCOPED_TRACE(preset);
    const std::string dir = test::make_temp_dir("linattn-gen");
    ASSERT_EQ(run_cli(std::string("init --preset ") + preset + " --seed 4 -o '" + dir + "/m'").exit_code, 0);
    const std::string model = "-m '" + dir + "/m' --tokenizer '" + data + "/tok512.model' ";
    auto g1 = run_cli("generate " + model + "-p 'Once upon a time' -n 12 --seed 7 --temp 0.8");
    auto g2 = run_cli("generate " + model + "-p 'Once upon a time' -n 12 --seed 7 --temp 0.8");
    ASSERT_EQ(g1.exit_code, 0) << g1.err;
    EXPECT_EQ(g1.out, g2.out);
    EXPECT_FALSE(g1.out.empty());
    const std::string text = dir + "/t.txt";
    test::write_file(text, "Once upon a time, there was a little girl named Lily. She loved to play outside.\n");
    auto p = run_cli("ppl " + model + "--text '" + text + "' --json");
    ASSERT_EQ(p.exit_code, 0) << p.err;
    const double ppl = nlohmann::json::parse(p.out)["perplexity"];
    EXPECT_GT(ppl, 100.0);  // random weights over 512 tokens: near uniform
    EXPECT_LT(ppl, 2000.0);
    auto l = run_cli("logits " + model + "-p 'Once upon a time' --top 3 --json");
    ASSERT_EQ(l.exit_code, 0) << l.err;
    EXPECT_EQ(nlohmann::json::parse(l.out)["tokens"].size(), 5u);
  }
}

}  // namespace
}  // namespace strata
