// strata tokenize: text files -> a data directory of token shards for `strata train`.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "cli/common.h"
#include "train/tokenize_corpus.h"

namespace strata::cli {

void register_tokenize(CLI::App& app) {
  struct Opts {
    TokenizeCorpusOptions c;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("tokenize", "pack text documents (EOS between them) into token shards");
  cmd->add_option("--tokenizer", o->c.tokenizer, "SentencePiece model")->required();
  cmd->add_option("--input", o->c.inputs, "text files; documents are separated by blank lines")->required();
  cmd->add_option("-o,--out", o->c.out_dir, "output data directory")->required();
  cmd->add_option("--val-fraction", o->c.val_fraction, "fraction of documents (the last ones) for validation");
  cmd->add_option("--shard-tokens", o->c.shard_tokens, "tokens per shard at most (default 100M)");
  add_threads_option(cmd, &o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    const auto t0 = std::chrono::steady_clock::now();
    auto secs = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    const TokenizeCorpusResult r = tokenize_corpus(o->c, [&](int64_t docs, int64_t tokens) {
      std::fprintf(stderr, "\rtokenize: %lld documents  %lld tokens  %.0f tok/s   ", (long long)docs,
                   (long long)tokens, tokens / std::max(secs(), 1e-9));
    });
    std::fprintf(stderr, "\n");
    std::printf("%s: %lld train tokens (%lld documents), %lld val tokens (%lld documents), %zu shards, %.1f s\n",
                o->c.out_dir.c_str(), (long long)r.train_tokens, (long long)r.train_documents,
                (long long)r.val_tokens, (long long)r.val_documents, r.shards.size(), secs());
  });
}

}  // namespace strata::cli
