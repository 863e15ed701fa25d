// The trainer on a tiny model: frozen parameters stay out of the gradient
// norm and the finiteness check, one run per directory, resume checks the run
// settings, and the trainer state round-trips through one to_json/from_json.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "strata/error.h"
#include "strata/model.h"
#include "test_util.h"
#include "train/run_state.h"
#include "train/trainer.h"
#include "train/trainer_state.h"

namespace strata {
namespace {

const auto& metrics = test::read_metrics_lines;

namespace fs = std::filesystem;
using test::error_of;

constexpr int64_t kVocab = 32, kB = 2, kT = 8;

std::unique_ptr<Model> tiny_model() { return Model::random(llama_config(kVocab, 16, 32, 1, 2, 1, 64, false), 7, DType::F32); }

// A fixed, learnable batch for every micro-batch index.
void batch(int64_t m, int32_t* in, int32_t* tg) {
  for (int64_t i = 0; i < kB * kT; ++i) {
    in[i] = static_cast<int32_t>((m + i) % kVocab);
    tg[i] = static_cast<int32_t>((m + i + 1) % kVocab);
  }
}

TrainerOptions options(const std::string& run_dir, int64_t steps = 2) {
  TrainerOptions o;
  o.run_dir = run_dir;
  o.steps = steps;
  o.batch = kB;
  o.seq = kT;
  o.schedule.lr = 1e-3;
  o.schedule.min_lr = 1e-4;
  o.seed = 3;
  o.data_fingerprint = {{"tokens", 1000}, {"sample_hash", "abc"}};
  o.data_source = "tokens.bin";
  return o;
}

TrainerResult run(const TrainerOptions& o, const BatchFn& fn = batch) {
  auto m = tiny_model();
  return train(*m, o, fn, BatchFn());
}

TEST(Trainer, FrozenParamsAreOutsideTheGradNormAndFiniteCheck) {
  // Reference: the gradient norm of the one trainable parameter on step 1's batch.
  auto ref = tiny_model();
  ref->enable_training();
  std::vector<int32_t> in(kB * kT), tg(kB * kT);
  batch(0, in.data(), tg.data());
  ref->zero_grads();
  ref->train_batch(in.data(), tg.data(), kB, kT, 1.0f);
  double want = -1;
  for (auto& [name, g] : ref->named_grads())
    if (name == "model.norm.weight") want = global_grad_norm({{name, nullptr, g.f32(), g.numel(), g.shape, false}});
  ASSERT_GT(want, 0);

  TrainerOptions o = options(test::make_temp_dir("frozen"), 1);
  o.adamw.rules = {parse_param_group("*:frozen"), parse_param_group("model.norm.weight:lr_scale=1")};
  auto m = tiny_model();
  // A NaN in a frozen parameter's gradient (added to by backward) must not skip the step.
  auto poisoned = [&](int64_t i, int32_t* a, int32_t* b) {
    for (auto& [name, g] : m->named_grads())
      if (name == "model.layers.0.mlp.down_proj.weight") g.f32()[0] = std::numeric_limits<float>::quiet_NaN();
    batch(i, a, b);
  };
  auto r = train(*m, o, poisoned, BatchFn());
  EXPECT_EQ(r.skipped, 0);
  const auto lines = metrics(o.run_dir);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_FALSE(lines[0].contains("skipped")) << lines[0].dump();
  EXPECT_DOUBLE_EQ(lines[0]["grad_norm"].get<double>(), want);
}

TEST(Trainer, NothingTrainableIsAnError) {
  TrainerOptions o = options(test::make_temp_dir("allfrozen"));
  o.adamw.rules = {parse_param_group("*:frozen")};
  const std::string e = error_of([&] { run(o); });
  EXPECT_NE(e.find("nothing to train"), std::string::npos) << e;
  EXPECT_NE(e.find("frozen"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(o.run_dir + "/" + kMetricsFile));
}

TEST(Trainer, FreshRunIntoAUsedDirectoryIsRefused) {
  const std::string dir = test::make_temp_dir("used");
  run(options(dir));
  const std::string before = test::read_file(dir + "/" + kMetricsFile);
  std::string e = error_of([&] { run(options(dir)); });
  EXPECT_NE(e.find("checkpoint-2"), std::string::npos) << e;
  EXPECT_NE(e.find("--resume"), std::string::npos) << e;
  EXPECT_NE(e.find("another output directory"), std::string::npos) << e;
  EXPECT_EQ(test::read_file(dir + "/" + kMetricsFile), before);  // not truncated
  // Logged steps alone (the run died before its first checkpoint) also make a directory used.
  fs::remove_all(dir + "/checkpoint-2");
  e = error_of([&] { run(options(dir)); });
  EXPECT_NE(e.find("metrics.jsonl up to step 2"), std::string::npos) << e;
  // An empty metrics.jsonl (a run that died before its first step) does not.
  test::write_file(dir + "/" + kMetricsFile, "");
  EXPECT_EQ(run(options(dir)).last_step, 2);
}

TEST(Trainer, ResumeRefusesOtherSettingsNamingEveryOne) {
  const std::string dir = test::make_temp_dir("settings");
  run(options(dir));
  TrainerOptions o = options(dir, 4);
  o.resume = true;
  o.seed = 4;
  o.seq = 4;
  o.batch = 1;
  o.schedule.lr = 2e-3;
  o.adamw.weight_decay = 0.0;
  o.data_fingerprint["tokens"] = 999;
  const std::string e = error_of([&] { run(o); });
  for (const char* want : {"checkpoint-2", "seed (--seed): saved 3, given 4", "seq (--seq): saved 8, given 4",
                           "global_batch (--batch x --accum): saved 2, given 1", "lr (--lr): saved 0.001, given 0.002",
                           "weight_decay (--wd)", "data.tokens: saved 1000, given 999"})
    EXPECT_NE(e.find(want), std::string::npos) << want << " in: " << e;
  EXPECT_EQ(e.find("min_lr"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  // The same global batch split otherwise is the same run.
  TrainerOptions same = options(dir, 3);
  same.resume = true;
  same.batch = 1;
  same.accum = 2;
  auto r = run(same, [](int64_t m, int32_t* in, int32_t* tg) {
    std::vector<int32_t> a(kB * kT), b(kB * kT);  // micro-batch m of B=1 is half of B=2's m/2
    batch(m / 2, a.data(), b.data());
    std::copy_n(a.data() + (m % 2) * kT, kT, in);
    std::copy_n(b.data() + (m % 2) * kT, kT, tg);
  });
  EXPECT_EQ(r.start_step, 2);
  EXPECT_EQ(r.last_step, 3);
}

TEST(Trainer, ResumeMayRaiseStepsButNotBelowTheCheckpoint) {
  const std::string dir = test::make_temp_dir("steps");
  run(options(dir, 3));
  TrainerOptions o = options(dir, 2);
  o.resume = true;
  const std::string e = error_of([&] { run(o); });
  EXPECT_NE(e.find("--steps 2 is below step 3"), std::string::npos) << e;
  o.steps = 5;
  auto r = run(o);
  EXPECT_EQ(r.start_step, 3);
  EXPECT_EQ(r.last_step, 5);
  const auto lines = metrics(dir);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines.back()["lr"].get<double>(), 1e-4);  // the schedule follows the new total
  EXPECT_EQ(read_trainer_state(dir + "/checkpoint-5/" + kTrainerStateFile).total_steps, 5);
}

TEST(Trainer, ResumeWithoutCheckpointStartsFreshOnlyOverItsOwnMetrics) {
  const std::string dir = test::make_temp_dir("nock");
  TrainerOptions o = options(dir);
  o.resume = true;
  EXPECT_EQ(run(o).start_step, 0);  // empty directory: starts fresh
  // The same run, died before its first checkpoint: redone from step 1.
  fs::remove_all(dir + "/checkpoint-2");
  auto r = run(o);
  EXPECT_EQ(r.start_step, 0);
  EXPECT_EQ(metrics(dir).size(), 2u);
  // Another run's metrics are not overwritten.
  fs::remove_all(dir + "/checkpoint-2");
  TrainerOptions other = o;
  other.seed = 9;
  std::string e = error_of([&] { run(other); });
  EXPECT_NE(e.find("another run: seed (--seed): saved 3, given 9"), std::string::npos) << e;
  fs::remove(dir + "/" + std::string(kRunFile));
  e = error_of([&] { run(o); });
  EXPECT_NE(e.find("unknown settings"), std::string::npos) << e;
  EXPECT_EQ(metrics(dir).size(), 2u);
}

TEST(Trainer, CorruptTrainerStateIsAOneLineErrorNamingTheFile) {
  const std::string dir = test::make_temp_dir("corrupt");
  run(options(dir));
  const std::string path = dir + "/checkpoint-2/" + kTrainerStateFile;
  const std::string good = test::read_file(path);
  TrainerOptions o = options(dir, 3);
  o.resume = true;
  test::write_file(path, good.substr(0, good.size() / 2));  // truncated
  std::string e = error_of([&] { run(o); });
  EXPECT_NE(e.find(path + ": not valid JSON"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  auto j = nlohmann::json::parse(good);
  j["updates"] = "two";
  test::write_file(path, j.dump());
  e = error_of([&] { run(o); });
  EXPECT_NE(e.find(path + ": field 'updates' is not an integer"), std::string::npos) << e;
  j = nlohmann::json::parse(good);
  j["run"].erase("seq");
  test::write_file(path, j.dump());
  e = error_of([&] { run(o); });
  EXPECT_NE(e.find(path + ": field 'run.seq' missing"), std::string::npos) << e;
  test::write_file(path, good);
  EXPECT_EQ(run(o).last_step, 3);
}

TEST(Trainer, StateRoundTripsThroughJson) {
  TrainerState s;
  s.step = 12;
  s.updates = 11;
  s.total_steps = 20;
  s.recent_losses = {3.5, 0.1 + 0.2, 1e-300};
  RunSettings r;
  r.seed = 18446744073709551615ull;
  r.seq = 64;
  r.micro_batch = 4;
  r.accum = 3;
  r.lr = 3e-4;
  r.min_lr = 3e-4 / 10;
  r.warmup = 5;
  r.weight_decay = 0.1;
  r.data = {{"examples", 7}, {"hash", "00ff"}};
  r.data_source = "a.jsonl b.jsonl";
  s.run = r;
  const TrainerState t = TrainerState::from_json(s.to_json(), "state");
  EXPECT_EQ(t.step, 12);
  EXPECT_EQ(t.updates, 11);
  EXPECT_EQ(t.total_steps, 20);
  EXPECT_EQ(t.recent_losses, s.recent_losses);  // bit for bit
  ASSERT_TRUE(t.run);
  EXPECT_EQ(t.run->to_json(), r.to_json());
  EXPECT_EQ(t.run->global_batch(), 12);
  EXPECT_EQ(describe_mismatch(*t.run, r), "");
  // A state saved before the run settings were recorded still resumes.
  const TrainerState old = TrainerState::from_json(R"({"step":4,"updates":4,"recent_losses":[1.0],"seed":0})", "old");
  EXPECT_EQ(old.step, 4);
  EXPECT_FALSE(old.run);
  EXPECT_NE(error_of([] { TrainerState::from_json(R"({"step":4,"updates":5,"recent_losses":[]})", "f.json"); })
                .find("f.json: step 4 and updates 5 are inconsistent"),
            std::string::npos);
}

}  // namespace
}  // namespace strata
