// Byte-level BPE from a Hugging Face tokenizer.json (GPT-2 / GPT-NeoX style):
// added tokens matched whole, optional NFC, Split / ByteLevel pre-tokenizers,
// merges applied by rank, the ByteLevel decoder. What a file may contain and what
// is refused: docs/formats.md, "Hugging Face tokenizer.json".
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/bpe_regex.h"

namespace strata::text {

class BpeTokenizer {
 public:
  // Reads and checks `path`; every refusal is a strata::Error naming the file and the field.
  // A tokenizer_config.json beside it, if present, may name the EOS (and, with add_bos_token, BOS) token.
  static std::unique_ptr<BpeTokenizer> load(const std::string& path);
  ~BpeTokenizer();

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const { return bos_; }  // -1 if none
  int32_t eos_id() const { return eos_; }  // -1 if none
  // add_bos: the post-processor's leading special tokens (what HF adds before the text), if any.
  std::vector<int32_t> encode(const std::string& text, bool add_bos) const;
  // The exact bytes of the tokens (special added tokens give none), so decode(encode(s)) == s for any
  // bytes s. Throws on an id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids) const;
  // The token as spelled in the file (byte-level symbols such as "Ġthe", or an added token's text).
  const std::string& piece(int32_t id) const;

 private:
  BpeTokenizer() = default;
  friend class BpeLoader;

  struct Merge {
    int32_t rank, result;
  };
  // Added tokens bucketed by first byte, longest first, for leftmost-longest matching.
  struct AddedSet {
    std::array<std::vector<std::pair<std::string, int32_t>>, 256> by_first;
    bool empty = true;
  };
  struct PreStep {  // a Split (regex set) or the final ByteLevel (regex only with use_regex)
    std::unique_ptr<SplitRegex> regex;
    bool byte_level = false;
    bool add_prefix_space = false;
  };
  struct Piece {
    int32_t id;  // an added token's id, or -1 for text
    std::string_view text;
  };

  void split_added(std::string_view s, const AddedSet& set, std::vector<Piece>& out) const;
  void encode_text(std::string_view s, std::vector<int32_t>& out) const;
  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  void check_id(int32_t id) const;

  std::string path_;
  std::vector<std::string> pieces_;                 // id -> token as written
  std::vector<std::string> bytes_;                  // id -> the bytes it decodes to
  std::unordered_map<std::string, int32_t> vocab_;  // model.vocab, for ignore_merges' whole-word lookup
  std::unordered_map<uint64_t, Merge> merges_;      // (left id << 32 | right id) -> rank and result
  std::array<int32_t, 256> byte_ids_{};             // byte -> id of its symbol (unk if absent)
  int32_t unk_ = -1;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  bool nfc_ = false;
  AddedSet raw_added_;   // normalized: false, matched in the input as given
  AddedSet norm_added_;  // normalized: true, matched after the normalizer
  std::vector<PreStep> pre_;
  std::vector<int32_t> prefix_ids_;  // TemplateProcessing's tokens before the text
  int32_t bos_ = -1, eos_ = -1;
};

// GPT-2's reversible byte -> character map, as UTF-8: printable Latin-1 bytes stand for themselves,
// the other 68 take U+0100 upwards in byte order (space -> 'Ġ', newline -> 'Ċ').
const std::array<std::string, 256>& byte_symbols();

}  // namespace strata::text
