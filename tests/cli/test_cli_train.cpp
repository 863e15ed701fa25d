// strata train / sft end to end: a killed run resumes to exactly the losses of
// an uninterrupted one; metrics, checkpoints and errors.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

using test::read_metrics_lines;
const auto& metrics = read_metrics_lines;

TEST(CliTrain, KilledRunResumesToIdenticalLosses) {
  const std::string dir = test::make_temp_dir("train");
  const std::string data = test::write_pattern_tokens(dir, 20000, 512);
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

// The short form of scripts/soak_train.sh: three SIGKILLs at spread-out
// moments, resumed each time; every checkpoint stays complete and loadable,
// and the losses equal an uninterrupted run's bit for bit.
TEST(CliTrain, SoakOfThreeKillsEndsWithTheUninterruptedLosses) {
  const std::string dir = test::make_temp_dir("soak");
  const std::string cmd = "STRATA='" + std::string(STRATA_CLI_PATH) + "' SOAK_DIR='" + dir + "' '" +
                          std::string(STRATA_SOURCE_DIR) + "/scripts/soak_train.sh' 3 >'" + dir + "/out' 2>&1";
  const int status = std::system(cmd.c_str());
  const std::string out = test::read_file(dir + "/out");
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0) << out;
  EXPECT_NE(out.find("losses equal to the uninterrupted run bit for bit"), std::string::npos) << out;
  EXPECT_NE(out.find("kill 3/3"), std::string::npos) << out;
}

TEST(CliTrain, OneThreadMatchesTwoThreads) {
  const std::string dir = test::make_temp_dir("threads");
  const std::string data = test::write_pattern_tokens(dir, 5000, 512);
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

// ---- run directories, resume, tokenizers, SFT validation ------------------------------------

// The stderr line of the error ("strata: error: ..."), "" when there is none.
std::string error_line(const std::string& err) {
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);)
    if (line.find("error:") != std::string::npos) return line;
  return "";
}

std::string chat_jsonl(const std::string& path, int n) {
  std::ofstream f(path);
  for (int i = 0; i < n; ++i)
    f << R"({"messages":[{"role":"user","content":"Tell me a story )" << i
      << R"(."},{"role":"assistant","content":"Once upon a time, there was a cat."}]})" << "\n";
  return path;
}

TEST(CliTrain, UsedRunDirectoryIsRefusedAndResumeChecksTheRun) {
  const std::string dir = test::make_temp_dir("used");
  const std::string data = test::write_pattern_tokens(dir, 5000, 512);
  const std::string run = dir + "/run";
  const std::string base = "train --preset tiny --data '" + data + "' --batch 2 --save-every 2 -o '" + run + "'";
  const std::string args = base + " --seq 16 --seed 3 --steps ";
  ASSERT_EQ(test::run_cli(args + "4").exit_code, 0);
  // A fresh run into it would truncate its metrics and mix checkpoints: refused.
  auto r = test::run_cli(args + "4");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("holds another run (checkpoint-4)"), std::string::npos) << r.err;
  EXPECT_NE(error_line(r.err).find("--resume"), std::string::npos) << r.err;
  EXPECT_EQ(metrics(run).size(), 4u);
  EXPECT_TRUE(fs::exists(run + "/checkpoint-2/COMPLETE"));
  // Resuming with other settings: every difference in one line.
  r = test::run_cli(base + " --steps 6 --resume --seed 9 --seq 32 --accum 2 --lr 1e-3 --warmup 1");
  EXPECT_EQ(r.exit_code, 1);
  const std::string e = error_line(r.err);
  for (const char* want : {"checkpoint-4: --resume with other settings", "seed (--seed): saved 3, given 9",
                           "seq (--seq): saved 16, given 32", "global_batch (--batch x --accum): saved 2, given 4",
                           "lr (--lr): saved 0.0003, given 0.001", "min_lr (--min-lr)", "warmup (--warmup): saved 0, given 1"})
    EXPECT_NE(e.find(want), std::string::npos) << want << " in: " << r.err;
  // Other data.
  const std::string other = dir + "/other";
  fs::create_directories(other);
  r = test::run_cli("train --preset tiny --data '" + test::write_pattern_tokens(other, 6000, 512) +
                    "' --batch 2 --seq 16 --seed 3 --save-every 2 -o '" + run + "' --steps 6 --resume");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("data.tokens: saved 5000, given 6000"), std::string::npos) << r.err;
  // --steps may be raised (the schedule follows the new total), not lowered below the checkpoint.
  r = test::run_cli(args + "6 --resume");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("not the same run as one started with --steps 6"), std::string::npos) << r.err;
  EXPECT_EQ(metrics(run).size(), 6u);
  r = test::run_cli(args + "5 --resume");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("--steps 5 is below step 6"), std::string::npos) << r.err;
}

