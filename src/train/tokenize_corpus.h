// `strata tokenize`: text files -> a data directory of token shards (docs/formats.md).
#pragma once
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace strata {

struct TokenizeCorpusOptions {
  std::string tokenizer;            // SentencePiece model
  std::vector<std::string> inputs;  // text files
  std::string out_dir;
  double val_fraction = 0.0;          // the last fraction of documents (by count) go to val
  int64_t shard_tokens = 100000000;   // tokens per shard at most
  int64_t block_bytes = int64_t{64} << 20;  // text read and encoded at a time (bounds memory)
};

struct TokenizeCorpusResult {
  int64_t train_documents = 0, val_documents = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  std::vector<std::string> shards;  // file names, in order
};

// Reports (documents, tokens) done so far after each block.
using TokenizeProgress = std::function<void(int64_t documents, int64_t tokens)>;

// Documents: each input file is a stream of documents separated by one or more
// blank lines (empty or whitespace only); a document never spans two files. A
// document's text is its lines joined with "\n" (a trailing "\r" of each line is
// dropped). Each document is encoded without BOS and followed by EOS. Encoding is
// spread over the OpenMP threads in blocks of about block_bytes of text, in order.
// Shards are written atomically and meta.json last (an older meta.json is removed
// first, stale shards of an earlier run afterwards).
TokenizeCorpusResult tokenize_corpus(const TokenizeCorpusOptions& opts, const TokenizeProgress& progress = {});

// Splits a text file into documents as above, reading one line at a time.
class DocumentReader {
 public:
  explicit DocumentReader(const std::string& path);
  // The next document; false at the end of the file.
  bool next(std::string* doc);

 private:
  std::string path_;
  std::ifstream f_;
  std::string line_;
};

}  // namespace strata
