// Hand-written byte-level tokenizer.json files for the BPE tests.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace strata::test {

// GPT-2's byte -> character map written out independently of src/text: printable Latin-1 bytes are
// themselves, the other 68 bytes take U+0100.. in order.
inline std::string byte_char(unsigned char b) {
  unsigned cp = b;
  if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
    unsigned n = 0;
    for (unsigned x = 0; x < b; ++x)
      if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) ++n;
    cp = 256 + n;
  }
  if (cp < 0x80) return std::string(1, static_cast<char>(cp));
  return {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
}

inline std::string sym(const std::string& raw) {
  std::string s;
  for (char c : raw) s += byte_char(static_cast<unsigned char>(c));
  return s;
}

// The merges of the standard test vocabulary, in raw bytes; merge i makes token 256 + i.
inline const std::vector<std::pair<std::string, std::string>>& test_merges() {
  static const std::vector<std::pair<std::string, std::string>> m = {
      {"h", "e"},         // 256 he
      {"l", "l"},         // 257 ll
      {"he", "ll"},       // 258 hell
      {"hell", "o"},      // 259 hello
      {" ", "w"},         // 260 " w"
      {"o", "r"},         // 261 or
      {" w", "or"},       // 262 " wor"
      {"l", "d"},         // 263 ld
      {" wor", "ld"},     // 264 " world"
      {"b", "c"},         // 265 bc   (ranks before "a b": "abc" -> a bc)
      {"a", "b"},         // 266 ab
      {"n", "'"},         // 267 n'   (across the contraction boundary: never applies in "don't")
      {"'", "t"},         // 268 't
      {"a", "1"},         // 269 a1   (across a letter/digit boundary)
      {" ", "b"},         // 270 " b"
      {"\xC3", "\xA9"},   // 271 é
      {" ", "a"},         // 272 " a"
      {"1", "2"},         // 273 12
      {"12", "3"},        // 274 123
      {"4", "5"},         // 275 45
      {"\xC3", "\xB6"},   // 276 ö
      {"w", "\xC3\xB6"},  // 277 wö   (loses to " w", rank 4, in " wörld")
      {"!", "\n"},        // 278 "!\n"
  };
  return m;
}
constexpr int kEot = 279;  // <|endoftext|>

// A GPT-2-style tokenizer.json: the 256 byte symbols (id = byte), test_merges(), <|endoftext|>.
inline nlohmann::json test_tokenizer_json(bool merges_as_pairs = false) {
  using json = nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(static_cast<unsigned char>(b))] = b;
  json merges = json::array();
  int next = 256;
  for (const auto& [a, b] : test_merges()) {
    vocab[sym(a + b)] = next++;
    if (merges_as_pairs)
      merges.push_back(json::array({sym(a), sym(b)}));
    else
      merges.push_back(sym(a) + " " + sym(b));
  }
  vocab["<|endoftext|>"] = kEot;
  const json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array({{{"id", kEot},
                                     {"content", "<|endoftext|>"},
                                     {"single_word", false},
                                     {"lstrip", false},
                                     {"rstrip", false},
                                     {"normalized", false},
                                     {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"vocab", vocab},
        {"merges", merges}}},
  };
}

}  // namespace strata::test
