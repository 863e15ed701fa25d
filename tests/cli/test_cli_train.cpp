// strata train / sft end to end: a killed run resumes to exactly the losses of
// an uninterrupted one; metrics, checkpoints and errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/rng.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

std::string random_tokens_bin(const std::string& dir, int64_t n, int vocab) {
  std::string path = dir + "/tokens.bin";
  std::ofstream f(path, std::ios::binary);
  Rng r(9);
  for (int64_t i = 0; i < n; ++i) {
    // A learnable pattern (next = prev + 1) with noise, so the loss can fall.
    const uint16_t v = static_cast<uint16_t>(r.uniform() < 0.8f ? (i % vocab) : r.next() % vocab);
    f.write(reinterpret_cast<const char*>(&v), 2);
  }
  return path;
}

std::vector<nlohmann::json> metrics(const std::string& run) {
  std::ifstream f(run + "/metrics.jsonl");
  std::vector<nlohmann::json> r;
  std::string line;
  while (std::getline(f, line)) r.push_back(nlohmann::json::parse(line));
  return r;
}

TEST(CliTrain, KilledRunResumesToIdenticalLosses) {
  const std::string dir = test::make_temp_dir("train");
  const std::string data = random_tokens_bin(dir, 20000, 512);
  const std::string args = "train --preset tiny --data '" + data +
                           "' --steps 12 --batch 2 --seq 16 --save-every 4 --eval-every 0 --lr 3e-3 --warmup 2 "
                           "--seed 3 --threads 2 -o ";
  auto a = test::run_cli(args + "'" + dir + "/a'");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  // Run b is killed once its checkpoint-4 is complete, then resumed.
  const std::string b = dir + "/b";
  const std::string script = "('" + std::string(STRATA_CLI_PATH) + "' " + args + "'" + b +
                             "' >/dev/null 2>&1 & pid=$!; for i in $(seq 1 2000); do "
                             "[ -f '" + b + "/checkpoint-4/COMPLETE' ] && break; sleep 0.01; done; "
                             "kill -9 $pid; wait $pid) 2>/dev/null";
  ASSERT_NE(std::system(script.c_str()), -1);
  ASSERT_TRUE(fs::exists(b + "/checkpoint-4/COMPLETE"));
  auto r = test::run_cli(args + "'" + b + "' --resume");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto ma = metrics(dir + "/a"), mb = metrics(b);
  ASSERT_EQ(ma.size(), 12u);
  ASSERT_EQ(mb.size(), 12u);  // no step twice
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(mb[i]["step"], ma[i]["step"]);
    EXPECT_EQ(mb[i]["loss"].get<double>(), ma[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(mb[i]["grad_norm"].get<double>(), ma[i]["grad_norm"].get<double>());
    EXPECT_EQ(mb[i]["lr"].get<double>(), ma[i]["lr"].get<double>());
  }
  EXPECT_LT(ma.back()["loss"].get<double>(), ma.front()["loss"].get<double>());
  // The final checkpoint is a model strata runs.
  auto info = test::run_cli("info -m '" + b + "/checkpoint-12' --json");
  EXPECT_EQ(info.exit_code, 0) << info.err;
  // Same seed and threads: bitwise the same losses.
  auto c = test::run_cli(args + "'" + dir + "/c'");
  ASSERT_EQ(c.exit_code, 0);
  auto mc = metrics(dir + "/c");
  for (size_t i = 0; i < ma.size(); ++i) EXPECT_EQ(mc[i]["loss"].get<double>(), ma[i]["loss"].get<double>());
}

TEST(CliTrain, OneThreadMatchesTwoThreads) {
  const std::string dir = test::make_temp_dir("threads");
  const std::string data = random_tokens_bin(dir, 5000, 512);
  const std::string args = "train --preset tiny --data '" + data + "' --steps 3 --batch 2 --seq 16 --seed 1 -o ";
  auto a = test::run_cli(args + "'" + dir + "/one' --threads 1");
  auto b = test::run_cli(args + "'" + dir + "/two' --threads 2");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto ma = metrics(dir + "/one"), mb = metrics(dir + "/two");
  for (size_t i = 0; i < ma.size(); ++i)
    EXPECT_NEAR(mb[i]["loss"].get<double>(), ma[i]["loss"].get<double>(), 1e-6 * ma[i]["loss"].get<double>());
}

TEST(CliTrain, BadInputIsOneLineAndTrainsNothing) {
  const std::string dir = test::make_temp_dir("bad");
  test::write_file(dir + "/odd.bin", std::string("\x01\x00\x02", 3));
  auto r = test::run_cli("train --preset tiny --data '" + dir + "/odd.bin' --steps 1 -o '" + dir + "/run'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("odd.bin"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoint-1"));
  // Token ids beyond the model's vocabulary.
  std::string big(64, '\xff');
  test::write_file(dir + "/big.bin", big);
  r = test::run_cli("train --preset tiny --data '" + dir + "/big.bin' --steps 1 --seq 4 --batch 1 -o '" + dir + "/run'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("big.bin"), std::string::npos) << r.err;
  // A GEMM backend name that does not exist.
  std::string ok;
  for (int i = 0; i < 200; ++i) ok += std::string{static_cast<char>(i % 50), '\0'};
  test::write_file(dir + "/ok.bin", ok);
  const std::string args = "train --preset tiny --data '" + dir + "/ok.bin' --steps 1 --seq 8 --batch 2 -o '" + dir;
  r = test::run_cli(args + "/run_bad'", "STRATA_GEMM=fast");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("STRATA_GEMM=fast"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/run_bad/checkpoint-1"));
  r = test::run_cli(args + "/run_own'", "STRATA_GEMM=own");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(CliSft, FineTunesOnChatJsonlAndGenerates) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("sft");
  std::ofstream f(dir + "/chat.jsonl");
  for (int i = 0; i < 8; ++i)
    f << R"({"messages":[{"role":"user","content":"Tell me a story."},{"role":"assistant","content":"Once upon a time, there was a cat."}]})"
      << "\n";
  f << R"({"prompt":"Who is Lily?","completion":"Lily is a little girl."})" << "\n";
  f.close();
  auto r = test::run_cli("sft --init '" + data + "/stories260K.bin' --tokenizer '" + data + "/tok512.model' --data '" +
                         dir + "/chat.jsonl' --steps 3 --batch 2 --seq 64 -o '" + dir + "/run'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto g = test::run_cli("generate -m '" + dir + "/run/checkpoint-3' -p 'Once' -n 5 --temp 0");
  EXPECT_EQ(g.exit_code, 0) << g.err;
  test::write_file(dir + "/bad.jsonl", "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}\n");
  r = test::run_cli("sft --init '" + data + "/stories260K.bin' --tokenizer '" + data + "/tok512.model' --data '" +
                    dir + "/bad.jsonl' --steps 1 -o '" + dir + "/run2'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.jsonl:1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace strata
