// Training over several processes (docs/distributed.md): `mpirun -np 2
// strata train|sft` is the computation one process does with --accum 2
// (with and without ZeRO-1), checkpoints resume with another number of ranks,
// a killed rank stops the run, rank 0 alone decides about the run directory.
// Two ranks on loopback; a build without MPI (the sanitizer build) checks
// that a launch of several processes is refused.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "io/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

using test::run_cli;
const auto& metrics = test::read_metrics_lines;

// mpirun on PATH, or "" (the tests then skip, saying so).
std::string mpirun_path() {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
    const std::string p = std::string(dir) + "/mpirun";
    if (fs::exists(p)) return p;
  }
  return "";
}

#define STRATA_REQUIRE_MPI()                                                                            \
  if (mpirun_path().empty()) GTEST_SKIP() << "mpirun not found (openmpi-bin): skipping the MPI runs"; \
  if (!kBuiltWithMpi) GTEST_SKIP() << "strata built without MPI (STRATA_MPI=OFF): skipping the MPI runs"

#ifdef STRATA_HAVE_MPI
constexpr bool kBuiltWithMpi = true;
#else
constexpr bool kBuiltWithMpi = false;
#endif

// `strata ARGS` as `ranks` processes on this machine, bounded in time.
test::CliResult run_ranks(int ranks, const std::string& args, int timeout_s = 300) {
  return test::run_binary("timeout", std::to_string(timeout_s) + " '" + mpirun_path() +
                                         "' --allow-run-as-root --oversubscribe --bind-to none -np " +
                                         std::to_string(ranks) + " '" + STRATA_CLI_PATH + "' " + args);
}

// Losses of two runs equal to `tol` relative, step by step.
void expect_same_losses(const std::string& a, const std::string& b, double tol = 1e-6) {
  const auto ma = metrics(a), mb = metrics(b);
  ASSERT_EQ(ma.size(), mb.size()) << a << " vs " << b;
  ASSERT_FALSE(ma.empty());
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(ma[i]["step"], mb[i]["step"]);
    const double x = ma[i]["loss"].get<double>(), y = mb[i]["loss"].get<double>();
    EXPECT_LE(std::fabs(x - y), tol * std::fabs(x)) << "step " << ma[i]["step"] << ": " << x << " vs " << y;
  }
}

// Every weight of two checkpoints equal to 1e-6 relative (L2 over each
// tensor), and every AdamW moment to 1e-4: the moments are running sums of
// gradients, whose summation order differs between the runs (one process
// accumulates micro-batches into its gradient; ranks add theirs in the
// all-reduce), and small gradients keep that rounding in full.
void expect_same_checkpoint(const std::string& a, const std::string& b) {
  for (const char* file : {"/model.safetensors", "/optimizer.safetensors"}) {
    const double tol = std::string(file) == "/model.safetensors" ? 1e-6 : 1e-4;
    WeightSet wa, wb;
    read_safetensors(a + file, wa);
    read_safetensors(b + file, wb);
    ASSERT_EQ(wa.tensors.size(), wb.tensors.size()) << file;
    for (const auto& [name, t] : wa.tensors) {
      const Tensor* u = wb.find(name);
      ASSERT_TRUE(u) << name;
      ASSERT_EQ(u->shape, t.shape) << name;
      EXPECT_LE(test::relative_error(u->f32(), t.f32(), t.numel()), tol) << file << " " << name;
    }
  }
}

const std::string kTrain = " --batch 2 --seq 16 --lr 3e-3 --warmup 2 --seed 3 --threads 1 ";

TEST(CliMpi, TwoRanksAreOneProcessWithTwiceTheAccumulation) {
  STRATA_REQUIRE_MPI();
  const std::string dir = test::make_temp_dir("mpi-dp");
  const std::string args = "train --preset tiny --data '" + test::write_pattern_tokens(dir, 20000, 512) + "'" + kTrain + "--steps 20 -o '" + dir;
  auto one = run_cli(args + "/one' --accum 2");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto two = run_ranks(2, args + "/two'");
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_NE(two.err.find("2 ranks (2 on this machine), 1 threads each"), std::string::npos) << two.err;
  EXPECT_NE(two.err.find("data-parallel over 2 ranks"), std::string::npos) << two.err;
  // Rank 0 alone reports: one result line, one metrics line per step.
  EXPECT_EQ(two.out.find("final step 20"), two.out.rfind("final step 20")) << two.out;
  expect_same_losses(dir + "/one", dir + "/two");
  expect_same_checkpoint(dir + "/one/checkpoint-20", dir + "/two/checkpoint-20");
  EXPECT_EQ(metrics(dir + "/two").back()["samples"], 80);  // 20 steps x 2 ranks x batch 2

  // ZeRO-1 with small buckets (every layer's gradients cut over several) and
  // the reductions after the backward: the same run.
  auto zero = run_ranks(2, args + "/zero' --zero 1 --bucket-mb 0.02 --overlap off");
  ASSERT_EQ(zero.exit_code, 0) << zero.err;
  EXPECT_NE(zero.err.find("(ZeRO-1;"), std::string::npos) << zero.err;
  expect_same_losses(dir + "/one", dir + "/zero");
  expect_same_checkpoint(dir + "/one/checkpoint-20", dir + "/zero/checkpoint-20");
  // The checkpoint is an ordinary one: `strata info` and generation read it.
  EXPECT_EQ(run_cli("info -m '" + dir + "/zero/checkpoint-20' --json").exit_code, 0);
}

