// Passkey retrieval (docs/long-context.md; the Landmark-Attention format):
// a task line, filler sentences, the info line with a 5-digit key at a
// chosen depth, more filler, and the question, lines joined by "\n". The
// filler is made of whole sentences, as many as fit the target length in
// tokens of the model's tokenizer; depth d puts round(d x sentences) of them
// before the info line (0: right after the task line, 1: right before the
// question). An answer is correct when its first run of digits is the key.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "strata/tokenizer.h"

namespace strata {

struct PasskeyPrompt {
  std::string text;
  std::vector<int32_t> ids;  // tokenized (with BOS when add_bos)
  int64_t key = 0;
  int64_t sentences = 0, before = 0;  // filler sentences in all, and before the info line
};

// The prompt for `key` at `depth` in [0, 1] with at most `length` tokens.
// Throws when even the prompt without filler is longer than `length`.
PasskeyPrompt passkey_prompt(const Tokenizer& tok, bool add_bos, int64_t length, double depth, int64_t key);

// A uniformly random 5-digit key (10000-99999) from a seed and an index.
int64_t passkey_key(uint64_t seed, int64_t index);

// The first run of decimal digits in `answer` equals `key` (no run: wrong).
bool passkey_correct(const std::string& answer, int64_t key);

// "1k" -> 1024, "4096" -> 4096, "256k" -> 262144 (k = 1024); throws naming `what`.
int64_t parse_length(const std::string& text, const std::string& what);

}  // namespace strata
