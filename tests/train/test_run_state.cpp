// Run directories: atomic checkpoints, crash leftovers, pruning, metrics.jsonl
// truncation on resume, and `strata plot` (one run, and several overlaid).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/checkpoint.h"
#include "strata/error.h"
#include "strata/model.h"
#include "test_util.h"
#include "train/run_state.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using test::error_of;

Config tiny_config() { return llama_config(32, 16, 32, 1, 2, 1, 64, false); }

NamedTensors tiny_model(uint64_t seed) {
  auto m = Model::random(tiny_config(), seed, DType::F32);
  NamedTensors out;
  for (auto& [name, t] : m->named_tensors()) out.emplace_back(name, t.to(DType::F32));  // owned copies
  return out;
}

NamedTensors tiny_optim() {
  Tensor m = Tensor::alloc(DType::F32, {4});
  for (int i = 0; i < 4; ++i) m.f32()[i] = 0.25f * i;
  return {{"optim.m.x", m}, {"optim.v.x", Tensor::alloc(DType::F32, {4})}};
}

void save(const std::string& run, int64_t step, int keep_last, const std::string& state = "") {
  save_checkpoint(run, step, tiny_config(), tiny_model(step), tiny_optim(),
                  state.empty() ? nlohmann::json{{"step", step}}.dump() : state, keep_last);
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(RunState, SaveWritesLoadableCompleteDir) {
  const std::string run = test::make_temp_dir("run") + "/sub/run";  // created on demand
  save(run, 120, 0, R"({"step":120,"rng":[1,2,3,4]})");
  const std::string dir = run + "/checkpoint-120";
  EXPECT_EQ(checkpoint_dir(run, 120), dir);
  EXPECT_EQ(entries(run), std::vector<std::string>{"checkpoint-120"});  // no temp dir left
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"COMPLETE", "config.json", "model.safetensors",
                                                    "optimizer.safetensors", "trainer_state.json"}));
  EXPECT_TRUE(is_complete_checkpoint(dir));
  EXPECT_EQ(test::read_file(dir + "/trainer_state.json"), R"({"step":120,"rng":[1,2,3,4]})");

  // The model loads as a normal checkpoint with the same bits.
  auto m = Model::load(dir);
  const NamedTensors want = tiny_model(120);
  const auto got = m->named_tensors();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(std::memcmp(got[i].second.data, want[i].second.data, want[i].second.nbytes()), 0) << want[i].first;
  }
  WeightSet ws;
  read_safetensors(dir + "/optimizer.safetensors", ws);
  ASSERT_NE(ws.find("optim.m.x"), nullptr);
  EXPECT_EQ(ws.find("optim.m.x")->f32()[3], 0.75f);
  EXPECT_EQ(latest_checkpoint(run), dir);
}

// A crash while saving leaves a .tmp dir (even one with every file) or, in a
// crash during a copy by hand, a checkpoint dir without COMPLETE: both ignored.
TEST(RunState, CrashLeftoversAreIgnored) {
  const std::string run = test::make_temp_dir("run");
  EXPECT_EQ(latest_checkpoint(run), std::nullopt);
  EXPECT_EQ(latest_checkpoint(run + "/does-not-exist"), std::nullopt);
  save(run, 2, 0);
  save(run, 4, 0);
  const std::string stale = run + "/.tmp-checkpoint-6-999999999";  // a pid that cannot exist
  fs::create_directories(stale);
  for (const auto& e : fs::directory_iterator(run + "/checkpoint-4")) fs::copy(e.path(), stale);
  const std::string incomplete = run + "/checkpoint-8";
  fs::create_directories(incomplete);
  for (const auto& e : fs::directory_iterator(run + "/checkpoint-4"))
    if (e.path().filename() != "COMPLETE") fs::copy(e.path(), incomplete);
  fs::create_directories(run + "/checkpoint-9");  // empty
  fs::create_directories(run + "/checkpoint-x10");  // not a checkpoint name
  // A temp dir of a live process (a save in progress elsewhere) must survive.
  const std::string live = run + "/.tmp-checkpoint-7-" + std::to_string(getppid());
  fs::create_directories(live);

  EXPECT_FALSE(is_complete_checkpoint(incomplete));
  EXPECT_EQ(latest_checkpoint(run), run + "/checkpoint-4");
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(incomplete));  // ignored, not deleted
  auto all = list_checkpoints(run);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 2);
  EXPECT_EQ(all[1].first, 4);
  fs::remove_all(live);
}

