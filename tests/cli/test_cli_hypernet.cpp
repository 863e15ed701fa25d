// Recursive soft prompting from the command line (docs/hypernet.md):
// `init --preset tiny-hypernet`, `convert --add-hypernet`, `info`,
// `sft --hypernet` (stages 1 and 2, checkpoints, exact resume, bad data) and
// `generate --hypernet`.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

const auto& metrics = test::read_metrics_lines;

using test::run_cli;

// Parameters of a hypernetwork of P soft tokens at width D with L encoder
// layers of MLP width F: sp0, per layer q/k/v/o, SwiGLU and two norms, the
// final norm and out_proj.
int64_t hypernet_params(int64_t P, int64_t D, int64_t L, int64_t F) {
  return P * D + L * (4 * D * D + 3 * D * F + 2 * D) + D + D * D;
}

// The stderr line of the error ("strata: error: ..."), "" when there is none.
std::string error_line(const std::string& err) {
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);)
    if (line.find("error:") != std::string::npos) return line;
  return "";
}

// Chat records of a question and a story-like answer of 30-60 tokens.
std::string qa_jsonl(const std::string& path) {
  std::ofstream f(path);
  f << R"({"prompt": "Tell me a story.", "completion": "Once upon a time, there was a little girl named Lily. She liked to play in the park."})"
    << "\n"
    << R"({"prompt": "Who is Tom?", "completion": "Tom is a big dog. He likes to run and jump."})" << "\n"
    << R"({"messages": [{"role": "user", "content": "What did Lily see?"}, {"role": "assistant", "content": "She saw a big red ball under a tree."}]})"
    << "\n"
    << R"({"prompt": "Say hi.", "completion": "Hi! How are you today?"})" << "\n";
  return path;
}

