// Model checkpoints on disk:
//  - a Hugging Face directory: config.json + model.safetensors, or shards
//    model-0000k-of-0000N.safetensors with model.safetensors.index.json;
//    tokenizer.model and tokenizer_config.json (add_bos_token) beside them;
//  - a .safetensors file with config.json in the same directory;
//  - a GGUF file (src/io/gguf_checkpoint.cpp: llama.cpp's llama architecture,
//    or strata's own models under architecture "strata");
//  - a llama2.c legacy .bin (7 int32 header; q/k rows are permuted at load from
//    the interleaved RoPE layout to HF's rotate_half layout, so the engine has
//    one RoPE convention).
//
// This layer reads and writes files only: the configuration travels as the
// text of config.json, parsed and checked by the model layer
// (src/model/checkpoint.h), so nothing here depends on what a model is.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "core/weights.h"
#include "io/safetensors.h"

namespace strata {

struct CheckpointFiles {
  std::string config_json;     // the text of config.json (for llama2.c, made from its header)
  std::string config_source;   // the path to name in errors about it
  WeightSet weights;
  std::string format;          // "hf", "gguf" or "llama2c"
  std::string tokenizer_path;  // tokenizer.model (else tokenizer.json) found beside the model, or ""
  bool add_bos = true;         // tokenizer_config.json add_bos_token
};

// `on_config` sees config.json's text (and its path) before any weight is
// read, so a bad config is reported first and nothing large is mapped for it.
using ConfigCheck = std::function<void(const std::string& text, const std::string& source)>;
CheckpointFiles read_checkpoint_files(const std::string& path, const ConfigCheck& on_config = {});
CheckpointFiles read_llama2c(const std::string& path);
CheckpointFiles read_gguf(const std::string& path, const ConfigCheck& on_config = {});

// Writes an HF-layout directory: config.json (the given text) and
// model.safetensors, or, when the tensors exceed `max_shard_bytes` (> 0),
// numbered shards and model.safetensors.index.json. Creates `dir` if needed;
// every file atomic.
void write_hf_files(const std::string& dir, const std::string& config_json, const NamedTensors& tensors,
                    int64_t max_shard_bytes = 0);

// Interleaved (Meta/llama2.c) <-> rotate_half (HF) row permutation of a q or k
// projection [n_heads * head_dim, in], spec §1.4. Returns a new F32 tensor.
Tensor permute_interleaved_to_half(const Tensor& w, int64_t n_heads);
Tensor permute_half_to_interleaved(const Tensor& w, int64_t n_heads);
// The same permutation moving whole rows of any dtype (quantized rows stay as
// stored); errors start with `where`.
Tensor permute_rows_interleaved(const Tensor& w, int64_t n_heads, bool to_half,
                                const std::string& where = "q/k permutation");

}  // namespace strata
