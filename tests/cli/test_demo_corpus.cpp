// The demo's helper scripts (scripts/demo.sh): brown_corpus.py turns the
// POS-tagged Brown corpus into plain documents and splits train/val;
// unigram_loss.py scores the add-one unigram baseline on strata token shards.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "train/token_data.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

const char* kPython = "/usr/bin/python3";

#define REQUIRE_PYTHON() \
  if (access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " not found: skipping"

// Runs scripts/NAME with `args` (already shell-quoted) under python3.
test::CliResult run_script(const std::string& name, const std::string& args) {
  const std::string dir = test::make_temp_dir("py");
  const std::string out = dir + "/out", err = dir + "/err";
  const std::string cmd = std::string(kPython) + " '" + STRATA_SOURCE_DIR + "/scripts/" + name + "' " + args + " >'" +
                          out + "' 2>'" + err + "' </dev/null";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, test::read_file(out), test::read_file(err)};
}

// "key value key value ..." -> map.
std::map<std::string, std::string> fields(const std::string& line) {
  std::istringstream in(line);
  std::map<std::string, std::string> m;
  std::string k, v;
  while (in >> k >> v) m[k] = v;
  return m;
}

std::string q(const std::string& s) { return "'" + s + "'"; }

TEST(DemoCorpus, BrownTagsStrippedAndPunctuationSpacedNaturally) {
  REQUIRE_PYTHON();
  const std::string corpus = test::make_temp_dir("brown"), out = test::make_temp_dir("brown-out");
  // NLTK's tagged Brown layout: blank lines between paragraphs, one sentence per
  // line (a tab starts a paragraph), headlines tagged -hl.
  test::write_file(corpus + "/ca01",
                   "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' was/bedz found/vbn ./.\n"
                   "\n\n\tMr./np Allen/np Jr./np ./.\nIt/pps urged/vbd (/( again/rb )/) ;/. "
                   "``/`` stop/vb ''/'' ,/, he/pps said/vbd ,/, ``/`` now/rb ''/'' ./.\n"
                   "\n\n\nMerger/nn-hl proposed/vbn-hl \nHowever/wrb ,/, 1/2/cd of/in it/ppo --/-- "
                   "the/at ' real/jj ' one/cd --/-- stays/vbz !/.\n");
  test::write_file(corpus + "/ca02", "\n\n\tHeld/vbn out/rp ./.\n");
  test::write_file(corpus + "/cb01", "\n\n\tLast/ap one/cd ?/.\n");
  test::write_file(corpus + "/README", "not a Brown file\n");

  auto r = run_script("brown_corpus.py", q(corpus) + " " + q(out) + " --val-fraction 0.34");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto f = fields(r.out);
  EXPECT_EQ(f["train_documents"], "2");
  EXPECT_EQ(f["val_documents"], "1");  // round(0.34 x 3) = 1: the middle file
  EXPECT_EQ(test::read_file(out + "/train.txt"),
            "The jury said \"no evidence\" was found.\n"
            "Mr. Allen Jr. It urged (again); \"stop,\" he said, \"now.\"\n"
            "Merger proposed\n"
            "However, 1/2 of it -- the 'real' one -- stays!\n"
            "\n"
            "Last one?\n");
  EXPECT_EQ(test::read_file(out + "/val.txt"), "Held out.\n");

  // Deterministic: a second run writes the same bytes.
  auto r2 = run_script("brown_corpus.py", q(corpus) + " " + q(out) + " --val-fraction 0.34");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(r2.out, r.out);

  auto bad = run_script("brown_corpus.py", q(out) + " " + q(out + "/x"));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("no Brown files"), std::string::npos) << bad.err;
}

// Writes a data directory by hand: train split in two shards, val in one.
void write_data_dir(const std::string& dir, const std::vector<int32_t>& train_a, const std::vector<int32_t>& train_b,
                    const std::vector<int32_t>& val, int vocab) {
  write_token_shard(dir + "/train-00000.bin", train_a, 2);
  write_token_shard(dir + "/train-00001.bin", train_b, 2);
  write_token_shard(dir + "/val-00000.bin", val, 2);
  std::ostringstream m;
  m << "{\"format\": \"strata-tokens\", \"version\": 1, \"tokenizer\": \"\", \"vocab_size\": " << vocab
    << ", \"eos_id\": 2, \"bos_id\": 1, \"dtype\": 2, \"train_tokens\": " << train_a.size() + train_b.size()
    << ", \"val_tokens\": " << val.size() << ", \"train_documents\": 1, \"val_documents\": 1, \"shards\": ["
    << "{\"file\": \"train-00000.bin\", \"split\": \"train\", \"tokens\": " << train_a.size() << "},"
    << "{\"file\": \"train-00001.bin\", \"split\": \"train\", \"tokens\": " << train_b.size() << "},"
    << "{\"file\": \"val-00000.bin\", \"split\": \"val\", \"tokens\": " << val.size() << "}]}";
  test::write_file(dir + "/meta.json", m.str());
}

