#include "eval/passkey.h"

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "core/rng.h"
#include "strata/error.h"

namespace strata {
namespace {

constexpr const char* kTask =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you "
    "about the important information there.";
constexpr const char* kSentences[] = {"The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                                      "There and back again."};
constexpr const char* kQuestion = "What is the pass key? The pass key is";

// n filler sentences starting at sentence `first` of the cycle, joined by spaces.
std::string filler(int64_t first, int64_t n) {
  std::string s;
  for (int64_t i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += kSentences[(first + i) % 5];
  }
  return s;
}

std::string prompt_text(int64_t sentences, int64_t before, int64_t key) {
  const std::string k = std::to_string(key);
  std::string s = std::string(kTask) + "\n";
  if (before > 0) s += filler(0, before) + "\n";
  s += "The pass key is " + k + ". Remember it. " + k + " is the pass key.\n";
  if (sentences - before > 0) s += filler(before, sentences - before) + "\n";
  return s + kQuestion;
}

int64_t before_for(int64_t sentences, double depth) {
  return static_cast<int64_t>(std::llround(depth * static_cast<double>(sentences)));
}

}  // namespace

PasskeyPrompt passkey_prompt(const Tokenizer& tok, bool add_bos, int64_t length, double depth, int64_t key) {
  if (!(depth >= 0.0 && depth <= 1.0)) fail("passkey depth ", depth, " is not in [0, 1]");
  auto count = [&](int64_t n) {
    return static_cast<int64_t>(tok.encode(prompt_text(n, before_for(n, depth), key), add_bos).size());
  };
  const int64_t bare = count(0);
  if (bare > length)
    fail("passkey length ", length, " is shorter than the prompt without filler (", bare, " tokens)");
  // Tokens grow about linearly with the sentences: bracket, then bisect for
  // the most sentences that fit.
  int64_t lo = 0, hi = 1;
  while (count(hi) <= length) lo = hi, hi *= 2;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (count(mid) <= length ? lo : hi) = mid;
  }
  PasskeyPrompt p;
  p.key = key;
  p.sentences = lo;
  p.before = before_for(lo, depth);
  p.text = prompt_text(lo, p.before, key);
  p.ids = tok.encode(p.text, add_bos);
  return p;
}

int64_t passkey_key(uint64_t seed, int64_t index) {
  Rng r(seed * 1000003ull + static_cast<uint64_t>(index) + 1);
  return 10000 + static_cast<int64_t>(r.next() % 90000);
}

bool passkey_correct(const std::string& answer, int64_t key) {
  size_t i = 0;
  while (i < answer.size() && !std::isdigit(static_cast<unsigned char>(answer[i]))) ++i;
  if (i == answer.size()) return false;
  size_t j = i;
  while (j < answer.size() && std::isdigit(static_cast<unsigned char>(answer[j]))) ++j;
  const std::string run = answer.substr(i, j - i);
  // Compare as text, leading zeros dropped, so no run overflows an integer.
  size_t z = 0;
  while (z + 1 < run.size() && run[z] == '0') ++z;
  return run.substr(z) == std::to_string(key);
}

int64_t parse_length(const std::string& text, const std::string& what) {
  std::string t = text;
  int64_t mult = 1;
  if (!t.empty() && (t.back() == 'k' || t.back() == 'K')) {
    mult = 1024;
    t.pop_back();
  }
  char* end = nullptr;
  const long long v = std::strtoll(t.c_str(), &end, 10);
  if (t.empty() || end != t.c_str() + t.size() || v < 1 || v > (int64_t{1} << 30))
    fail(what, ": '", text, "' is not a length (e.g. 4096 or 4k)");
  return v * mult;
}

}  // namespace strata
