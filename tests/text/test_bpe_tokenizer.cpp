// Byte-level BPE from hand-written tokenizer.json files: every expected id is worked out by hand
// from the merges in bpe_test_util.h (ids 0..255 are the bytes themselves).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "strata/error.h"
#include "strata/tokenizer.h"
#include "test_util.h"
#include "text/bpe_test_util.h"
#include "text/unicode_nfc.h"

namespace strata {
namespace {

using Ids = std::vector<int32_t>;
using json = nlohmann::json;
using test::kEot;
using test::sym;

std::unique_ptr<Tokenizer> load_json(const json& j, const std::string& tag = "bpe") {
  const std::string path = test::make_temp_dir(tag) + "/tokenizer.json";
  test::write_file(path, j.dump());
  return Tokenizer::load(path);
}

std::unique_ptr<Tokenizer> standard() { return load_json(test::test_tokenizer_json()); }

// Llama-3's pre-tokenizer: a Split with its own pattern, then ByteLevel without the GPT-2 regex.
json llama3_pre_tokenizer() {
  return {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array(
           {{{"type", "Split"},
             {"pattern",
              {{"Regex",
                R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}};
}

TEST(BpeTokenizer, LoadsVocabularyAndSpecials) {
  auto tok = standard();
  EXPECT_EQ(tok->kind(), TokenizerKind::kByteLevelBpe);
  EXPECT_EQ(tok->vocab_size(), 280);
  EXPECT_EQ(tok->bos_id(), -1);  // no template: nothing is added, as for GPT-NeoX
  EXPECT_EQ(tok->eos_id(), kEot);
  EXPECT_EQ(tok->piece(264), "\xC4\xA0world");  // "Ġworld"
  EXPECT_EQ(tok->piece(10), "\xC4\x8A");        // "Ċ"
  EXPECT_EQ(tok->piece(kEot), "<|endoftext|>");
  EXPECT_EQ(tok->encode("", false), Ids{});
  EXPECT_EQ(tok->encode("", true), Ids{});
}

TEST(BpeTokenizer, ByteSymbols) {
  EXPECT_EQ(test::byte_char(' '), "\xC4\xA0");   // Ġ U+0120
  EXPECT_EQ(test::byte_char('\n'), "\xC4\x8A");  // Ċ U+010A
  EXPECT_EQ(test::byte_char('\t'), "\xC4\x89");  // ĉ U+0109
  EXPECT_EQ(test::byte_char(0xAD), "\xC5\x83");  // Ń U+0143, the last of the 68
  EXPECT_EQ(test::byte_char('A'), "A");
  EXPECT_EQ(test::byte_char(0xE9), "\xC3\xA9");  // é stands for byte 0xE9
  auto tok = standard();
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, static_cast<char>(b));
    EXPECT_EQ(tok->piece(b), test::byte_char(static_cast<unsigned char>(b))) << b;
    EXPECT_EQ(tok->decode({b}), one) << b;
  }
}

TEST(BpeTokenizer, EncodesWordsSpacesAndNewlines) {
  auto tok = standard();
  EXPECT_EQ(tok->encode("hello world", false), (Ids{259, 264}));
  EXPECT_EQ(tok->encode("hello", true), (Ids{259}));             // add_bos adds nothing without a template
  EXPECT_EQ(tok->encode("world", false), (Ids{'w', 261, 263}));  // no leading space: "w or ld"
  // "\s+(?!\S)": of two spaces before a word the first stands alone, the second leads the word.
  EXPECT_EQ(tok->encode("a  b", false), (Ids{'a', ' ', 270}));
  EXPECT_EQ(tok->encode("a  ", false), (Ids{'a', ' ', ' '}));  // trailing run: one piece, no merge
  EXPECT_EQ(tok->encode("a\nb", false), (Ids{'a', '\n', 'b'}));
  EXPECT_EQ(tok->encode("\n\n", false), (Ids{'\n', '\n'}));
  EXPECT_EQ(tok->encode(" a", false), (Ids{272}));
}

TEST(BpeTokenizer, RegexBoundaries) {
  auto tok = standard();
  // "don't" splits into "don" + "'t": the rank-11 merge "n '" would apply if the pieces were one.
  EXPECT_EQ(tok->encode("don't", false), (Ids{'d', 'o', 'n', 268}));
  EXPECT_EQ(tok->encode("n'", false), (Ids{'n', '\''}));  // ' alone is punctuation, not a contraction
  // Letters and digits are separate pieces: "a 1" is never merged.
  EXPECT_EQ(tok->encode("a1", false), (Ids{'a', '1'}));
  EXPECT_EQ(tok->encode("a 12345", false), (Ids{'a', ' ', 274, 275}));  // " 12345" is one piece
  EXPECT_EQ(tok->encode("4512", false), (Ids{275, 273}));
  // Punctuation runs, with an optional leading space.
  EXPECT_EQ(tok->encode("hello!!", false), (Ids{259, '!', '!'}));
  EXPECT_EQ(tok->encode("hello !?", false), (Ids{259, ' ', '!', '?'}));
  EXPECT_EQ(tok->encode("hi!\n\nyo", false), (Ids{'h', 'i', '!', '\n', '\n', 'y', 'o'}));
}

TEST(BpeTokenizer, MergeRankBeatsPosition) {
  auto tok = standard();
  // "a b" (rank 10) is the leftmost pair but "b c" (rank 9) comes first; a left-to-right merger gives ab c.
  EXPECT_EQ(tok->encode("abc", false), (Ids{'a', 265}));
  EXPECT_EQ(tok->encode("cab", false), (Ids{'c', 266}));
  EXPECT_EQ(tok->encode("abab", false), (Ids{266, 266}));
  // " w" (rank 4) takes the w before "w ö" (rank 21) can.
  EXPECT_EQ(tok->encode(" w\xC3\xB6rld", false), (Ids{260, 276, 'r', 263}));
  EXPECT_EQ(tok->encode("w\xC3\xB6", false), (Ids{277}));
}

TEST(BpeTokenizer, UnicodeLettersAndEmoji) {
  auto tok = standard();
  // "héllo": "l l" (rank 1) before "Ã ©" (rank 15); "ll o" is no merge.
  EXPECT_EQ(tok->encode("h\xC3\xA9llo w\xC3\xB6rld", false), (Ids{'h', 271, 257, 'o', 260, 276, 'r', 263}));
  // U+1F600 is punctuation-class ([^\s\p{L}\p{N}]), one piece with its leading space, four byte symbols.
  EXPECT_EQ(tok->encode("hi \xF0\x9F\x98\x80", false), (Ids{'h', 'i', ' ', 0xF0, 0x9F, 0x98, 0x80}));
  EXPECT_EQ(tok->piece(0x9F) + tok->piece(0x98) + tok->piece(0x80), "\xC5\x81\xC4\xBA\xC4\xA2");  // ŁĺĢ
  // Greek letters are \p{L}: " αβ" is one piece, the space in front included.
  EXPECT_EQ(tok->encode(" \xCE\xB1\xCE\xB2", false), (Ids{' ', 0xCE, 0xB1, 0xCE, 0xB2}));
}

TEST(BpeTokenizer, SpecialTokenInsideText) {
  auto tok = standard();
  EXPECT_EQ(tok->encode("hello<|endoftext|>world", false), (Ids{259, kEot, 'w', 261, 263}));
  EXPECT_EQ(tok->encode("<|endoftext|>", false), (Ids{kEot}));
  EXPECT_EQ(tok->encode("<|endoftext|><|endoftext|> a", false), (Ids{kEot, kEot, 272}));
  EXPECT_EQ(tok->encode("<|endoftext|", false), (Ids{'<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|'}));
  // Special tokens decode to nothing, like SentencePiece's control tokens.
  EXPECT_EQ(tok->decode({259, kEot, 264}), "hello world");
}

TEST(BpeTokenizer, MergesAsPairsGiveTheSameIds) {
  auto strings = standard();
  auto pairs = load_json(test::test_tokenizer_json(true));
  for (const std::string s : {"hello world", "abc", "h\xC3\xA9llo w\xC3\xB6rld", "4512 don't!\n"})
    EXPECT_EQ(pairs->encode(s, false), strings->encode(s, false)) << s;
  EXPECT_EQ(pairs->encode("abc", false), (Ids{'a', 265}));
}

TEST(BpeTokenizer, AddPrefixSpace) {
  json j = test::test_tokenizer_json();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  auto tok = load_json(j);
  EXPECT_EQ(tok->encode("a", false), (Ids{272}));
  EXPECT_EQ(tok->encode(" a", false), (Ids{272}));  // already has one
  EXPECT_EQ(tok->encode("hello world", false), (Ids{' ', 259, 264}));
  // Every stretch between added tokens gets its own space, as in Hugging Face's tokenizers.
  EXPECT_EQ(tok->encode("a<|endoftext|>a", false), (Ids{272, kEot, 272}));
  EXPECT_EQ(tok->encode("", false), Ids{});
  EXPECT_EQ(tok->decode(tok->encode("a", false)), " a");  // the ByteLevel decoder keeps the space
}

TEST(BpeTokenizer, SplitThenByteLevelWithoutRegex) {
  json j = test::test_tokenizer_json();
  j["pre_tokenizer"] = llama3_pre_tokenizer();
  auto tok = load_json(j);
  EXPECT_EQ(tok->encode("4512", false), (Ids{275, '1', '2'}));                       // \p{N}{1,3}: "451" "2"
  EXPECT_EQ(tok->encode("hi!\n\nyo", false), (Ids{'h', 'i', 278, '\n', 'y', 'o'}));  // "!\n\n" one piece
  EXPECT_EQ(tok->encode("hello world", false), (Ids{259, 264}));
  EXPECT_EQ(tok->encode("don't", false), (Ids{'d', 'o', 'n', 268}));
  EXPECT_EQ(tok->encode("DON'T", false), (Ids{'D', 'O', 'N', '\'', 'T'}));
  EXPECT_EQ(tok->encode("a  b", false), (Ids{'a', ' ', 270}));
  // A literal String pattern: "." is a dot, not any character.
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", "."}};
  tok = load_json(j);
  EXPECT_EQ(tok->encode("ab.c", false), (Ids{266, '.', 'c'}));
  EXPECT_EQ(tok->encode("abc", false), (Ids{'a', 265}));
}

TEST(BpeTokenizer, IgnoreMergesTakesWholeWords) {
  json j = test::test_tokenizer_json();
  j["model"]["vocab"]["xyz"] = 280;
  EXPECT_EQ(load_json(j)->encode("xyz", false), (Ids{'x', 'y', 'z'}));
  j["model"]["ignore_merges"] = true;
  auto tok = load_json(j);
  EXPECT_EQ(tok->encode("xyz", false), (Ids{280}));
  EXPECT_EQ(tok->encode("xyzx", false), (Ids{'x', 'y', 'z', 'x'}));
  EXPECT_EQ(tok->encode("abc", false), (Ids{'a', 265}));
}

TEST(BpeTokenizer, NfcNormalizerAndNormalizedAddedTokens) {
  json j = test::test_tokenizer_json();
  const std::string decomposed = "e\xCC\x81";  // e + COMBINING ACUTE ACCENT
  // Without a normalizer the mark is its own (punctuation-class) piece.
  EXPECT_EQ(load_json(j)->encode(decomposed, false), (Ids{'e', 0xCC, 0x81}));
  j["normalizer"] = {{"type", "NFC"}};
  // GPT-NeoX's whitespace tokens: normalized, not special, decode to themselves.
  j["added_tokens"].push_back({{"id", 280},
                               {"content", "  "},
                               {"single_word", false},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", true},
                               {"special", false}});
  j["added_tokens"].push_back({{"id", 281},
                               {"content", "   "},
                               {"single_word", false},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", true},
                               {"special", false}});
  auto tok = load_json(j);
  EXPECT_EQ(tok->encode(decomposed, false), (Ids{271}));
  EXPECT_EQ(tok->encode("h" + decomposed + "llo", false), (Ids{'h', 271, 257, 'o'}));
  EXPECT_EQ(tok->encode("a  b", false), (Ids{'a', 280, 'b'}));
  EXPECT_EQ(tok->encode("a     b", false), (Ids{'a', 281, 280, 'b'}));  // leftmost-longest
  EXPECT_EQ(tok->decode({'a', 281, 280, 'b'}), "a     b");
  EXPECT_EQ(tok->encode("x<|endoftext|>" + decomposed, false), (Ids{'x', kEot, 271}));
}

TEST(BpeTokenizer, TemplateProcessingGivesBos) {
  json j = test::test_tokenizer_json();
  j["model"]["vocab"]["<s>"] = 280;
  j["added_tokens"].push_back({{"id", 280},
                               {"content", "<s>"},
                               {"single_word", false},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", false},
                               {"special", true}});
  j["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       json::array({{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}},
                    {{"type", "TemplateProcessing"},
                     {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                     {"pair", json::array()},
                     {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {280}}, {"tokens", {"<s>"}}}}}}}})}};
  auto tok = load_json(j, "bpe-template");
  EXPECT_EQ(tok->bos_id(), 280);
  EXPECT_EQ(tok->eos_id(), kEot);
  EXPECT_EQ(tok->encode("hello", true), (Ids{280, 259}));
  EXPECT_EQ(tok->encode("hello", false), (Ids{259}));
  EXPECT_EQ(tok->encode("", true), (Ids{280}));
  EXPECT_EQ(tok->decode({280, 259}), "hello");

  // tokenizer_config.json beside names the EOS.
  const std::string dir = test::make_temp_dir("bpe-config");
  test::write_file(dir + "/tokenizer.json", j.dump());
  test::write_file(dir + "/tokenizer_config.json", R"({"eos_token": {"content": "<s>"}, "add_bos_token": false})");
  EXPECT_EQ(Tokenizer::load(dir + "/tokenizer.json")->eos_id(), 280);
  test::write_file(dir + "/tokenizer_config.json", R"({"eos_token": "</s>"})");
  const std::string msg = test::error_of([&] { Tokenizer::load(dir + "/tokenizer.json"); });
  EXPECT_NE(msg.find("tokenizer_config.json: field 'eos_token': '</s>' is not a token"), std::string::npos) << msg;
}

