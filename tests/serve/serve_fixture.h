// What the serving tests share: a small SentencePiece tokenizer trained here
// (so no data files are needed) and tiny random models of every family.
#pragma once
#include <memory>
#include <string>

#include "core/rng.h"
#include "strata/model.h"
#include "strata/tokenizer.h"
#include "test_util.h"

namespace strata::test {

inline const std::string& serve_tokenizer_path() {
  static const std::string path = [] {
    const std::string dir = make_temp_dir("serve-tok");
    const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to",
                           "house", "red", "blue", "big", "small", "said", "hello", "world", "why", "not"};
    Rng r(5);
    std::string text;
    for (int line = 0; line < 400; ++line) {
      const int n = 4 + static_cast<int>(r.next() % 9);
      for (int w = 0; w < n; ++w) text += std::string(w ? " " : "") + words[r.next() % 20];
      text += ".\n";
    }
    write_file(dir + "/corpus.txt", text);
    TokenizerTrainOptions o;
    o.inputs = {dir + "/corpus.txt"};
    o.vocab_size = 300;
    o.threads = 1;
    train_tokenizer(o, dir + "/tok.model");
    return dir + "/tok.model";
  }();
  return path;
}

inline std::unique_ptr<Tokenizer> serve_tokenizer() { return Tokenizer::load(serve_tokenizer_path()); }

// A tiny random model of a preset ("tiny", "tiny-samba", "tiny-modified", ...)
// with matrices of `dtype` (F32 or BF16) and a context of `ctx`.
inline std::unique_ptr<Model> serve_model(const std::string& preset, DType dtype, int64_t ctx = 256) {
  Config c = preset_config(preset);
  c.initializer_range = 0.2;  // peaked distributions: greedy and sampled texts differ between prompts
  c.max_position_embeddings = ctx;
  return Model::random(c, 11, dtype);
}

}  // namespace strata::test
