// The tokenizer: SentencePiece (libsentencepiece, a .model) or Hugging Face
// byte-level BPE (a tokenizer.json, GPT-2 / GPT-NeoX style; docs/formats.md),
// and a streaming decoder that never emits half a UTF-8 character.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace strata {

enum class TokenizerKind { kSentencePiece, kByteLevelBpe };

class Tokenizer {
 public:
  // `path`: a tokenizer.json (or any file that is a JSON object) loads as byte-level BPE; a GGUF file
  // loads the SentencePiece-style vocabulary of its tokenizer.ggml.* metadata; anything else loads
  // as a SentencePiece model; a directory loads find_in_dir's file. Throws strata::Error naming the
  // file (and, for tokenizer.json, the field) when it is missing, malformed or asks for something unsupported.
  static std::unique_ptr<Tokenizer> load(const std::string& path);
  // The tokenizer file in `dir`: tokenizer.model, else tokenizer.json, else "".
  static std::string find_in_dir(const std::string& dir);
  ~Tokenizer();

  TokenizerKind kind() const;
  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;  // -1 if none
  // add_bos: prepend BOS (SentencePiece) or the post-processor's leading tokens (tokenizer.json).
  std::vector<int32_t> encode(const std::string& text, bool add_bos) const;
  // Decodes ids (BOS/EOS/control and special added tokens produce no text; byte pieces are joined
  // into UTF-8; byte-level BPE gives back the exact bytes). An id outside the vocabulary is an error.
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;
  // The bytes one token stands for, as a client sees it alone (logprobs): a
  // SentencePiece piece with its spaces, a byte piece as its byte.
  std::string token_text(int32_t id) const;
  // The serialized SentencePiece ModelProto (SentencePiece tokenizers only; fails otherwise).
  std::string spm_model_proto() const;
  const std::string& path() const { return path_; }  // the file loaded (inside a directory given to load)

 private:
  Tokenizer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

// Feeds generated ids one at a time and returns the new text that is complete:
// text is decoded over the whole sequence so far (so SentencePiece's leading
// space rules apply as in a full decode) and a trailing incomplete UTF-8 sequence
// or replacement character from a partial byte-fallback run is held back until
// it completes or finish() is called.
class StreamDecoder {
 public:
  // `context` are ids already shown to the user (the prompt); their text is not emitted.
  StreamDecoder(const Tokenizer& tok, std::vector<int32_t> context);
  std::string push(int32_t id);
  std::string finish();  // whatever is still held back

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of decode(ids_) already returned (or belonging to the context)
};

struct TokenizerTrainOptions {
  std::vector<std::string> inputs;  // text files, one sentence/document per line
  int32_t vocab_size = 512;
  std::string model_type = "bpe";
  bool byte_fallback = true;
  int64_t max_sentences = 0;  // 0: all
  int32_t threads = 0;        // 0: all cores
};
// Trains a SentencePiece model and writes it to `out_path` (unk=0, bos=1, eos=2).
void train_tokenizer(const TokenizerTrainOptions& opts, const std::string& out_path);

}  // namespace strata