TEST(DemoCorpus, UnigramLossIsAddOneCrossEntropyOnVal) {
  REQUIRE_PYTHON();
  const std::string dir = test::make_temp_dir("unigram");
  const int V = 10;
  const std::vector<int32_t> a = {3, 3, 3, 4, 5}, b = {5, 9, 3}, val = {3, 4, 7, 3, 9, 0};
  write_data_dir(dir, a, b, val, V);
  // Train counts: 3 x4, 4 x1, 5 x2, 9 x1; N = 8. p(i) = (c_i + 1) / (N + V).
  std::map<int, int> c = {{3, 4}, {4, 1}, {5, 2}, {9, 1}};
  auto nll = [&](int t) { return std::log(8.0 + V) - std::log(c[t] + 1.0); };
  double all = 0;
  for (int t : val) all += nll(t);
  all /= static_cast<double>(val.size());

  auto r = run_script("unigram_loss.py", q(dir));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto f = fields(r.out);
  EXPECT_NEAR(std::stod(f["unigram_val_loss"]), all, 1e-4);
  EXPECT_EQ(f["tokens"], "6");
  EXPECT_EQ(f["train_tokens"], "8");
  EXPECT_EQ(f["vocab"], "10");

  // --seq T --rows R: the targets strata train scores in validation (unshuffled
  // windows g*T .. g*T+T, wrapping at the end of the val split).
  const int T = 4, R = 2;
  double win = 0;
  for (int g = 0; g < R; ++g)
    for (int k = 1; k <= T; ++k) win += nll(val[(g * T + k) % val.size()]);
  win /= R * T;
  auto rw = run_script("unigram_loss.py", q(dir) + " --seq 4 --rows 2");
  ASSERT_EQ(rw.exit_code, 0) << rw.err;
  auto fw = fields(rw.out);
  EXPECT_NEAR(std::stod(fw["unigram_val_loss"]), win, 1e-4);
  EXPECT_EQ(fw["tokens"], "8");

  // A corrupt shard is an error naming the file.
  test::write_file(dir + "/val-00000.bin", "NOTATOK1" + std::string(24, '\0'));
  auto bad = run_script("unigram_loss.py", q(dir));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("val-00000.bin"), std::string::npos) << bad.err;
}

// The demo's pipeline on a small stand-in corpus: brown_corpus.py, strata
// tokenize, unigram_loss.py, checked against the shards as strata reads them.
TEST(DemoCorpus, PipelineThroughStrataTokenize) {
  REQUIRE_PYTHON();
  STRATA_REQUIRE_SHARED_DATA(shared);
  const std::string corpus = test::make_temp_dir("brown"), text = test::make_temp_dir("brown-text");
  const std::string data = test::make_temp_dir("brown-data");
  const char* words[] = {"the/at", "dog/nn", "ran/vbd", "home/nr", "and/cc", "a/at", "cat/nn", "slept/vbd"};
  for (int f = 0; f < 20; ++f) {
    std::string body;
    for (int s = 0; s < 6; ++s) {
      body += "\n\n\t";
      for (int w = 0; w < 9; ++w) body += std::string(words[(f * 7 + s * 3 + w * w) % 8]) + " ";
      body += "./.\n";
    }
    char name[8];
    std::snprintf(name, sizeof name, "c%c%02d", 'a' + f / 10, f % 10 + 1);
    test::write_file(corpus + "/" + name, body);
  }
  auto r = run_script("brown_corpus.py", q(corpus) + " " + q(text) + " --val-fraction 0.1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(fields(r.out)["val_documents"], "2");
  auto t = test::run_cli("tokenize --tokenizer " + q(shared + "/tok512.model") + " --input " + q(text + "/train.txt") +
                         " " + q(text + "/val.txt") + " -o " + q(data) + " --val-fraction 0.1");
  ASSERT_EQ(t.exit_code, 0) << t.err;

  TokenData train(data, "train"), val(data, "val");
  const int64_t V = train.meta().vocab_size;
  std::vector<double> counts(static_cast<size_t>(V), 0.0);
  for (int64_t i = 0; i < train.size(); ++i) counts[static_cast<size_t>(train.token(i))] += 1;
  double sum = 0;
  for (int64_t i = 0; i < val.size(); ++i)
    sum += std::log(static_cast<double>(train.size() + V)) - std::log(counts[static_cast<size_t>(val.token(i))] + 1);
  auto u = run_script("unigram_loss.py", q(data));
  ASSERT_EQ(u.exit_code, 0) << u.err;
  auto f = fields(u.out);
  EXPECT_NEAR(std::stod(f["unigram_val_loss"]), sum / static_cast<double>(val.size()), 1e-4);
  EXPECT_EQ(f["tokens"], std::to_string(val.size()));
  EXPECT_EQ(f["train_tokens"], std::to_string(train.size()));
}

}  // namespace
}  // namespace strata