TEST(RunState, KeepLastPrunesOlderComplete) {
  const std::string run = test::make_temp_dir("run");
  for (int64_t s : {100, 200, 300, 1000, 1100}) save(run, s, 2);
  EXPECT_EQ(entries(run), (std::vector<std::string>{"checkpoint-1000", "checkpoint-1100"}));  // numeric order
  save(run, 1200, 0);  // keep all
  save(run, 1300, -1);
  EXPECT_EQ(list_checkpoints(run).size(), 4u);
  save(run, 1400, 1);
  EXPECT_EQ(entries(run), std::vector<std::string>{"checkpoint-1400"});
  // The checkpoint just written is kept even when a later one exists.
  save(run, 1500, 0);
  save(run, 50, 1);
  EXPECT_EQ(entries(run), std::vector<std::string>{"checkpoint-50"});
}

TEST(RunState, ResaveReplacesAndBadStateLeavesNothing) {
  const std::string run = test::make_temp_dir("run");
  save(run, 3, 0, R"({"v":1})");
  save(run, 3, 0, R"({"v":2})");
  EXPECT_EQ(test::read_file(run + "/checkpoint-3/trainer_state.json"), R"({"v":2})");
  EXPECT_EQ(entries(run), std::vector<std::string>{"checkpoint-3"});
  EXPECT_NE(error_of([&] { save(run, 4, 0, "{not json"); }).find("trainer state is not valid JSON"),
            std::string::npos);
  Config bad = tiny_config();
  bad.hidden_size = 0;
  EXPECT_NE(error_of([&] { save_checkpoint(run, 5, bad, tiny_model(1), tiny_optim(), "{}", 0); }), "<no error>");
  EXPECT_EQ(entries(run), std::vector<std::string>{"checkpoint-3"});  // no temp dir, no partial checkpoint
}

// The tokenizer is part of the checkpoint when COMPLETE appears, never added later.
TEST(RunState, SaveCopiesTheTokenizerBeforeComplete) {
  const std::string run = test::make_temp_dir("run");
  const std::string tok = run + "/../my-tok.model";
  test::write_file(tok, "not really a sentencepiece model");
  save_checkpoint(run, 7, tiny_config(), tiny_model(7), tiny_optim(), "{}", 0, tok);
  EXPECT_EQ(entries(run + "/checkpoint-7"), (std::vector<std::string>{"COMPLETE", "config.json", "model.safetensors",
                                                                     "optimizer.safetensors", "tokenizer.model",
                                                                     "trainer_state.json"}));
  EXPECT_EQ(test::read_file(run + "/checkpoint-7/tokenizer.model"), "not really a sentencepiece model");
  // A tokenizer that cannot be copied fails the save and leaves no checkpoint.
  const std::string e = error_of(
      [&] { save_checkpoint(run, 8, tiny_config(), tiny_model(8), tiny_optim(), "{}", 0, run + "/missing.model"); });
  EXPECT_NE(e.find("missing.model: cannot copy the tokenizer"), std::string::npos) << e;
  EXPECT_EQ(entries(run), std::vector<std::string>{"checkpoint-7"});
}

TEST(Metrics, LastLoggedStep) {
  const std::string dir = test::make_temp_dir("run");
  EXPECT_EQ(last_logged_step(dir + "/metrics.jsonl"), -1);
  test::write_file(dir + "/metrics.jsonl", "");
  EXPECT_EQ(last_logged_step(dir + "/metrics.jsonl"), -1);
  test::write_file(dir + "/metrics.jsonl", "{\"step\":1,\"loss\":2}\n{\"step\":3,\"val_loss\":2}\n{\"step\":4,");
  EXPECT_EQ(last_logged_step(dir + "/metrics.jsonl"), 3);  // the torn line does not count
}

void write_steps(MetricsLog& log, int64_t from, int64_t to) {
  for (int64_t s = from; s <= to; ++s) {
    log.write(nlohmann::ordered_json{{"step", s}, {"loss", 10.0 - s}, {"lr", 1e-3}});
    if (s % 5 == 0) log.write(nlohmann::ordered_json{{"step", s}, {"val_loss", 11.0 - s}});
  }
}

std::vector<int64_t> steps_of(const std::string& path) {
  std::vector<int64_t> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) out.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  return out;
}

TEST(Metrics, TruncateOnResume) {
  const std::string path = test::make_temp_dir("run") + "/metrics.jsonl";
  {
    MetricsLog log(path, false, 0);
    write_steps(log, 1, 12);
    log.sync();
  }
  EXPECT_EQ(steps_of(path).size(), 12u + 2u);
  {
    MetricsLog log(path, true, 10);  // resumed from checkpoint-10: steps 11, 12 are redone
    EXPECT_EQ(steps_of(path), (std::vector<int64_t>{1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 10}));
    write_steps(log, 11, 15);
  }
  const auto steps = steps_of(path);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 10, 11, 12, 13, 14, 15, 15}));
  const MetricsSeries m = read_metrics(path);
  EXPECT_EQ(m.loss.size(), 15u);
  ASSERT_EQ(m.val_loss.size(), 3u);
  EXPECT_EQ(m.val_loss[2], (std::pair<int64_t, double>{15, -4.0}));
  EXPECT_EQ(test::read_file(path).substr(0, 31), R"({"step":1,"loss":9.0,"lr":0.001)");  // key order kept

  // A crash mid-line leaves a torn last line: dropped on resume.
  {
    std::ofstream f(path, std::ios::app);
    f << R"({"step":16,"lo)";
  }
  { MetricsLog log(path, true, 100); }
  EXPECT_EQ(steps_of(path).back(), 15);
  // A fresh run (no --resume) starts an empty file.
  { MetricsLog log(path, false, 0); }
  EXPECT_EQ(test::read_file(path), "");
  // Resuming with no file yet creates it.
  const std::string fresh = test::make_temp_dir("run") + "/metrics.jsonl";
  { MetricsLog log(fresh, true, 5); }
  EXPECT_TRUE(fs::exists(fresh));
}

