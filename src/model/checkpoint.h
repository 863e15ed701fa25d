// A model checkpoint as the model layer sees it: the files of src/io with
// their config.json parsed and checked (docs/formats.md).
#pragma once
#include <cstdint>
#include <string>

#include "core/weights.h"
#include "io/checkpoint.h"
#include "strata/config.h"

namespace strata {

struct Checkpoint {
  Config config;
  WeightSet weights;
  std::string format;          // "hf", "hf-mamba" (a Hugging Face Mamba, renamed), "gguf" or "llama2c"
  std::string tokenizer_path;  // tokenizer.model (else tokenizer.json) found beside the model, or ""
  bool add_bos = true;         // tokenizer_config.json add_bos_token
};

// An HF directory, a .safetensors file (config.json beside it), a GGUF file or a llama2.c .bin.
Checkpoint load_checkpoint(const std::string& path);

// Writes an HF-layout directory (see write_hf_files) after validating the config.
void save_hf_checkpoint(const std::string& dir, const Config& config, const NamedTensors& tensors,
                        int64_t max_shard_bytes = 0);

}  // namespace strata