TEST(CliTrain, CorruptTrainerStateIsOneLineNamingTheFile) {
  const std::string dir = test::make_temp_dir("corrupt");
  const std::string data = test::write_pattern_tokens(dir, 5000, 512);
  const std::string args =
      "train --preset tiny --data '" + data + "' --batch 2 --seq 16 --save-every 2 -o '" + dir + "/run' --steps ";
  ASSERT_EQ(test::run_cli(args + "2").exit_code, 0);
  const std::string state = dir + "/run/checkpoint-2/trainer_state.json";
  const std::string text = test::read_file(state);
  test::write_file(state, text.substr(0, text.size() - 5));
  auto r = test::run_cli(args + "4 --resume");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find(state + ": not valid JSON"), std::string::npos) << r.err;
}

// A disk that fills up during a checkpoint (a file size limit stands in
// for it): one line naming the file, the previous checkpoint intact, no
// half-written checkpoint left, and the run resumes once there is room.
TEST(CliTrain, AFullDiskFailsTheCheckpointAndKeepsThePreviousOne) {
  const std::string dir = test::make_temp_dir("fulldisk");
  const std::string data = test::write_pattern_tokens(dir, 5000, 512), run = dir + "/run";
  const std::string args =
      "train --preset tiny --data '" + data + "' --batch 2 --seq 16 --save-every 2 -o '" + run + "' --steps ";
  ASSERT_EQ(test::run_cli(args + "2").exit_code, 0);
  auto r = test::run_cli(args + "4 --resume", "ulimit -f 100;");  // 100 KiB: less than one checkpoint
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const std::string e = error_line(r.err);
  EXPECT_NE(e.find("File too large"), std::string::npos) << r.err;
  EXPECT_NE(e.find("checkpoint-4"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(run + "/checkpoint-4/COMPLETE"));
  for (const auto& f : fs::directory_iterator(run))
    EXPECT_EQ(f.path().filename().string().find(".tmp"), std::string::npos) << "left behind: " << f.path();
  EXPECT_EQ(test::run_cli("info -m '" + run + "/checkpoint-2'").exit_code, 0);
  r = test::run_cli(args + "4 --resume");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(run + "/checkpoint-4/COMPLETE"));
}

