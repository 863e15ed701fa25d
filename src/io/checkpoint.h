// Model checkpoints on disk:
//  - a Hugging Face directory: config.json + model.safetensors, or shards
//    model-0000k-of-0000N.safetensors with model.safetensors.index.json;
//    tokenizer.model and tokenizer_config.json (add_bos_token) beside them;
//  - a .safetensors file with config.json in the same directory;
//  - a llama2.c legacy .bin (7 int32 header; q/k rows are permuted at load from
//    the interleaved RoPE layout to HF's rotate_half layout, so the engine has
//    one RoPE convention).
#pragma once
#include <cstdint>
#include <string>

#include "core/weights.h"
#include "io/safetensors.h"
#include "strata/config.h"

namespace strata {

struct Checkpoint {
  Config config;
  WeightSet weights;
  std::string format;          // "hf" or "llama2c"
  std::string tokenizer_path;  // tokenizer.model found beside the model, or ""
  bool add_bos = true;         // tokenizer_config.json add_bos_token
};

Checkpoint load_checkpoint(const std::string& path);
Checkpoint read_llama2c(const std::string& path);

// Writes an HF-layout directory: config.json and model.safetensors, or, when
// the tensors exceed `max_shard_bytes` (> 0), numbered shards and
// model.safetensors.index.json. Creates `dir` if needed; every file atomic.
void save_hf_checkpoint(const std::string& dir, const Config& config, const NamedTensors& tensors,
                        int64_t max_shard_bytes = 0);

// Interleaved (Meta/llama2.c) <-> rotate_half (HF) row permutation of a q or k
// projection [n_heads * head_dim, in], spec §1.4. Returns a new F32 tensor.
Tensor permute_interleaved_to_half(const Tensor& w, int64_t n_heads);
Tensor permute_half_to_interleaved(const Tensor& w, int64_t n_heads);

}  // namespace strata
