// The proof of the engine's seams: "running-mean", a mixer defined only in
// test code (tests/extra/running_mean.cpp) with an option of its own, goes
// through everything a built-in module does, with no engine file knowing it:
// decode == forward, gradients, state snapshots (library), and init --config,
// info, train (the loss falls), generate (cache == --no-cache) and convert
// --to hf (the command line, linked with the extra registration).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "extra/running_mean.h"
#include "model/layers.h"
#include "model/module_harness.h"
#include "model/registry.h"
#include "model/stack.h"
#include "strata/model.h"
#include "test_util.h"

namespace strata::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const bool kRegistered = (register_running_mean(), true);

// A model whose second layer is [running-mean, mlp]: the pattern and the
// module's own option as config.json spells them.
constexpr const char* kConfig = R"({
  "model_type": "strata", "vocab_size": 320, "hidden_size": 32, "intermediate_size": 64,
  "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
  "rms_norm_eps": 1e-5, "initializer_range": 0.1,
  "strata_layers": {"unit": [["attention", "mlp"], [{"kind": "running-mean", "gate_init": 1.5}, "mlp"]], "repeat": 1}
})";

Config extra_config() { return Config::from_json_text(kConfig, "extra.json"); }

// A numerical reference of the mixer: prefix means, projection, gate.
Rows ref_running_mean(const std::string& prefix, const DoubleParams& p, const Rows& x, const Lens& lens, int64_t D) {
  Rows m(x.size());
  int64_t row0 = 0;
  for (int64_t n : lens) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < D; ++i) {
        double s = 0;
        for (int64_t u = 0; u <= t; ++u) s += x[(row0 + u) * D + i];
        m[(row0 + t) * D + i] = s / static_cast<double>(t + 1);
      }
    row0 += n;
  }
  Rows y = ref_linear(m, D, p.at(prefix + ".proj.weight"), D);
  const std::vector<double>& g = p.at(prefix + ".gate");
  for (size_t i = 0; i < y.size(); ++i) y[i] *= 1.0 / (1.0 + std::exp(-g[i % D]));
  return y;
}

TEST(ExtraModule, IsRegisteredWithItsOptionAndChecksIt) {
  ASSERT_TRUE(kRegistered);
  const Config c = extra_config();
  EXPECT_EQ(opt_float(c.layers.layer(1)[0].mixer.options, "gate_init"), 1.5);
  EXPECT_EQ(layer_blocks(c, 1)[0].mixer.prefix, "model.layers.1.running_mean");
  json bad = json::parse(kConfig);
  bad["strata_layers"]["unit"][1][0]["gate_init"] = "high";
  EXPECT_EQ(error_of([&] { Config::from_json_text(bad.dump(), "x.json"); }).rfind(
                "x.json: field 'strata_layers.unit[1][0].gate_init': expected a number", 0),
            0u);
  bad["strata_layers"]["unit"][1][0]["gate_init"] = 99.0;
  EXPECT_NE(error_of([&] { Config::from_json_text(bad.dump(), "x.json"); }).find("[-20, 20]"), std::string::npos);
  // Counted like any module, its gate initialised from the option.
  const ParamCounts pc = count_params(c);
  std::map<std::string, int64_t> g(pc.by_group.begin(), pc.by_group.end());
  EXPECT_EQ(g["running-mean"], 32 * 32 + 32);
  auto m = Model::random(c, 1, DType::F32);
  for (const auto& [name, t] : m->named_tensors())
    if (name == "model.layers.1.running_mean.gate") {
      EXPECT_EQ(t.f32()[5], 1.5f);
    }
}

TEST(ExtraModule, DecodeEqualsForwardAndGradientsMatchFiniteDifferences) {
  CtxConfig c;
  static_cast<Config&>(c) = extra_config();
  const std::string prefix = "model.layers.1.running_mean";
  ModuleRig rig("running-mean", c, prefix, 3, 0.3);
  const Lens lens = {9, 1, 6};
  const auto x = random_rows(total_rows(lens), 32, 4);
  expect_decode_equals_full(rig, x, lens);
  expect_causal(rig, x, lens);
  expect_gradients_match_reference(rig, x, lens, [&](const DoubleParams& p, const Rows& xx, const Lens& l) {
    return ref_running_mean(prefix, p, xx, l, 32);
  });
}