TEST(Metrics, BadLinesAreErrors) {
  const std::string path = test::make_temp_dir("run") + "/metrics.jsonl";
  test::write_file(path, "{\"step\":1,\"loss\":2}\nnot json\n{\"step\":3}\n");
  EXPECT_NE(error_of([&] { MetricsLog log(path, true, 5); }).find("metrics.jsonl:2: not valid JSON"),
            std::string::npos);
  test::write_file(path, "{\"step\":1}\n{\"loss\":2}\n");
  EXPECT_NE(error_of([&] { read_metrics(path); }).find(":2: missing integer field 'step'"), std::string::npos);
  test::write_file(path, "{\"step\":1}\n");
  MetricsLog log(path, true, 5);
  EXPECT_NE(error_of([&] { log.write(nlohmann::ordered_json{{"loss", 1.0}}); }).find("integer 'step'"),
            std::string::npos);
}

bool have_gnuplot() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

std::string plot_run() {
  const std::string run = test::make_temp_dir("plot run");  // a space: quoting must hold
  std::string text;
  for (int s = 1; s <= 50; ++s) {
    text += nlohmann::json{{"step", s}, {"loss", 5.0 / s}, {"lr", 1e-3}}.dump() + "\n";
    if (s % 10 == 0) text += nlohmann::json{{"step", s}, {"val_loss", 5.5 / s}}.dump() + "\n";
  }
  test::write_file(run + "/metrics.jsonl", text);
  return run;
}

TEST(Plot, WritesPng) {
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot not installed (apt-get install gnuplot-nox)";
  const std::string run = plot_run();
  auto r = test::run_cli("plot '" + run + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string png = test::read_file(run + "/loss.png");
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  const std::string out = test::make_temp_dir("plot") + "/it's.png";
  r = test::run_cli("plot '" + run + "/metrics.jsonl' -o \"" + out + "\"");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(out).substr(0, 4), "\x89PNG");
}

TEST(Plot, ClearErrors) {
  const std::string run = plot_run();
  auto r = test::run_cli("plot '" + run + "'", "PATH=/nonexistent");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("gnuplot not found"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("gnuplot-nox"), std::string::npos) << r.err;
  r = test::run_cli("plot '" + test::make_temp_dir("empty") + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("metrics.jsonl: no such file"), std::string::npos) << r.err;
  const std::string empty_run = test::make_temp_dir("run");
  test::write_file(empty_run + "/metrics.jsonl", "{\"step\":1,\"lr\":0.1}\n");
  r = test::run_cli("plot '" + empty_run + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no 'loss' or 'val_loss'"), std::string::npos) << r.err;
}

// Several runs in one PNG, each named in the legend by its directory; -o is required.
TEST(Plot, OverlaysRuns) {
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot not installed (apt-get install gnuplot-nox)";
  const std::string a = plot_run(), b = test::make_temp_dir("other run");
  test::write_file(b + "/metrics.jsonl", "{\"step\":10,\"val_loss\":3.5}\n{\"step\":20,\"val_loss\":3.0}\n");
  const std::string out = test::make_temp_dir("overlay") + "/both.png";
  auto r = test::run_cli("plot '" + a + "' '" + b + "/metrics.jsonl' -o '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(out).substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  const std::string la = fs::path(a).filename().string(), lb = fs::path(b).filename().string();
  EXPECT_NE(r.err.find("'" + la + "' (50 train points, 5 validation points)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'" + lb + "' (0 train points, 2 validation points)"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(a + "/loss.png"));
  // The same directory twice: the labels still differ.
  r = test::run_cli("plot '" + a + "' '" + a + "/' -o '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("'" + a + "/' (50"), std::string::npos) << r.err;
  r = test::run_cli("plot '" + a + "' '" + b + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("several runs needs -o"), std::string::npos) << r.err;
  r = test::run_cli("plot '" + a + "' '" + a + "/missing' -o '" + out + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/missing: no such file"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace strata
