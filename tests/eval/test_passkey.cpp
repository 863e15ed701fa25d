// The passkey task (docs/long-context.md; spec §8, invariant 15): exactly one
// info line, depth 0 right after the task line and depth 1 right before the
// question, the prompt within the target length (and the longest that fits),
// whole filler sentences, the scorer's cases, keys of 5 digits, lengths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "eval/passkey.h"
#include "strata/error.h"
#include "test_util.h"
#include "train/sft_data.h"

namespace strata {
namespace {

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> r;
  std::stringstream ss(s);
  for (std::string l; std::getline(ss, l);) r.push_back(l);
  return r;
}

TEST(Passkey, ScorerTakesTheFirstDigitRun) {
  EXPECT_TRUE(passkey_correct("12345.", 12345));
  EXPECT_TRUE(passkey_correct(" 12345 is the key", 12345));
  EXPECT_TRUE(passkey_correct("the key: 012345", 12345));
  EXPECT_FALSE(passkey_correct("1234", 12345));
  EXPECT_FALSE(passkey_correct("123456", 12345));
  EXPECT_FALSE(passkey_correct("1 2345", 12345));
  EXPECT_FALSE(passkey_correct("no digits", 12345));
  EXPECT_FALSE(passkey_correct("", 12345));
  EXPECT_FALSE(passkey_correct("99999999999999999999999999 12345", 12345));
}

TEST(Passkey, KeysHaveFiveDigitsAndLengthsParse) {
  for (int64_t i = 0; i < 2000; ++i) {
    const int64_t k = passkey_key(7, i);
    ASSERT_GE(k, 10000);
    ASSERT_LE(k, 99999);
  }
  EXPECT_NE(passkey_key(7, 0), passkey_key(8, 0));
  EXPECT_EQ(parse_length("4k", "x"), 4096);
  EXPECT_EQ(parse_length("256K", "x"), 262144);
  EXPECT_EQ(parse_length("1000", "x"), 1000);
  for (const char* bad : {"", "k", "-4", "4m", "1.5k", "0"}) EXPECT_THROW(parse_length(bad, "x"), Error) << bad;
}

TEST(Passkey, PromptLayoutAndLength) {
  STRATA_REQUIRE_SHARED_DATA(data);
  auto tok = Tokenizer::load(data + "/tok512.model");
  for (int64_t length : {200, 512, 3000})
    for (double depth : {0.0, 0.1, 0.5, 0.9, 1.0}) {
      const PasskeyPrompt p = passkey_prompt(*tok, true, length, depth, 54321);
      SCOPED_TRACE("length " + std::to_string(length) + " depth " + std::to_string(depth));
      EXPECT_LE(static_cast<int64_t>(p.ids.size()), length);
      EXPECT_EQ(p.ids, tok->encode(p.text, true));
      // The longest that fits: one sentence more would not.
      const PasskeyPrompt more = passkey_prompt(*tok, true, length + 200, depth, 54321);
      EXPECT_GT(more.sentences, p.sentences);
      const std::vector<std::string> l = lines_of(p.text);
      ASSERT_GE(l.size(), 3u);
      EXPECT_EQ(l.front().rfind("There is an important info hidden", 0), 0u);
      EXPECT_EQ(l.back(), "What is the pass key? The pass key is");
      const auto info = std::count_if(l.begin(), l.end(), [](const std::string& s) { return s.find("pass key is 54321") != std::string::npos; });
      EXPECT_EQ(info, 1);
      if (depth == 0.0) EXPECT_EQ(l[1], "The pass key is 54321. Remember it. 54321 is the pass key.");
      if (depth == 1.0) EXPECT_EQ(l[l.size() - 2], "The pass key is 54321. Remember it. 54321 is the pass key.");
      EXPECT_EQ(p.before, static_cast<int64_t>(std::llround(depth * static_cast<double>(p.sentences))));
      for (const std::string& s : l)  // whole sentences only
        if (s.find("grass") != std::string::npos || s.find("There and") != std::string::npos) EXPECT_EQ(s.back(), '.');
    }
  EXPECT_THROW(passkey_prompt(*tok, true, 10, 0.5, 12345), Error);
  EXPECT_THROW(passkey_prompt(*tok, true, 500, 1.5, 12345), Error);
}

// `sft --template none` on a {"prompt", "completion"} line: the prompt's
// tokens are eval's prompt ids, the loss falls on the completion and EOS.
TEST(Passkey, TuningExamplesTokenizeAsTheEvaluationPrompt) {
  STRATA_REQUIRE_SHARED_DATA(data);
  auto tok = Tokenizer::load(data + "/tok512.model");
  const PasskeyPrompt p = passkey_prompt(*tok, true, 300, 0.3, 24680);
  const SftExample ex = tokenize_chat(*tok, parse_chat_format("none"),
                                      {{"user", p.text}, {"assistant", " 24680."}});
  ASSERT_GT(ex.ids.size(), p.ids.size());
  EXPECT_TRUE(std::equal(p.ids.begin(), p.ids.end(), ex.ids.begin())) << "prompt tokens differ";
  for (size_t i = 0; i < p.ids.size(); ++i) ASSERT_EQ(ex.mask[i], 0) << i;
  for (size_t i = p.ids.size(); i < ex.ids.size(); ++i) ASSERT_EQ(ex.mask[i], 1) << i;
  EXPECT_EQ(ex.ids.back(), tok->eos_id());
  // (Decoding from the middle drops SentencePiece's leading space.)
  EXPECT_EQ(tok->decode(std::vector<int32_t>(ex.ids.begin() + p.ids.size(), ex.ids.end() - 1)), "24680.");
}

}  // namespace
}  // namespace strata