TEST(ExtraModule, ModelStatesSnapshotAndRestore) {
  auto m = Model::random(extra_config(), 2, DType::F32);
  const std::vector<int32_t> prompt = {1, 5, 9, 44, 7, 100};
  auto st = m->new_state();
  std::vector<float> l, a, b;
  SeqInput in{prompt, st.get()};
  m->forward({&in, 1}, Logits::Last, l);
  EXPECT_TRUE(st->bytes_by_kind().count("running-mean"));
  auto snap = st->clone();
  State* sp = st.get();
  for (int32_t t : {3, 4, 5}) {
    m->step({&t, 1}, {&sp, 1}, l);
    a.insert(a.end(), l.begin(), l.end());
  }
  st->restore(*snap);
  for (int32_t t : {3, 4, 5}) {
    m->step({&t, 1}, {&sp, 1}, l);
    b.insert(b.end(), l.begin(), l.end());
  }
  EXPECT_EQ(a, b);
  // ... and cached decoding is the full forward.
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), {3, 4, 5});
  SeqInput whole{all};
  std::vector<float> full;
  m->forward({&whole, 1}, Logits::All, full);
  EXPECT_EQ(std::vector<float>(full.end() - 320, full.end()), std::vector<float>(b.end() - 320, b.end()));
}

CliResult extra_cli(const std::string& args) { return run_binary(STRATA_EXTRA_CLI_PATH, args); }

// The commands users run, on a model with the test-only mixer.
TEST(ExtraModule, CommandsInitInfoTrainGenerateConvert) {
  const std::string dir = make_temp_dir("extra-cli");
  // A small corpus with structure to learn, its tokenizer and token shards.
  std::string text;
  for (int i = 0; i < 400; ++i)
    text += "the cat sat on the mat number " + std::to_string(i % 17) + " and the dog ran to the " +
            (i % 3 ? "park" : "house") + ".\n\n";
  write_file(dir + "/corpus.txt", text);
  ASSERT_EQ(extra_cli("train-tokenizer --input '" + dir + "/corpus.txt' --vocab 320 -o '" + dir + "/tok.model'").exit_code, 0);
  auto r = extra_cli("tokenize --tokenizer '" + dir + "/tok.model' --input '" + dir + "/corpus.txt' -o '" + dir + "/data'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  write_file(dir + "/config.json", kConfig);

  r = extra_cli("init --config '" + dir + "/config.json' --tokenizer '" + dir + "/tok.model' --seed 3 -o '" + dir + "/init'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = extra_cli("info -m '" + dir + "/init' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json info = json::parse(r.out);
  EXPECT_EQ(info["params"]["running-mean"], 32 * 32 + 32);
  EXPECT_EQ(info["state"]["running-mean"]["modules"], 1);
  EXPECT_EQ(info["config"]["strata_layers"]["unit"][1][0]["gate_init"], 1.5);

  r = extra_cli("train --init '" + dir + "/init' --data '" + dir + "/data' --steps 40 --batch 4 --seq 32 --lr 1e-2 "
                "--warmup 2 --eval-every 0 --save-every 40 --threads 2 -o '" + dir + "/run'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream f(dir + "/run/metrics.jsonl");
  std::vector<double> losses;
  for (std::string line; std::getline(f, line);)
    if (auto j = json::parse(line); j.contains("loss")) losses.push_back(j["loss"]);
  ASSERT_EQ(losses.size(), 40u);
  EXPECT_LT(losses.back(), 0.6 * losses.front()) << losses.front() << " -> " << losses.back();

  const std::string ck = dir + "/run/checkpoint-40", tok = " --tokenizer '" + dir + "/tok.model'";
  const std::string gen = "generate -m '" + ck + "'" + tok + " -p 'the cat' -n 24 --temp 0";
  auto cached = extra_cli(gen), uncached = extra_cli(gen + " --no-cache");
  ASSERT_EQ(cached.exit_code, 0) << cached.err;
  EXPECT_EQ(cached.out, uncached.out);
  EXPECT_GT(cached.out.size(), 10u);

  r = extra_cli("convert -m '" + ck + "' -o '" + dir + "/hf' --to hf" + tok);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto a = extra_cli("logits -m '" + ck + "'" + tok + " -p 'the dog ran' --json");
  auto b = extra_cli("logits -m '" + dir + "/hf'" + tok + " -p 'the dog ran' --json");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  // The plain strata binary, which has no such module, says so by name.
  auto plain = run_cli("info -m '" + ck + "'");
  EXPECT_EQ(plain.exit_code, 1);
  EXPECT_NE(plain.err.find("unknown module kind 'running-mean'"), std::string::npos) << plain.err;
}

}  // namespace
}  // namespace strata::test
