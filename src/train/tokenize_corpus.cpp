#include "train/tokenize_corpus.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "strata/error.h"
#include "strata/tokenizer.h"
#include "train/token_data.h"

namespace fs = std::filesystem;

namespace strata {

namespace {

bool is_blank(const std::string& line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\f' && c != '\v') return false;
  return true;
}

// The shards of one split: a new shard starts every `max_tokens` tokens
// (documents may span shards: the split is one token stream).
class ShardSet {
 public:
  ShardSet(std::string dir, std::string split, uint32_t dtype, int64_t max_tokens)
      : dir_(std::move(dir)), split_(std::move(split)), dtype_(dtype), max_(max_tokens) {}

  void append(const int32_t* ids, int64_t n) {
    while (n > 0) {
      if (!cur_) {
        char name[64];
        std::snprintf(name, sizeof(name), "%s-%05zu.bin", split_.c_str(), done_.size());
        cur_ = std::make_unique<TokenShardWriter>((fs::path(dir_) / name).string(), dtype_);
        cur_name_ = name;
      }
      const int64_t take = std::min(n, max_ - cur_->count());
      cur_->append(ids, take);
      ids += take;
      n -= take;
      tokens_ += take;
      if (cur_->count() == max_) close();
    }
  }
  void close() {
    if (!cur_) return;
    cur_->commit();
    done_.push_back({cur_name_, cur_->count()});
    cur_.reset();
  }
  int64_t tokens() const { return tokens_; }
  const std::vector<std::pair<std::string, int64_t>>& done() const { return done_; }

 private:
  std::string dir_, split_;
  uint32_t dtype_;
  int64_t max_, tokens_ = 0;
  std::unique_ptr<TokenShardWriter> cur_;
  std::string cur_name_;
  std::vector<std::pair<std::string, int64_t>> done_;
};

// Encodes the documents on all threads; results in input order.
std::vector<std::vector<int32_t>> encode_all(const Tokenizer& tok, const std::vector<std::string>& docs) {
  std::vector<std::vector<int32_t>> out(docs.size());
  std::string err;
  bool failed = false;
  const int64_t n = static_cast<int64_t>(docs.size());
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < n; ++i) {
    try {
      out[i] = tok.encode(docs[i], false);
    } catch (const std::exception& e) {  // exceptions must not leave an OpenMP region
#pragma omp critical(strata_tokenize_error)
      if (!failed) {
        failed = true;
        err = e.what();
      }
    }
  }
  if (failed) throw Error(err);
  return out;
}

}  // namespace

DocumentReader::DocumentReader(const std::string& path) : path_(path), f_(path, std::ios::binary) {
  if (!f_) fail(path, ": cannot open");
}

bool DocumentReader::next(std::string* doc) {
  doc->clear();
  bool have = false;
  while (std::getline(f_, line_)) {
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (is_blank(line_)) {
      if (have) return true;
      continue;
    }
    if (have) doc->push_back('\n');
    doc->append(line_);
    have = true;
  }
  if (f_.bad()) fail(path_, ": read error");
  return have;
}