TEST(BpeTokenizer, BosFromTokenizerConfigWhenNoTemplate) {
  const std::string dir = test::make_temp_dir("bpe-config-bos");
  test::write_file(dir + "/tokenizer.json", test::test_tokenizer_json().dump());
  test::write_file(dir + "/tokenizer_config.json",
                   R"({"add_bos_token": true, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})");
  auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->bos_id(), kEot);
  EXPECT_EQ(tok->encode("a", true), (Ids{kEot, 'a'}));
}

std::string random_utf8(std::mt19937& rng, size_t chars) {
  static const char32_t ranges[][2] = {{0x20, 0x7E},     {0x09, 0x0D},       {0xA0, 0x24F},
                                       {0x300, 0x36F},   {0x391, 0x3C9},     {0x4E00, 0x4E80},
                                       {0xAC00, 0xAC40}, {0x1F600, 0x1F64F}, {0x2000, 0x200B}};
  std::string s;
  for (size_t i = 0; i < chars; ++i) {
    const auto& r = ranges[rng() % std::size(ranges)];
    char32_t c = r[0] + rng() % (r[1] - r[0] + 1);
    if (c < 0x80)
      s += static_cast<char>(c);
    else if (c < 0x800)
      s += {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
    else if (c < 0x10000)
      s += {static_cast<char>(0xE0 | (c >> 12)), static_cast<char>(0x80 | ((c >> 6) & 0x3F)),
            static_cast<char>(0x80 | (c & 0x3F))};
    else
      s += {static_cast<char>(0xF0 | (c >> 18)), static_cast<char>(0x80 | ((c >> 12) & 0x3F)),
            static_cast<char>(0x80 | ((c >> 6) & 0x3F)), static_cast<char>(0x80 | (c & 0x3F))};
  }
  return s;
}

TEST(BpeTokenizer, DecodeEncodeRoundTrips) {
  auto tok = standard();
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    const std::string s = random_utf8(rng, rng() % 40);
    EXPECT_EQ(tok->decode(tok->encode(s, false)), s);
  }
  // Bytes that are not UTF-8 (lone continuation bytes, a cut-off sequence, 0xFF, a surrogate) are kept
  // as byte tokens: decode gives back exactly the input.
  for (const std::string& s : {std::string("a\x80\x80z"), std::string("hello \xF0\x9F\x98"), std::string("\xFF\xFE"),
                               std::string("x\xED\xA0\x80y"), std::string("\xC3(abc"), std::string(1, '\0')}) {
    const Ids ids = tok->encode(s, false);
    EXPECT_EQ(tok->decode(ids), s);
  }
  EXPECT_EQ(tok->encode("\xC3(abc", false), (Ids{0xC3, '(', 'a', 265}));
  std::string bytes;
  for (int i = 0; i < 2000; ++i) bytes += static_cast<char>(rng() & 0xFF);
  EXPECT_EQ(tok->decode(tok->encode(bytes, false)), bytes);
}