// stories260K (D 64) with a small hypernetwork attached: 8 soft tokens, 4
// heads of 16, chunks of 4 answer tokens.
std::string stories_with_hypernet(const std::string& data, const std::string& out) {
  auto r = run_cli("convert -m '" + data + "/stories260K.bin' -o '" + out +
                   "' --add-hypernet --soft-tokens 8 --hypernet-heads 4 --chunk 4 --seed 3");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

// Every tensor of a checkpoint's model.safetensors (views of the mapped file).
WeightSet weights_of(const std::string& dir) {
  WeightSet w;
  read_safetensors(dir + "/model.safetensors", w);
  return w;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

bool is_hypernet(const std::string& name) { return name.rfind("hypernet.", 0) == 0; }

// ---- init, info, convert ---------------------------------------------------------------------

TEST(CliHypernet, TinyPresetIsCountedAndRefusesASecondHypernetwork) {
  const std::string dir = test::make_temp_dir("hn-tiny");
  auto r = run_cli("init --preset tiny-hypernet -o '" + dir + "/m'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("info -m '" + dir + "/m' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  // tiny-hypernet: D 64, 8 soft tokens, 2 layers, 4 heads, ffn 1.5 x 64 = 96.
  EXPECT_EQ(j["params"]["hypernet"], hypernet_params(8, 64, 2, 96));
  EXPECT_EQ(j["config"]["strata_hypernet"]["soft_tokens"], 8);
  EXPECT_EQ(j["config"]["strata_hypernet"]["intermediate_size"], 96);
  // Counted from the declarations alone: the same numbers.
  auto p = run_cli("info --preset tiny-hypernet --json");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const auto jp = nlohmann::json::parse(p.out);
  EXPECT_EQ(jp["params"], j["params"]);
  EXPECT_EQ(jp["total_params"], j["total_params"]);
  // The text form lists the group too.
  r = run_cli("info -m '" + dir + "/m'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("hypernet"), std::string::npos) << r.out;

  r = run_cli("convert -m '" + dir + "/m' -o '" + dir + "/again' --add-hypernet");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("already has a hypernetwork"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/again/model.safetensors"));
}

TEST(CliHypernet, HypernetOptionsWithoutAddHypernetAreErrors) {
  const std::string dir = test::make_temp_dir("hn-opts");
  ASSERT_EQ(run_cli("init --preset tiny -o '" + dir + "/m'").exit_code, 0);
  for (const std::string opt : {"--soft-tokens 8", "--hypernet-layers 1", "--hypernet-heads 4", "--hypernet-ffn 32",
                                "--chunk 4"}) {
    auto r = run_cli("convert -m '" + dir + "/m' -o '" + dir + "/out' " + opt);
    EXPECT_EQ(r.exit_code, 1) << opt;
    const std::string name = opt.substr(0, opt.find(' '));
    EXPECT_NE(error_line(r.err).find(name + " applies to --add-hypernet only"), std::string::npos) << r.err;
  }
  auto r = run_cli("convert -m '" + dir + "/m' -o '" + dir + "/out' --seed 3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("--seed applies to --to modified and --add-hypernet only"), std::string::npos)
      << r.err;
  r = run_cli("convert -m '" + dir + "/m' -o '" + dir + "/out' --to modified --add-hypernet");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("convert to the modified decoder first"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/out"));
}

// The converted model loads, counts its hypernetwork for the given shape,
// keeps the LLM weights (plain generation as the base's) and draws the
// hypernetwork from --seed.
TEST(CliHypernet, AddHypernetKeepsTheModelAndCountsTheShape) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("hn-convert");
  const std::string base = data + "/stories260K.bin";
  const std::string shape = " --add-hypernet --soft-tokens 12 --hypernet-layers 3 --hypernet-heads 2 --hypernet-ffn 40 "
                            "--chunk 5";
  auto r = run_cli("convert -m '" + base + "' -o '" + dir + "/a'" + shape + " --seed 7");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(dir + "/a/tokenizer.model"), test::read_file(data + "/tok512.model"));
  r = run_cli("info -m '" + dir + "/a' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["params"]["hypernet"], hypernet_params(12, 64, 3, 40));
  const auto& h = j["config"]["strata_hypernet"];
  EXPECT_EQ(h["soft_tokens"], 12);
  EXPECT_EQ(h["layers"], 3);
  EXPECT_EQ(h["heads"], 2);
  EXPECT_EQ(h["intermediate_size"], 40);
  EXPECT_EQ(h["chunk"], 5);
  // The base's parameters are all there, unchanged in number.
  auto b = run_cli("info -m '" + base + "' --json");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const auto jb = nlohmann::json::parse(b.out);
  EXPECT_FALSE(jb["params"].contains("hypernet"));
  EXPECT_EQ(j["total_params"].get<int64_t>(), jb["total_params"].get<int64_t>() + hypernet_params(12, 64, 3, 40));

  // Plain generation ignores the hypernetwork: the base's text exactly.
  const std::string args = " -p 'Once upon a time' -n 40 --temp 0 --threads 1";
  auto gb = run_cli("generate -m '" + base + "' --tokenizer '" + data + "/tok512.model'" + args);
  auto ga = run_cli("generate -m '" + dir + "/a'" + args);
  ASSERT_EQ(gb.exit_code, 0) << gb.err;
  ASSERT_EQ(ga.exit_code, 0) << ga.err;
  EXPECT_GT(gb.out.size(), std::string("Once upon a time").size() + 20);
  EXPECT_EQ(ga.out, gb.out);

  // The same seed draws the same file; another seed other hypernetwork weights only.
  ASSERT_EQ(run_cli("convert -m '" + base + "' -o '" + dir + "/b'" + shape + " --seed 7").exit_code, 0);
  EXPECT_EQ(test::read_file(dir + "/b/model.safetensors"), test::read_file(dir + "/a/model.safetensors"));
  ASSERT_EQ(run_cli("convert -m '" + base + "' -o '" + dir + "/c'" + shape + " --seed 8").exit_code, 0);
  const WeightSet wa = weights_of(dir + "/a"), wc = weights_of(dir + "/c");
  ASSERT_EQ(wa.tensors.size(), wc.tensors.size());
  for (const auto& [name, t] : wa.tensors) {
    ASSERT_TRUE(wc.find(name)) << name;
    const bool zero_init = name == "hypernet.out_proj.weight" || name.find("norm") != std::string::npos;
    if (!is_hypernet(name) || zero_init) EXPECT_TRUE(same_bytes(t, *wc.find(name))) << name;
    else EXPECT_FALSE(same_bytes(t, *wc.find(name))) << name;
  }
}

// ---- sft --hypernet ----------------------------------------------------------------------------

// A run checkpointed at step 2 whose later steps are lost resumes to the same
// bits as the uninterrupted run (the killed-run test of CliTrain, made
// deterministic: the newest checkpoint is removed instead of racing a kill).
TEST(CliHypernet, SftStage1WritesCheckpointsAndResumesExactly) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("hn-sft");
  const std::string hn = stories_with_hypernet(data, dir + "/hn");
  const std::string chat = qa_jsonl(dir + "/qa.jsonl");
  const std::string args = "sft --hypernet --init '" + hn + "' --data '" + chat +
                           "' --steps 4 --batch 1 --accum 2 --save-every 2 --seed 5 --lr 1e-3 --threads 2 -o ";
  auto a = run_cli(args + "'" + dir + "/a'");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_NE(a.err.find("sft --hypernet stage 1: 4 examples, chunks of 4"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find(std::to_string(hypernet_params(8, 64, 2, 96)) + " hypernetwork parameters (the model frozen)"),
            std::string::npos)
      << a.err;
  for (const char* ck : {"/a/checkpoint-2", "/a/checkpoint-4"}) {
    EXPECT_TRUE(fs::exists(dir + ck + "/COMPLETE")) << ck;
    EXPECT_TRUE(fs::exists(dir + ck + "/optimizer.safetensors")) << ck;
    EXPECT_EQ(test::read_file(dir + ck + "/tokenizer.model"), test::read_file(data + "/tok512.model")) << ck;
  }
  const auto ma = metrics(dir + "/a");
  ASSERT_EQ(ma.size(), 4u);
  for (const auto& m : ma) EXPECT_GT(m["loss"].get<double>(), 0) << m.dump();
  // The checkpoint keeps the hypernetwork.
  auto info = run_cli("info -m '" + dir + "/a/checkpoint-4' --json");
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_EQ(nlohmann::json::parse(info.out)["params"]["hypernet"], hypernet_params(8, 64, 2, 96));

  const std::string b = dir + "/b";
  ASSERT_EQ(run_cli(args + "'" + b + "'").exit_code, 0);
  fs::remove_all(b + "/checkpoint-4");
  auto r = run_cli(args + "'" + b + "' --resume");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("resuming from"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(step 2, sample 4)"), std::string::npos) << r.err;
  const std::string wa = test::read_file(dir + "/a/checkpoint-4/model.safetensors");
  ASSERT_FALSE(wa.empty());
  EXPECT_FALSE(wa == test::read_file(dir + "/a/checkpoint-2/model.safetensors"));  // steps 3 and 4 trained
  EXPECT_TRUE(wa == test::read_file(b + "/checkpoint-4/model.safetensors")) << "model.safetensors differ";
  EXPECT_TRUE(test::read_file(dir + "/a/checkpoint-4/optimizer.safetensors") ==
              test::read_file(b + "/checkpoint-4/optimizer.safetensors"))
      << "optimizer.safetensors differ";
  const auto mb = metrics(b);
  ASSERT_EQ(mb.size(), 4u);  // no step twice
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(mb[i]["step"], ma[i]["step"]);
    EXPECT_EQ(mb[i]["loss"].get<double>(), ma[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(mb[i]["grad_norm"].get<double>(), ma[i]["grad_norm"].get<double>()) << "step " << i + 1;
  }

  // Resuming with other chunk settings is refused, naming the difference.
  r = run_cli(args + "'" + b + "' --resume --chunk-context recurrent");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("--resume with other settings"), std::string::npos) << r.err;
  EXPECT_NE(error_line(r.err).find("\"recurrent\""), std::string::npos) << r.err;
  // A run of 2 steps continued to 4 follows another schedule from step 3 on, and says so.
  const std::string c = dir + "/c";
  const std::string two = "sft --hypernet --init '" + hn + "' --data '" + chat +
                          "' --batch 1 --accum 2 --seed 5 --lr 1e-3 --warmup 0 --threads 2 -o '" + c + "' --steps ";
  ASSERT_EQ(run_cli(two + "2").exit_code, 0);
  r = run_cli(two + "4 --resume");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("not the same run as one started with --steps 4"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(c + "/checkpoint-4/COMPLETE"));
}

// Stage 1 trains the hypernetwork only; stage 2, from its checkpoint, the model too.
TEST(CliHypernet, Stage1FreezesTheModelAndStage2TrainsIt) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("hn-stages");
  const std::string hn = stories_with_hypernet(data, dir + "/hn");
  const std::string chat = qa_jsonl(dir + "/qa.jsonl");
  const std::string args = "' --data '" + chat + "' --steps 3 --batch 2 --lr 1e-3 --threads 1 -o '";
  auto r = run_cli("sft --hypernet --stage 1 --init '" + hn + args + dir + "/s1'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const WeightSet w0 = weights_of(hn), w1 = weights_of(dir + "/s1/checkpoint-3");
  ASSERT_EQ(w1.tensors.size(), w0.tensors.size());
  int llm = 0, hyper_changed = 0;
  for (const auto& [name, t] : w0.tensors) {
    const Tensor* t1 = w1.find(name);
    ASSERT_TRUE(t1) << name;
    if (is_hypernet(name)) {
      hyper_changed += !same_bytes(t, *t1);
    } else {
      ++llm;
      EXPECT_TRUE(same_bytes(t, *t1)) << name << " changed in stage 1";
    }
  }
  EXPECT_GT(llm, 40);  // embeddings, 5 layers of 9 tensors, the final norm
  EXPECT_FALSE(same_bytes(*w0.find("hypernet.out_proj.weight"), *w1.find("hypernet.out_proj.weight")));
  EXPECT_FALSE(same_bytes(*w0.find("hypernet.sp0"), *w1.find("hypernet.sp0")));
  EXPECT_GT(hyper_changed, 2);

  r = run_cli("sft --hypernet --stage 2 --llm-lr 1e-3 --init '" + dir + "/s1/checkpoint-3" + args + dir + "/s2'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("stage 2"), std::string::npos) << r.err;
  const WeightSet w2 = weights_of(dir + "/s2/checkpoint-3");
  int llm_changed = 0;
  for (const auto& [name, t] : w1.tensors)
    if (!is_hypernet(name)) llm_changed += !same_bytes(t, *w2.find(name));
  EXPECT_GT(llm_changed, llm / 2);
  // The embeddings train in stage 2 (their gradient includes the hypernetwork's token inputs).
  EXPECT_FALSE(same_bytes(*w1.find("model.embed_tokens.weight"), *w2.find("model.embed_tokens.weight")));
  EXPECT_FALSE(same_bytes(*w1.find("model.layers.0.self_attn.q_proj.weight"),
                          *w2.find("model.layers.0.self_attn.q_proj.weight")));
  EXPECT_FALSE(same_bytes(*w1.find("hypernet.out_proj.weight"), *w2.find("hypernet.out_proj.weight")));
}

TEST(CliHypernet, BadDataIsReportedWithFileAndLine) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("hn-bad");
  const std::string hn = stories_with_hypernet(data, dir + "/hn");
  const std::string sft = "sft --hypernet --init '" + hn + "' --steps 1 --batch 2 --threads 1 --data '" + dir;

  // A query over --max-query: an error naming the record, nothing written.
  // ("Say hi." as a zephyr user turn is ~30 tokens of tok512; line 2's ~100.)
  {
    std::ofstream f(dir + "/long.jsonl");
    f << R"({"prompt": "Say hi.", "completion": "Hi!"})" << "\n"
      << R"({"prompt": "Tell me a very long story about a little girl named Lily who liked to play in the park with her friends every single day of the week.", "completion": "No."})"
      << "\n";
  }
  auto r = run_cli(sft + "/long.jsonl' --max-query 48 -o '" + dir + "/r1'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("long.jsonl:2: the query has "), std::string::npos) << r.err;
  EXPECT_NE(error_line(r.err).find("more than --max-query 48"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/r1"));
  // With a higher limit the same file trains.
  r = run_cli(sft + "/long.jsonl' --max-query 256 -o '" + dir + "/r1b'");
  EXPECT_EQ(r.exit_code, 0) << r.err;

  // A record without an assistant turn is skipped and reported with its
  // file:line; an empty completion is kept: its answer is the EOS alone.
  {
    std::ofstream f(dir + "/odd.jsonl");
    f << R"({"prompt": "Say hi.", "completion": "Hi!"})" << "\n"
      << R"({"messages": [{"role": "user", "content": "Hello?"}]})" << "\n"
      << R"({"prompt": "Say nothing.", "completion": ""})" << "\n";
  }
  r = run_cli(sft + "/odd.jsonl' -o '" + dir + "/r2'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("skipped 1 sample(s) with no assistant tokens to train on (first: " + dir + "/odd.jsonl:2)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("stage 1: 2 examples"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(dir + "/r2/checkpoint-1/COMPLETE"));
  // Nothing left to train on is an error.
  test::write_file(dir + "/none.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello?\"}]}\n");
  r = run_cli(sft + "/none.jsonl' -o '" + dir + "/r3'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("none.jsonl:1"), std::string::npos) << r.err;
  EXPECT_NE(error_line(r.err).find("no trainable sample"), std::string::npos) << r.err;
  // Broken JSON names its line.
  test::write_file(dir + "/broken.jsonl", "{\"prompt\": \"Say hi.\", \"completion\": \"Hi!\"}\n{\"prompt\": \n");
  r = run_cli(sft + "/broken.jsonl' -o '" + dir + "/r4'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r.err).find("broken.jsonl:2: invalid JSON"), std::string::npos) << r.err;
  // Answers over --max-answer are cut, and counted in a note.
  r = run_cli(sft + "/odd.jsonl' --max-answer 2 -o '" + dir + "/r5'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("note: 1 answers longer than --max-answer 2 were cut"), std::string::npos) << r.err;

  // The options of --hypernet without it.
  const std::string plain = "sft --init '" + hn + "' --data '" + dir + "/odd.jsonl' --steps 1 -o '" + dir + "/r6' ";
  for (const std::string opt : {"--stage 2", "--llm-lr 1e-3", "--detach-between-chunks"}) {
    r = run_cli(plain + opt);
    EXPECT_EQ(r.exit_code, 1) << opt;
    const std::string name = opt.substr(0, opt.find(' '));
    EXPECT_NE(error_line(r.err).find(name + " applies to --hypernet"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists(dir + "/r6"));
}

TEST(CliHypernet, SftNeedsAModelWithAHypernetwork) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("hn-none");
  const std::string chat = qa_jsonl(dir + "/qa.jsonl");
  auto r = run_cli("sft --hypernet --init '" + data + "/stories260K.bin' --data '" + chat + "' --steps 1 -o '" + dir +
                   "/run'");
  EXPECT_EQ(r.exit_code, 1);
  const std::string e = error_line(r.err);
  EXPECT_NE(e.find("stories260K.bin has no hypernetwork"), std::string::npos) << r.err;
  EXPECT_NE(e.find("convert --add-hypernet"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/run"));
}

// ---- generate --hypernet -----------------------------------------------------------------------

TEST(CliHypernet, GenerateInChunks) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("hn-gen");
  const std::string hn = stories_with_hypernet(data, dir + "/hn");  // chunks of 4
  const std::string prompt = "Tell me a story.";
  const std::string args = " --hypernet -p '" + prompt + "' -n 10 --temp 0 --threads 1";
  auto g = run_cli("generate -m '" + hn + "'" + args);
  ASSERT_EQ(g.exit_code, 0) << g.err;
  ASSERT_EQ(g.out.rfind(prompt, 0), 0u) << g.out;  // the prompt, then the continuation
  EXPECT_GT(g.out.size(), prompt.size() + 1) << g.out;
  EXPECT_EQ(g.out.back(), '\n');
  EXPECT_NE(g.err.find("chunks"), std::string::npos) << g.err;
  EXPECT_NE(g.err.find("prefills"), std::string::npos) << g.err;
  // 10 tokens in chunks of 4 are 3 prefills, unless an end of text came first.
  if (g.err.find("stop: length") != std::string::npos) {
    EXPECT_NE(g.err.find("generated 10 tokens in 3 chunks"), std::string::npos) << g.err;
  }
  // Greedy: the same text again; the recurrent context runs too.
  EXPECT_EQ(run_cli("generate -m '" + hn + "'" + args).out, g.out);
  auto rec = run_cli("generate -m '" + hn + "'" + args + " --chunk-context recurrent");
  ASSERT_EQ(rec.exit_code, 0) << rec.err;
  EXPECT_EQ(rec.out.rfind(prompt, 0), 0u) << rec.out;
  EXPECT_NE(rec.err.find("prefills"), std::string::npos) << rec.err;
  auto bad = run_cli("generate -m '" + hn + "'" + args + " --samples 2");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(error_line(bad.err).find("--samples, --out and --no-cache do not apply"), std::string::npos) << bad.err;

  auto none = run_cli("generate -m '" + data + "/stories260K.bin' --tokenizer '" + data + "/tok512.model'" + args);
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(error_line(none.err).find("no hypernetwork"), std::string::npos) << none.err;
}

// exact-match scores greedy answers: the model's own greedy answers are an
// exact match of themselves; the counts and the per-example file agree.
TEST(CliHypernet, ExactMatchScoresGreedyAnswers) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("hn-em");
  const std::string hn = stories_with_hypernet(data, dir + "/hn");
  const std::string qa = qa_jsonl(dir + "/qa.jsonl");
  for (const std::string mode : {"", " --hypernet", " --chunk-context recurrent"}) {
    auto r = run_cli("exact-match -m '" + hn + "' --data '" + qa + "' --out '" + dir + "/answers.jsonl'" + mode);
    ASSERT_EQ(r.exit_code, 0) << mode << r.err;
    EXPECT_EQ(r.out.rfind("exact match ", 0), 0u) << r.out;
    EXPECT_NE(r.out.find(" / 4 = "), std::string::npos) << r.out;
    std::istringstream lines(test::read_file(dir + "/answers.jsonl"));
    int n = 0;
    for (std::string line; std::getline(lines, line); ++n) {
      const auto j = nlohmann::json::parse(line);
      EXPECT_TRUE(j.contains("reference") && j.contains("answer") && j.contains("match")) << line;
    }
    EXPECT_EQ(n, 4) << mode;
  }
  auto bad = run_cli("exact-match -m '" + hn + "' --data '" + qa + "' --chunk 4");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(error_line(bad.err).find("--chunk applies to --hypernet or --chunk-context only"), std::string::npos)
      << bad.err;
}

// ppl --data scores the answers chunk by chunk (with or without the soft
// prompts); logits --hypernet shows BOS and the query, not the soft rows.
TEST(CliHypernet, PerplexityOfAnswersAndLogitsWithTheSoftPrompt) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string dir = test::make_temp_dir("hn-ppl");
  const std::string hn = stories_with_hypernet(data, dir + "/hn");
  const std::string qa = qa_jsonl(dir + "/qa.jsonl");
  auto ppl = [&](const std::string& mode) {
    auto r = run_cli("ppl -m '" + hn + "' --data '" + qa + "' --json" + mode);
    EXPECT_EQ(r.exit_code, 0) << mode << r.err;
    return nlohmann::json::parse(r.out);
  };
  const auto with = ppl(" --hypernet"), full = ppl(""), recurrent = ppl(" --chunk-context recurrent");
  EXPECT_EQ(with["predicted"], full["predicted"]);
  EXPECT_GT(with["perplexity"].get<double>(), 1.0);
  EXPECT_NE(recurrent["perplexity"], full["perplexity"]);
  auto bad = run_cli("ppl -m '" + hn + "' --text '" + qa + "' --hypernet");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(error_line(bad.err).find("--hypernet applies to --data only"), std::string::npos) << bad.err;

  auto l = run_cli("logits -m '" + hn + "' -p 'Hi' --hypernet --top 2 --json");
  ASSERT_EQ(l.exit_code, 0) << l.err;
  const auto j = nlohmann::json::parse(l.out);
  EXPECT_EQ(j["tokens"].size(), j["positions"].size());
  EXPECT_EQ(j["tokens"][0], 1);  // BOS, then the chat-formatted query
  EXPECT_GT(j["tokens"].size(), 4u);
}

}  // namespace
}  // namespace strata