TokenizeCorpusResult tokenize_corpus(const TokenizeCorpusOptions& opts, const TokenizeProgress& progress) {
  if (opts.inputs.empty()) fail("tokenize: no input files");
  if (opts.out_dir.empty()) fail("tokenize: no output directory");
  if (!(opts.val_fraction >= 0.0 && opts.val_fraction < 1.0))
    fail("tokenize: --val-fraction must be in [0, 1), got ", opts.val_fraction);
  if (opts.shard_tokens < 1) fail("tokenize: --shard-tokens must be positive, got ", opts.shard_tokens);
  for (const auto& in : opts.inputs) {
    std::error_code ec;
    if (!fs::is_regular_file(in, ec)) fail(in, ": input file not found");
  }
  const auto tok = Tokenizer::load(opts.tokenizer);
  const int32_t eos = tok->eos_id();
  if (eos < 0) fail(opts.tokenizer, ": the tokenizer has no EOS id (needed between documents)");

  // The val split is the last documents by count, so count them first (a cheap read-only pass).
  int64_t n_docs = -1, n_val = 0;
  if (opts.val_fraction > 0) {
    n_docs = 0;
    std::string doc;
    for (const auto& in : opts.inputs) {
      DocumentReader r(in);
      while (r.next(&doc)) ++n_docs;
    }
    if (n_docs == 0) fail("tokenize: the input files hold no documents");
    n_val = std::max<int64_t>(1, std::llround(opts.val_fraction * static_cast<double>(n_docs)));
    if (n_val >= n_docs)
      fail("tokenize: --val-fraction ", opts.val_fraction, " of ", n_docs, " documents leaves none for training");
  }
  const int64_t n_train = n_docs < 0 ? INT64_MAX : n_docs - n_val;

  std::error_code ec;
  fs::create_directories(opts.out_dir, ec);
  if (!fs::is_directory(opts.out_dir)) fail(opts.out_dir, ": cannot create the output directory");
  // Without meta.json the directory reads as incomplete until this run finishes.
  fs::remove(fs::path(opts.out_dir) / "meta.json", ec);

  const uint32_t dtype = tok->vocab_size() <= 65536 ? 2 : 4;
  ShardSet train(opts.out_dir, "train", dtype, opts.shard_tokens);
  ShardSet val(opts.out_dir, "val", dtype, opts.shard_tokens);
  int64_t done = 0;
  std::vector<std::string> docs;
  for (const auto& in : opts.inputs) {
    DocumentReader reader(in);
    bool more = true;
    while (more) {
      docs.clear();
      int64_t bytes = 0;
      std::string doc;
      while (bytes < opts.block_bytes && (more = reader.next(&doc))) {
        bytes += static_cast<int64_t>(doc.size());
        docs.push_back(std::move(doc));
      }
      if (docs.empty()) break;
      const auto enc = encode_all(*tok, docs);
      for (const auto& ids : enc) {
        ShardSet& s = done < n_train ? train : val;
        s.append(ids.data(), static_cast<int64_t>(ids.size()));
        s.append(&eos, 1);
        ++done;
      }
      if (progress) progress(done, train.tokens() + val.tokens());
    }
  }
  if (done == 0) fail("tokenize: the input files hold no documents");
  train.close();
  val.close();

  TokenizeCorpusResult res;
  res.train_documents = std::min(done, n_train);
  res.val_documents = done - res.train_documents;
  res.train_tokens = train.tokens();
  res.val_tokens = val.tokens();
  nlohmann::json shards = nlohmann::json::array();
  for (const auto* s : {&train, &val}) {
    for (const auto& [name, count] : s->done()) {
      shards.push_back({{"file", name}, {"split", s == &train ? "train" : "val"}, {"tokens", count}});
      res.shards.push_back(name);
    }
  }
  const nlohmann::json meta{{"format", "strata-tokens"},
                            {"version", 1},
                            {"tokenizer", fs::absolute(opts.tokenizer).string()},
                            {"vocab_size", tok->vocab_size()},
                            {"eos_id", eos},
                            {"bos_id", tok->bos_id()},
                            {"dtype", dtype},
                            {"train_tokens", res.train_tokens},
                            {"val_tokens", res.val_tokens},
                            {"train_documents", res.train_documents},
                            {"val_documents", res.val_documents},
                            {"shards", shards}};
  write_file_atomic((fs::path(opts.out_dir) / "meta.json").string(), meta.dump(2) + "\n");

  // Shards of an earlier, larger run in the same directory are no longer listed: remove them.
  const std::set<std::string> keep(res.shards.begin(), res.shards.end());
  static const std::regex kShardName("(train|val)-[0-9]+\\.bin");
  for (const auto& e : fs::directory_iterator(opts.out_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, kShardName) && !keep.count(name)) fs::remove(e.path(), ec);
  }
  return res;
}

}  // namespace strata
