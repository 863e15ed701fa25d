// Supervised fine-tuning data: chat templates, tokenization with loss masks,
// JSONL loading with file:line errors, and [B, T] batches (docs/formats.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "strata/tokenizer.h"
#include "train/token_data.h"

namespace strata {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// kNone: plain text, the messages back to back (loss on the assistant's
// text and a final EOS).
enum class ChatFormat { kZephyr, kChatML, kLlama2, kNone };
// "zephyr", "chatml", "llama-2" or "none"; anything else is an error listing them.
ChatFormat parse_chat_format(const std::string& name);

// One piece of a rendered conversation: text, or the BOS / EOS token itself.
// `train`: the loss is taken on its tokens (assistant content and its end marker).
struct ChatPiece {
  enum Kind { kText, kBos, kEos };
  Kind kind = kText;
  std::string text;
  bool train = false;
};

// The template applied to `msgs` (roles and, for llama-2, their order are checked).
// zephyr and chatml do not include the leading BOS (the tokenizer adds it);
// llama-2 has a BOS per exchange, as in Meta's reference.
std::vector<ChatPiece> chat_pieces(ChatFormat f, const std::vector<ChatMessage>& msgs, bool add_generation_prompt);
// The rendered string: BOS as "<s>", EOS as "</s>".
std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& msgs, bool add_generation_prompt);

struct SftExample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;  // per id: 1 = predict this token (loss), 0 = context only
  std::string source;         // "file:line" for messages
  // Whether any token after the first has mask 1 (the first is never predicted).
  bool trainable() const;
};

// BOS (mask 0) if the template does not start with one, then the pieces: BOS/EOS
// pieces become their ids, and each run of text between them is encoded as one
// string (as HF's tokenizers encode text between special tokens). Where the mask
// changes inside a run, the run is cut at the token boundary of encode(prefix) if
// that is a prefix of encode(run) (always so when the text before the cut ends in
// a newline or other byte-fallback token); otherwise the two sides are encoded
// separately. So mask boundaries are exact and, normally, the ids equal those of
// the whole rendered text.
// add_generation_prompt: end with the assistant's opening (a prompt to answer).
SftExample tokenize_chat(const Tokenizer& tok, ChatFormat f, const std::vector<ChatMessage>& msgs,
                         bool add_generation_prompt = false);

// Parses one JSONL record: {"messages":[{"role","content"}...]} or
// {"prompt","completion"} (= user + assistant). Errors have no location (the
// caller adds file:line).
std::vector<ChatMessage> parse_sft_record(const std::string& line);

struct SftLoadReport {
  int64_t samples = 0;          // kept
  int64_t skipped_no_loss = 0;  // all-zero mask
  std::string first_skipped;    // file:line of the first skipped sample
  int64_t tokens = 0, loss_tokens = 0;
};

// Loads JSONL files (blank lines are ignored). Any bad record is an error naming
// file:line, and so is a sample longer than max_len tokens (max_len <= 0: no
// limit); `max_len_why` says where the limit comes from in that error (e.g.
// "--seq 64 + 1" gives "longer than --seq 64 + 1 = 65 tokens"). Samples with
// nothing to train on are skipped and reported in one warning on stderr (count
// and first file:line).
std::vector<SftExample> load_sft_jsonl(const std::vector<std::string>& files, const Tokenizer& tok, ChatFormat f,
                                       int64_t max_len, SftLoadReport* report = nullptr,
                                       const std::string& max_len_why = "");

// Held-out examples: moves the last max(1, round(fraction * n)) examples (in
// file order, so the split is deterministic) out of `examples` and returns
// them; fraction 0 returns none. A fraction outside [0, 1), or one that leaves
// nothing to train on, is an error naming --val-fraction.
std::vector<SftExample> split_off_validation(std::vector<SftExample>& examples, double fraction);

// [B, T] micro-batches of SFT examples, a pure function of m. Rows: one example
// each, padded (pack = false), or examples packed greedily while their tokens fit
// in T+1 (pack = true; with shuffle the packing order is itself seeded). Rows are
// visited epoch by epoch in EpochOrder(rows, shuffle, seed). In a row of tokens x
// with mask k: inputs[t] = x[t], targets[t] = x[t+1] if k[t+1] == 1 and t+1 does
// not start an example, else -1; padding has input pad_id and target -1.
// positions (optional): the position of each input within its example.
class SftBatcher {
 public:
  SftBatcher(std::vector<SftExample> examples, int64_t B, int64_t T, bool shuffle, uint64_t seed, bool pack = false,
             int32_t pad_id = 0);

  void micro_batch(int64_t m, int32_t* inputs, int32_t* targets, int32_t* positions = nullptr) const;
  int64_t rows_per_epoch() const { return static_cast<int64_t>(rows_.size()); }
  int64_t micro_batches_per_epoch() const { return (rows_per_epoch() + B_ - 1) / B_; }
  int64_t batch() const { return B_; }
  int64_t seq() const { return T_; }

 private:
  static std::vector<std::vector<uint32_t>> make_rows(const std::vector<SftExample>& ex, int64_t T, bool pack,
                                                      bool shuffle, uint64_t seed);

  std::vector<SftExample> examples_;
  int64_t B_, T_;
  int32_t pad_id_;
  std::vector<std::vector<uint32_t>> rows_;  // example indices per row
  EpochOrder order_;
};

}  // namespace strata