TEST(CliMpi, SambaTrainsAlikeOverTwoRanksWithZero) {
  STRATA_REQUIRE_MPI();
  const std::string dir = test::make_temp_dir("mpi-samba");
  const std::string args =
      "train --preset tiny-samba --data '" + test::write_pattern_tokens(dir, 20000, 512) + "'" + kTrain + "--steps 8 --save-every 4 -o '" + dir;
  auto one = run_cli(args + "/one' --accum 4");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto two = run_ranks(2, args + "/two' --accum 2 --zero 1 --bucket-mb 0.05");
  ASSERT_EQ(two.exit_code, 0) << two.err;
  expect_same_losses(dir + "/one", dir + "/two");
  expect_same_checkpoint(dir + "/one/checkpoint-8", dir + "/two/checkpoint-8");
}

TEST(CliMpi, HypernetSftOverTwoRanks) {
  STRATA_REQUIRE_MPI();
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("mpi-hn");
  ASSERT_EQ(run_cli("convert -m '" + data + "/stories260K.bin' -o '" + dir +
                    "/hn' --add-hypernet --soft-tokens 8 --hypernet-heads 4 --chunk 4 --seed 3")
                .exit_code,
            0);
  std::ofstream(dir + "/qa.jsonl")
      << R"({"prompt": "Tell me a story.", "completion": "Once upon a time, there was a little girl named Lily."})"
      << "\n"
      << R"({"prompt": "Who is Tom?", "completion": "Tom is a big dog. He likes to run and jump."})" << "\n"
      << R"({"prompt": "What did Lily see?", "completion": "She saw a big red ball under a tree."})" << "\n"
      << R"({"prompt": "Say hi.", "completion": "Hi! How are you today?"})" << "\n";
  const std::string args = "sft --hypernet --stage 2 --llm-lr 1e-3 --init '" + dir + "/hn' --data '" + dir +
                           "/qa.jsonl' --steps 4 --batch 1 --seed 5 --lr 1e-3 --threads 1 -o '" + dir;
  auto one = run_cli(args + "/one' --accum 2");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto two = run_ranks(2, args + "/two' --zero 1");
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_NE(two.err.find("reduced after the backward"), std::string::npos) << two.err;
  expect_same_losses(dir + "/one", dir + "/two");
  expect_same_checkpoint(dir + "/one/checkpoint-4", dir + "/two/checkpoint-4");
}

