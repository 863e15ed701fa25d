// `strata tokenize` end to end: documents -> shards -> the same documents.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "strata/tokenizer.h"
#include "test_util.h"
#include "train/token_data.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

using test::run_cli;

struct Corpus {
  std::vector<std::string> docs;   // in order over both files
  std::vector<std::string> files;
  std::string tokenizer;
};

// Two files of documents separated by blank lines (some several, some whitespace only),
// and a vocab-300 tokenizer trained on them with `strata train-tokenizer`.
const Corpus& corpus() {
  static Corpus c = [] {
    Corpus c;
    const std::string dir = test::make_temp_dir("corpus");
    const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "see",
                           "big", "red", "sun", "over", "hill", "she", "said", "hello", "world"};
    uint64_t x = 7;
    auto next = [&](uint64_t n) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      return (x >> 33) % n;
    };
    for (int f = 0; f < 2; ++f) {
      std::string text = f == 1 ? "\n \n" : "";  // leading blank lines are not a document
      for (int d = 0; d < 60; ++d) {
        std::string doc;
        const uint64_t lines = 1 + next(4);
        for (uint64_t l = 0; l < lines; ++l) {
          if (l) doc += "\n";
          const uint64_t n = 3 + next(8);
          for (uint64_t w = 0; w < n; ++w) doc += std::string(w ? " " : "") + words[next(20)];
          doc += ".";
        }
        c.docs.push_back(doc);
        text += doc + "\n";
        if (d + 1 < 60) text += next(3) == 0 ? "\n\t\n\n" : "\n";
      }
      const std::string file = dir + "/part" + std::to_string(f) + ".txt";
      test::write_file(file, text);
      c.files.push_back(file);
    }
    c.tokenizer = dir + "/tok.model";
    auto r = run_cli("train-tokenizer --input '" + c.files[0] + "' '" + c.files[1] + "' --vocab 300 -o '" +
                     c.tokenizer + "'");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return c;
  }();
  return c;
}

std::string inputs() { return "'" + corpus().files[0] + "' '" + corpus().files[1] + "'"; }

// The documents of a split: the ids cut at each EOS and decoded.
std::vector<std::string> decode_docs(const TokenData& d, const Tokenizer& tok) {
  std::vector<int32_t> ids(static_cast<size_t>(d.size()));
  d.read(0, d.size(), ids.data());
  EXPECT_TRUE(ids.empty() || ids.back() == tok.eos_id());
  std::vector<std::string> docs;
  std::vector<int32_t> cur;
  for (int32_t id : ids) {
    if (id == tok.eos_id()) {
      docs.push_back(tok.decode(cur));
      cur.clear();
    } else {
      EXPECT_NE(id, tok.bos_id());
      cur.push_back(id);
    }
  }
  return docs;
}

