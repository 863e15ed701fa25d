// The pattern splits of byte-level BPE pre-tokenizers, on PCRE2 in UTF + UCP mode
// (\p{L}, \p{N} and \s are Unicode properties; lookahead such as (?!\S) works).
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace strata::text {

class SplitRegex {
 public:
  // Throws strata::Error "<where>: <PCRE2's message> at offset N" when the pattern does not compile.
  // `literal`: the pattern is plain text (a Split's {"String": ...}).
  SplitRegex(const std::string& pattern, bool literal, const std::string& where);
  ~SplitRegex();
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  // Appends the pieces of `s` in order: every match and every stretch between matches ("Isolated"),
  // none empty. Bytes that are not valid UTF-8 never match and so end up in the stretches between.
  // Safe to call from several threads at once.
  void split(std::string_view s, std::vector<std::string_view>& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// GPT-2's pre-tokenizer pattern, which ByteLevel applies when use_regex is true.
extern const char* const kGpt2SplitPattern;

}  // namespace strata::text