// A real full disk (a 3 MiB tmpfs: the first checkpoint fits, the second
// does not) and a run directory that became read-only, in a private mount
// namespace (unshare -m; needs root, else skipped visibly). Both fail with
// one line naming the file and the cause; the checkpoint before stays
// complete; once there is room the run resumes to the uninterrupted losses.
TEST(CliTrain, ANoSpaceOrReadOnlyRunDirectoryKeepsTheCheckpoint) {
  const std::string dir = test::make_temp_dir("nospace");
  if (std::system(("unshare -m sh -c 'mount -t tmpfs -o size=1m tmpfs \"" + dir + "\"' 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "cannot mount a tmpfs in a private mount namespace (needs root): skipping the ENOSPC and "
                    "read-only checks (the file-size-limit test above still runs)";
  const std::string data = test::write_pattern_tokens(dir, 5000, 512), mnt = dir + "/mnt", run = mnt + "/run";
  fs::create_directories(mnt);
  const std::string cli = std::string("'") + STRATA_CLI_PATH + "' train --preset tiny --data '" + data +
                          "' --batch 2 --seq 16 --save-every 1 --seed 3 --threads 1 -o '" + run + "' --steps ";
  auto step = [&](const std::string& name, const std::string& cmd) {  // its exit code, stderr and the tree after it
    return cmd + " 2>'" + dir + "/" + name + ".err'; echo \\$? >'" + dir + "/" + name + ".rc'; rm -rf '" + dir + "/" +
           name + "'; cp -a '" + run + "' '" + dir + "/" + name + "'; ";
  };
  const std::string script =
      "unshare -m sh -c \"mount -t tmpfs -o size=3m tmpfs '" + mnt + "' && " +
      step("full", cli + "4") +                                                 // checkpoint-2 does not fit
      "mount -o remount,size=64m '" + mnt + "' && " + step("resumed", cli + "4 --resume") +
      "mount -o remount,ro '" + mnt + "' && " + step("readonly", cli + "6 --resume") + "\"";
  ASSERT_EQ(std::system(script.c_str()), 0) << script;
  auto rc = [&](const std::string& name) { return std::stoi(test::read_file(dir + "/" + name + ".rc")); };
  auto err = [&](const std::string& name) { return error_line(test::read_file(dir + "/" + name + ".err")); };
  // Full: one line naming the checkpoint's file and the cause; checkpoint-1 complete, nothing half-written.
  EXPECT_EQ(rc("full"), 1) << err("full");
  EXPECT_NE(err("full").find("No space left on device"), std::string::npos) << err("full");
  EXPECT_NE(err("full").find("checkpoint-2"), std::string::npos) << err("full");
  EXPECT_TRUE(fs::exists(dir + "/full/checkpoint-1/COMPLETE"));
  EXPECT_FALSE(fs::exists(dir + "/full/checkpoint-2"));
  EXPECT_EQ(test::run_cli("info -m '" + dir + "/full/checkpoint-1'").exit_code, 0);
  // With room again the run resumes, to the losses of a run that never stopped.
  EXPECT_EQ(rc("resumed"), 0) << test::read_file(dir + "/resumed.err");
  for (const auto& f : fs::directory_iterator(dir + "/resumed"))
    EXPECT_EQ(f.path().filename().string().find(".tmp"), std::string::npos) << "left behind: " << f.path();
  auto whole = test::run_cli("train --preset tiny --data '" + data +
                             "' --batch 2 --seq 16 --save-every 1 --seed 3 --threads 1 --steps 4 -o '" + dir + "/whole'");
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  const auto mr = metrics(dir + "/resumed"), mw = metrics(dir + "/whole");
  ASSERT_EQ(mr.size(), mw.size());
  for (size_t i = 0; i < mw.size(); ++i) EXPECT_EQ(mr[i]["loss"].get<double>(), mw[i]["loss"].get<double>()) << i;
  // Read-only: refused with the file and the cause; checkpoint-4 untouched.
  EXPECT_EQ(rc("readonly"), 1);
  EXPECT_NE(err("readonly").find("Read-only file system"), std::string::npos) << err("readonly");
  EXPECT_NE(err("readonly").find(run), std::string::npos) << err("readonly");
  EXPECT_TRUE(fs::exists(dir + "/readonly/checkpoint-4/COMPLETE"));
  EXPECT_EQ(test::read_file(dir + "/readonly/checkpoint-4/model.safetensors"),
            test::read_file(dir + "/resumed/checkpoint-4/model.safetensors"));
}

TEST(CliTrain, NothingTrainableIsAnError) {
  const std::string dir = test::make_temp_dir("frozen");
  const std::string data = test::write_pattern_tokens(dir, 5000, 512);
  auto r = test::run_cli("train --preset tiny --data '" + data + "' --batch 2 --seq 16 --steps 2 --param-group '*:frozen' -o '" +
                         dir + "/run'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("nothing to train: every parameter is frozen"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoint-2"));
}

// Samba-family presets carry their published recipe (strata_training): warmup
// over 1% of the steps and decay on every parameter, unless flags say
// otherwise; a resumed run keeps the warmup it started with.
TEST(CliTrain, RecipeDefaultsFromTheModelConfig) {
  const std::string dir = test::make_temp_dir("recipe");
  const std::string data = test::write_pattern_tokens(dir, 8000, 512);
  const std::string base = "train --preset tiny-samba --data '" + data + "' --batch 2 --seq 16 --lr 1e-3 --save-every 200 ";
  auto r = test::run_cli(base + "--steps 200 -o '" + dir + "/a'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream f(dir + "/a/run.json");
  nlohmann::json run = nlohmann::json::parse(f);
  EXPECT_EQ(run["warmup"], 2);
  EXPECT_EQ(run["decay"], "all");
  const auto m = metrics(dir + "/a");
  ASSERT_EQ(m.size(), 200u);
  EXPECT_NEAR(m[0]["lr"].get<double>(), 5e-4, 1e-12);  // step 1 of 2 warmup steps
  std::ifstream cf(dir + "/a/checkpoint-200/config.json");
  EXPECT_EQ(nlohmann::json::parse(cf)["strata_training"], nlohmann::json::parse(R"({"warmup_fraction":0.01,"decay":"all"})"));
  // Growing --steps on resume keeps warmup 2 (1% of 400 would be 4).
  r = test::run_cli("train --init '" + dir + "/a/checkpoint-200' --data '" + data +
                    "' --batch 2 --seq 16 --lr 1e-3 --steps 3 -o '" + dir + "/b'");
  ASSERT_EQ(r.exit_code, 0) << r.err;  // --init carries the defaults too: warmup round(0.03) = 0
  std::ifstream fb(dir + "/b/run.json");
  EXPECT_EQ(nlohmann::json::parse(fb)["warmup"], 0);
  r = test::run_cli(base + "--steps 220 --resume -o '" + dir + "/a'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warmup 2 steps (as the run started"), std::string::npos) << r.err;
  // Flags win: no warmup, matrices only.
  r = test::run_cli(base + "--steps 2 --warmup 0 --decay matrices -o '" + dir + "/c'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream fc(dir + "/c/run.json");
  run = nlohmann::json::parse(fc);
  EXPECT_EQ(run["warmup"], 0);
  EXPECT_EQ(run["decay"], "matrices");
}

// `init --dtype bf16` then `train --init`: the checkpoints hold the F32 master weights and say so.
TEST(CliTrain, Bf16InitTrainsIntoF32Checkpoints) {
  const std::string dir = test::make_temp_dir("bf16");
  ASSERT_EQ(test::run_cli("init --preset tiny --dtype bf16 -o '" + dir + "/init'").exit_code, 0);
  ASSERT_EQ(nlohmann::json::parse(test::read_file(dir + "/init/config.json"))["torch_dtype"], "bfloat16");
  const std::string data = test::write_pattern_tokens(dir, 5000, 512);
  auto r = test::run_cli("train --init '" + dir + "/init' --data '" + data + "' --batch 2 --seq 16 --steps 2 -o '" + dir +
                         "/run'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string ck = dir + "/run/checkpoint-2";
  EXPECT_EQ(nlohmann::json::parse(test::read_file(ck + "/config.json"))["torch_dtype"], "float32");
  const std::string st = test::read_file(ck + "/model.safetensors");
  ASSERT_GT(st.size(), 8u);
  uint64_t n = 0;
  std::memcpy(&n, st.data(), 8);
  const auto header = nlohmann::json::parse(st.substr(8, n));
  int tensors = 0;
  for (const auto& [name, t] : header.items()) {
    if (name == "__metadata__") continue;
    EXPECT_EQ(t["dtype"], "F32") << name;
    ++tensors;
  }
  EXPECT_GT(tensors, 0);
  EXPECT_EQ(test::run_cli("info -m '" + ck + "' --json").exit_code, 0);
}

// The tokenizer of a tokenized data directory goes into every checkpoint; one
// that does not fit the model is refused before training.
TEST(CliTrain, CheckpointsCarryTheDataTokenizer) {
  STRATA_REQUIRE_SHARED_DATA(shared);
  const std::string dir = test::make_temp_dir("traintok");
  std::string text;
  for (int i = 0; i < 40; ++i) text += "Once upon a time, there was a little girl named Lily. She liked to play.\n\n";
  test::write_file(dir + "/text.txt", text);
  auto r = test::run_cli("tokenize --tokenizer '" + shared + "/tok512.model' --input '" + dir + "/text.txt' -o '" + dir +
                         "/data'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string args = "train --preset tiny --data '" + dir + "/data' --batch 2 --seq 16 --steps 2 -o '" + dir;
  r = test::run_cli(args + "/run'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(dir + "/run/checkpoint-2/tokenizer.model"), test::read_file(shared + "/tok512.model"));
  auto g = test::run_cli("generate -m '" + dir + "/run/checkpoint-2' -p 'Once' -n 3 --temp 0");
  EXPECT_EQ(g.exit_code, 0) << g.err;
  r = test::run_cli(args + "/run2' --tokenizer '" + shared + "/tokenizer.model'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("tokenizer.model: tokenizer has 32000 pieces but the model's vocab_size is 512"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(dir + "/run2"));
}

// Without --tokenizer, stories260K.bin loads tok512.model from beside it (the
// tokenizer.model there has 32000 pieces): that one must be in each checkpoint
// as soon as the checkpoint is complete, not copied after the run.
TEST(CliSft, EveryCheckpointHasTheLoadedTokenizerWhenComplete) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("sfttok");
  chat_jsonl(dir + "/chat.jsonl", 6);
  const std::string run = dir + "/run";
  const std::string script = "('" + std::string(STRATA_CLI_PATH) + "' sft --init '" + data + "/stories260K.bin' --data '" +
                             dir + "/chat.jsonl' --steps 100000 --batch 2 --seq 64 --save-every 1 -o '" + run +
                             "' >/dev/null 2>&1 & pid=$!; for i in $(seq 1 2000); do "
                             "[ -f '" + run + "/checkpoint-1/COMPLETE' ] && break; sleep 0.01; done; "
                             "[ -f '" + run + "/checkpoint-1/tokenizer.model' ] && touch '" + dir + "/had-tokenizer'; "
                             "kill -9 $pid; wait $pid) 2>/dev/null";
  ASSERT_NE(std::system(script.c_str()), -1);
  ASSERT_TRUE(fs::exists(run + "/checkpoint-1/COMPLETE"));
  EXPECT_TRUE(fs::exists(dir + "/had-tokenizer"));
  EXPECT_EQ(test::read_file(run + "/checkpoint-1/tokenizer.model"), test::read_file(data + "/tok512.model"));
  auto g = test::run_cli("generate -m '" + run + "/checkpoint-1' -p 'Once' -n 3 --temp 0");
  EXPECT_EQ(g.exit_code, 0) << g.err;
  // The directory now holds a run: a fresh sft into it is refused.
  auto r = test::run_cli("sft --init '" + data + "/stories260K.bin' --data '" + dir +
                         "/chat.jsonl' --steps 2 --batch 2 --seq 64 -o '" + run + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("holds another run"), std::string::npos) << r.err;
}

TEST(CliSft, HeldOutValidationIsLogged) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("sftval");
  const std::string chat = chat_jsonl(dir + "/chat.jsonl", 8);
  const std::string val = chat_jsonl(dir + "/val.jsonl", 3);
  const std::string args = "sft --init '" + data + "/stories260K.bin' --data '" + chat +
                           "' --steps 4 --batch 2 --seq 64 --eval-every 2 --eval-batches 1 -o '" + dir;
  auto val_steps = [&](const std::string& run) {
    std::vector<int64_t> steps;
    for (const auto& m : metrics(run))
      if (m.contains("val_loss")) {
        EXPECT_GT(m["val_loss"].get<double>(), 0);
        steps.push_back(m["step"]);
      }
    return steps;
  };
  auto r = test::run_cli(args + "/frac' --val-fraction 0.25");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("2 held out"), std::string::npos) << r.err;
  EXPECT_EQ(val_steps(dir + "/frac"), (std::vector<int64_t>{2, 4}));
  r = test::run_cli(args + "/files' --val-data '" + val + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(val_steps(dir + "/files"), (std::vector<int64_t>{2, 4}));
  // --eval-every with nothing to evaluate on is an error, not silently ignored.
  r = test::run_cli(args + "/none'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("--eval-every 2 needs validation data: give --val-data FILE... or --val-fraction F"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(dir + "/none"));
  r = test::run_cli(args + "/both' --val-fraction 0.25 --val-data '" + val + "'");
  EXPECT_NE(r.exit_code, 0);
}

TEST(CliSft, OverlongSampleNamesTheSeqLimit) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("sftlong");
  const std::string chat = chat_jsonl(dir + "/chat.jsonl", 2);
  auto r = test::run_cli("sft --init '" + data + "/stories260K.bin' --data '" + chat + "' --steps 1 --seq 8 -o '" + dir +
                         "/run'");
  EXPECT_EQ(r.exit_code, 1);
  const std::string e = error_line(r.err);
  EXPECT_NE(e.find("chat.jsonl:1: sample is"), std::string::npos) << r.err;
  EXPECT_NE(e.find("longer than --seq 8 + 1 = 9 tokens"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace strata