TEST(CliData, TokenizeRoundTripsDocumentsWithEosBetween) {
  const Corpus& c = corpus();
  const std::string out = test::make_temp_dir("data") + "/d";
  auto r = run_cli("tokenize --tokenizer '" + c.tokenizer + "' --input " + inputs() + " -o '" + out +
                   "' --shard-tokens 700 --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
  const auto tok = Tokenizer::load(c.tokenizer);
  TokenData d(out, "train");
  const auto meta = nlohmann::json::parse(test::read_file(out + "/meta.json"));
  EXPECT_EQ(meta["vocab_size"], 300);
  EXPECT_EQ(meta["eos_id"], tok->eos_id());
  EXPECT_EQ(meta["bos_id"], tok->bos_id());
  EXPECT_EQ(meta["train_tokens"].get<int64_t>(), d.size());
  EXPECT_EQ(meta["val_tokens"], 0);
  EXPECT_TRUE(fs::equivalent(meta["tokenizer"].get<std::string>(), c.tokenizer));
  EXPECT_GT(d.num_shards(), 2);
  EXPECT_TRUE(fs::exists(out + "/train-00000.bin"));
  EXPECT_TRUE(fs::exists(out + "/train-00001.bin"));
  EXPECT_EQ(fs::file_size(out + "/train-00000.bin"), 32u + 2 * 700);  // uint16 ids
  EXPECT_EQ(decode_docs(d, *tok), c.docs);
  EXPECT_EQ(TokenData(out, "val").size(), 0);
  d.check_vocab(300);
  // No temporary files left behind.
  for (const auto& e : fs::directory_iterator(out)) EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
}

TEST(CliData, TokenizeValSplitIsTheLastDocumentsAndThreadsDoNotMatter) {
  const Corpus& c = corpus();
  const std::string base = test::make_temp_dir("data");
  for (int threads : {1, 2}) {
    const std::string out = base + "/t" + std::to_string(threads);
    auto r = run_cli("tokenize --tokenizer '" + c.tokenizer + "' --input " + inputs() + " -o '" + out +
                     "' --val-fraction 0.25 --threads " + std::to_string(threads));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const auto tok = Tokenizer::load(c.tokenizer);
  const std::string out = base + "/t2";
  const auto train = decode_docs(TokenData(out, "train"), *tok), val = decode_docs(TokenData(out, "val"), *tok);
  ASSERT_EQ(val.size(), 30u);  // 25% of 120 documents
  EXPECT_EQ(train, std::vector<std::string>(c.docs.begin(), c.docs.begin() + 90));
  EXPECT_EQ(val, std::vector<std::string>(c.docs.begin() + 90, c.docs.end()));
  const auto meta = nlohmann::json::parse(test::read_file(out + "/meta.json"));
  EXPECT_EQ(meta["val_documents"], 30);
  EXPECT_EQ(meta["val_tokens"].get<int64_t>(), TokenData(out, "val").size());
  for (const char* f : {"meta.json", "train-00000.bin", "val-00000.bin"})
    EXPECT_EQ(test::read_file(base + "/t1/" + f), test::read_file(out + "/" + f)) << f;
  // Re-tokenizing into the same directory with smaller shards leaves no stale shard behind.
  auto r = run_cli("tokenize --tokenizer '" + c.tokenizer + "' --input '" + c.files[0] + "' -o '" + out +
                   "' --shard-tokens 100000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(out + "/val-00000.bin"));
  EXPECT_EQ(decode_docs(TokenData(out, "train"), *tok), std::vector<std::string>(c.docs.begin(), c.docs.begin() + 60));
}

TEST(CliData, TokenizeErrorsAreOneLine) {
  const Corpus& c = corpus();
  const std::string out = test::make_temp_dir("data") + "/d";
  auto expect_error = [](const test::CliResult& r, const std::string& needle) {
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("strata: error:", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  };
  expect_error(run_cli("tokenize --tokenizer '" + c.tokenizer + "' --input /nonexistent/x.txt -o '" + out + "'"),
               "/nonexistent/x.txt");
  expect_error(run_cli("tokenize --tokenizer /nonexistent/t.model --input " + inputs() + " -o '" + out + "'"),
               "/nonexistent/t.model");
  expect_error(run_cli("tokenize --tokenizer '" + c.tokenizer + "' --input " + inputs() + " -o '" + out +
                       "' --val-fraction 1.5"),
               "val-fraction");
  const std::string empty = test::make_temp_dir("data") + "/empty.txt";
  test::write_file(empty, "\n\n  \n");
  expect_error(run_cli("tokenize --tokenizer '" + c.tokenizer + "' --input '" + empty + "' -o '" + out + "'"),
               "no documents");
  EXPECT_FALSE(fs::exists(out + "/meta.json"));
}

// A model with a padded vocabulary (more embedding rows than the tokenizer
// has pieces, as lit-gpt pads 50277 to 50304) loads with its tokenizer and
// never samples a padding id; a tokenizer with more pieces than rows is refused.
TEST(CliData, PaddedVocabularyFitsItsTokenizer) {
  const Corpus& c = corpus();
  const std::string dir = test::make_temp_dir("padded");
  ASSERT_EQ(run_cli("init --preset tiny -o '" + dir + "/base'").exit_code, 0);
  std::ifstream in(dir + "/base/config.json");
  nlohmann::json cfg = nlohmann::json::parse(in);
  cfg["vocab_size"] = 364;  // the tokenizer has 300 pieces
  test::write_file(dir + "/cfg.json", cfg.dump());
  ASSERT_EQ(run_cli("init --config '" + dir + "/cfg.json' --dtype f32 --seed 4 -o '" + dir + "/m'").exit_code, 0);
  // Random weights at a high temperature: ids spread over all 364 rows unless limited.
  auto r = run_cli("generate -m '" + dir + "/m' --tokenizer '" + c.tokenizer + "' -p 'the' -n 200 --temp 5 --seed 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("generated 200 tokens"), std::string::npos) << r.err;
  cfg["vocab_size"] = 256;
  test::write_file(dir + "/small.json", cfg.dump());
  ASSERT_EQ(run_cli("init --config '" + dir + "/small.json' --dtype f32 -o '" + dir + "/s'").exit_code, 0);
  r = run_cli("generate -m '" + dir + "/s' --tokenizer '" + c.tokenizer + "' -n 3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tokenizer has 300 pieces but the model's vocab_size is 256"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace strata