TEST(CliMpi, CheckpointsResumeWithAnotherNumberOfRanks) {
  STRATA_REQUIRE_MPI();
  const std::string dir = test::make_temp_dir("mpi-resume");
  const std::string args =
      "train --preset tiny --data '" + test::write_pattern_tokens(dir, 20000, 512) + "'" + kTrain + "--save-every 5 --steps ";
  auto whole = run_ranks(2, args + "20 -o '" + dir + "/whole'");
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  // Saved by 2 ranks (ZeRO-1: the moments gathered into one file), resumed
  // by one process with the same global batch: the same run.
  ASSERT_EQ(run_ranks(2, args + "20 -o '" + dir + "/a' --zero 1").exit_code, 0);
  fs::remove_all(dir + "/a/checkpoint-20");
  fs::remove_all(dir + "/a/checkpoint-15");
  auto r = run_cli(args + "20 -o '" + dir + "/a' --resume --accum 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("(step 10, sample 40)"), std::string::npos) << r.err;
  expect_same_losses(dir + "/whole", dir + "/a");
  expect_same_checkpoint(dir + "/whole/checkpoint-20", dir + "/a/checkpoint-20");
  // And back: saved by one process, resumed by 2 ranks.
  ASSERT_EQ(run_cli(args + "20 -o '" + dir + "/b' --accum 2").exit_code, 0);
  fs::remove_all(dir + "/b/checkpoint-20");
  r = run_ranks(2, args + "20 -o '" + dir + "/b' --resume --zero 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_losses(dir + "/whole", dir + "/b");
  // Another global batch (the same --batch, another number of ranks): the
  // data goes on from the sample where the run stopped.
  ASSERT_EQ(run_ranks(2, args + "5 -o '" + dir + "/c'").exit_code, 0);
  r = run_cli(args + "8 -o '" + dir + "/c' --resume");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("saved with 2 rank(s) (global batch 4), it goes on with 1 (global batch 2)"),
            std::string::npos)
      << r.err;
  const auto mc = metrics(dir + "/c");
  ASSERT_EQ(mc.size(), 8u);
  for (size_t i = 0; i < mc.size(); ++i)
    EXPECT_EQ(mc[i]["samples"].get<int64_t>(), i < 5 ? 4 * int64_t(i + 1) : 20 + 2 * int64_t(i - 4)) << i;
  // Another micro-batch is another run.
  std::string other = args;
  other.replace(other.find("--batch 2"), 9, "--batch 4");
  r = run_cli(other + "9 -o '" + dir + "/c' --resume");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--resume with other settings"), std::string::npos) << r.err;
}

TEST(CliMpi, AKilledRankStopsTheRunAndItResumes) {
  STRATA_REQUIRE_MPI();
  const std::string dir = test::make_temp_dir("mpi-kill");
  const std::string run = dir + "/run";
  const std::string args = "train --preset tiny --data '" + test::write_pattern_tokens(dir, 20000, 512) + "'" + kTrain + "--save-every 2 -o '" +
                           run + "' --steps ";
  // Rank 1 is killed once checkpoint-4 is complete; mpirun's exit is timed.
  const std::string script =
      "(timeout 120 '" + mpirun_path() + "' --allow-run-as-root --oversubscribe --bind-to none -np 2 '" +
      STRATA_CLI_PATH + "' " + args + "100000 >'" + dir + "/out' 2>&1; echo $? >'" + dir + "/rc') & " +
      "for i in $(seq 1 3000); do [ -f '" + run + "/checkpoint-4/COMPLETE' ] && break; sleep 0.01; done; " +
      "for p in $(pgrep -f '" + run + "'); do tr '\\0' '\\n' </proc/$p/environ 2>/dev/null | " +
      "grep -qx OMPI_COMM_WORLD_RANK=1 && kill -9 $p && date +%s.%N >'" + dir + "/killed'; done; wait";
  ASSERT_EQ(std::system(script.c_str()), 0);
  const auto done = std::chrono::system_clock::now();
  const std::string out = test::read_file(dir + "/out");
  ASSERT_TRUE(fs::exists(dir + "/killed")) << "no rank 1 found to kill\n" << out;
  const double killed_at = std::stod(test::read_file(dir + "/killed"));
  const double ended_at = std::chrono::duration<double>(done.time_since_epoch()).count();
  EXPECT_LT(ended_at - killed_at, 60.0) << out;  // the other rank did not hang (timeout would say 124)
  const int rc = std::stoi(test::read_file(dir + "/rc"));
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(rc, 124) << "mpirun hung until the timeout\n" << out;
  EXPECT_NE(out.find("rank 1"), std::string::npos) << out;  // mpirun names the dead rank
  // Every checkpoint left is complete, and the run resumes from the newest.
  int64_t newest = 0;
  for (const auto& e : fs::directory_iterator(run)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0) continue;
    EXPECT_TRUE(fs::exists(e.path() / "COMPLETE")) << name;
    newest = std::max<int64_t>(newest, std::stoll(name.substr(11)));
  }
  ASSERT_GE(newest, 4);
  auto r = run_cli(args + std::to_string(newest + 2) + " --resume --accum 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("(step " + std::to_string(newest) + ","), std::string::npos) << r.err;
}

TEST(CliMpi, RankZeroAloneDecidesAboutTheRunDirectory) {
  STRATA_REQUIRE_MPI();
  const std::string dir = test::make_temp_dir("mpi-used");
  const std::string data = test::write_pattern_tokens(dir, 20000, 512);
  const std::string args = "train --preset tiny --data '" + data + "'" + kTrain + "--steps 2 -o '" + dir;
  ASSERT_EQ(run_cli(args + "/run'").exit_code, 0);
  const std::string before = test::read_file(dir + "/run/metrics.jsonl");
  auto r = run_ranks(2, args + "/run'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("strata: error: rank 0 of 2: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("holds another run"), std::string::npos) << r.err;
  EXPECT_EQ(test::read_file(dir + "/run/metrics.jsonl"), before);  // nothing written
  // Ranks started as different runs (here another weight decay on rank 1) are refused.
  r = test::run_binary("timeout", "120 '" + mpirun_path() + "' --allow-run-as-root --oversubscribe -np 2 sh -c '\"" +
                                      STRATA_CLI_PATH + "\" train --preset tiny --data \"" + data + "\"" + kTrain +
                                      "--steps 2 -o \"" + dir + "/other\" --wd 0.$OMPI_COMM_WORLD_RANK'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("rank 1 was started with other settings than rank 0 (weight_decay (--wd)"), std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(dir + "/other/metrics.jsonl"));
}

// Built without MPI, a launch of several processes would make each train
// alone into the same directory: it is refused.
TEST(CliMpi, ABuildWithoutMpiRefusesSeveralProcesses) {
  if (mpirun_path().empty()) GTEST_SKIP() << "mpirun not found (openmpi-bin): skipping";
  if (kBuiltWithMpi) GTEST_SKIP() << "this build has MPI (the sanitizer build, STRATA_MPI=OFF, runs this check)";
  const std::string dir = test::make_temp_dir("mpi-none");
  auto r = run_ranks(2, "train --preset tiny --data '" + test::write_pattern_tokens(dir, 20000, 512) + "'" + kTrain + "--steps 2 -o '" + dir +
                            "/run'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("built without MPI"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/run/metrics.jsonl"));
}

}  // namespace
}  // namespace strata
