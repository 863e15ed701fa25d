// strata train-tokenizer: SentencePiece BPE with byte fallback.
#include "cli/common.h"

namespace strata::cli {

void register_train_tokenizer(CLI::App& app) {
  auto o = std::make_shared<TokenizerTrainOptions>();
  auto out = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("train-tokenizer", "train a SentencePiece tokenizer");
  cmd->add_option("--input", o->inputs, "text files")->required();
  cmd->add_option("--vocab", o->vocab_size, "vocabulary size")->check(between(16, 1 << 20));
  cmd->add_option("--max-sentences", o->max_sentences, "sample at most this many lines (0: all)");
  cmd->add_option("-o,--out", *out, "output .model file")->required();
  cmd->callback([o, out] { train_tokenizer(*o, *out); });
}

}  // namespace strata::cli