TEST(BpeTokenizer, DecodeRejectsOutOfRangeIds) {
  auto tok = standard();
  const std::string path = tok->path();
  EXPECT_NE(test::error_of([&] { tok->decode({1, 280}); }).find(path + ": token id 280 is outside"), std::string::npos);
  EXPECT_NE(test::error_of([&] { tok->decode({-1}); }).find("-1"), std::string::npos);
  EXPECT_NE(test::error_of([&] { tok->piece(100000); }).find("100000"), std::string::npos);
}

TEST(BpeTokenizer, StreamDecoderHoldsSplitCharacters) {
  auto tok = standard();
  StreamDecoder sd(*tok, tok->encode("hi", false));
  EXPECT_EQ(sd.push(264), " world");
  EXPECT_EQ(sd.push(' '), " ");
  // U+1F600 arrives as four byte tokens: nothing until the last.
  EXPECT_EQ(sd.push(0xF0), "");
  EXPECT_EQ(sd.push(0x9F), "");
  EXPECT_EQ(sd.push(0x98), "");
  EXPECT_EQ(sd.push(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(sd.push(kEot), "");
  EXPECT_EQ(sd.push(271), "\xC3\xA9");
  EXPECT_EQ(sd.push(0xC3), "");  // é split as two bytes
  EXPECT_EQ(sd.push(0xA9), "\xC3\xA9");
  EXPECT_EQ(sd.push(0xE6), "");
  EXPECT_EQ(sd.finish(), "\xE6");  // a cut-off character comes out as its bytes
  // Context ending inside a character: the rest completes it and is emitted whole.
  StreamDecoder mid(*tok, {'a', 0xF0, 0x9F});
  EXPECT_EQ(mid.push(0x98), "");
  EXPECT_EQ(mid.push(0x80), "\xF0\x9F\x98\x80");
}

TEST(BpeTokenizer, LongWordsMergeFast) {
  // 2^17 'a's and merges doubling a run: one token per 1024 bytes. A rescan of all pairs per merge
  // would take ~10^10 steps here.
  json j = test::test_tokenizer_json();
  std::string run = "a";
  int next = 280;
  for (int k = 0; k < 10; ++k, run += run) {
    j["model"]["vocab"][sym(run + run)] = next++;
    j["model"]["merges"].push_back(sym(run) + " " + sym(run));
  }
  auto tok = load_json(j);
  const auto t0 = std::chrono::steady_clock::now();
  const Ids ids = tok->encode(std::string(1 << 17, 'a'), false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ids, Ids(128, 289));
  EXPECT_LT(secs, 10.0);
  // A long whitespace run (the (?!\S) lookahead over 100k spaces) splits as the regex says.
  const std::string spaces = "a" + std::string(100000, ' ') + "b";
  Ids want{'a'};
  want.insert(want.end(), 99999, ' ');
  want.push_back(270);
  EXPECT_EQ(tok->encode(spaces, false), want);
}

TEST(BpeTokenizer, ConcurrentEncodesAgree) {
  auto tok = standard();
  const std::string text = "hello world, don't 4512 h\xC3\xA9llo \xF0\x9F\x98\x80<|endoftext|>abc\n";
  const Ids want = tok->encode(text, false);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      int good = 0;
      for (int i = 0; i < 200; ++i) good += tok->encode(text, false) == want;
      ok[t] = good;
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(ok[t], 200);
}

TEST(BpeTokenizer, Nfc) {
  using text::nfc;
  EXPECT_EQ(nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");              // e + acute -> é
  EXPECT_EQ(nfc("\xC3\xA9"), "\xC3\xA9");               // already composed
  EXPECT_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");           // ANGSTROM SIGN -> Å (singleton)
  EXPECT_EQ(nfc("a\xCC\x82\xCC\xA3"), "\xE1\xBA\xAD");  // a + circumflex + dot below -> ậ (reordered)
  EXPECT_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo G A G -> 각
  EXPECT_EQ(nfc("\xE0\xBD\xB3"), "\xE0\xBD\xB1\xE0\xBD\xB2");              // U+0F73 is excluded from composition
  EXPECT_EQ(nfc("e\xFF\xCC\x81"), "e\xFF\xCC\x81");                        // an invalid byte blocks, and stays
  EXPECT_EQ(nfc("\xCC\x81"
                "a"),
            "\xCC\x81"
            "a");  // a leading mark has nothing to join
}

}  // namespace
}  // namespace strata
