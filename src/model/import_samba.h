// Checkpoints of other code bases under strata's names (docs/formats.md has
// the tables):
//  - lit-gpt state dicts (microsoft/Samba and its baselines), saved as
//    .safetensors (scripts/pth_to_safetensors.py turns a .pth into one);
//  - Hugging Face Mamba directories (MambaForCausalLM), which Model::load
//    reads directly.
// Both are pure renamings; lit-gpt's fused attention projection is split into
// q/k/v rows. Tensors keep their dtype and bits, so an imported model gives
// the original's logits exactly.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/weights.h"
#include "strata/config.h"

namespace strata {

struct Imported {
  Config config;
  WeightSet weights;  // strata's names
};

// The lit-gpt config names strata knows, each with the strata preset of the
// same model (the one table of the mapping).
const std::vector<std::pair<std::string, std::string>>& litgpt_configs();

// The config of `name`: a lit-gpt name from litgpt_configs() or any strata
// preset name (tests use the tiny ones). vocab_size is rounded up to a
// multiple of 64, as lit-gpt's padded_vocab_size.
Config litgpt_config(const std::string& name);

// A lit-gpt state dict renamed for `cfg`: every tensor the model declares must
// be there with its shape, and nothing else (a tied lm_head.weight equal to
// transformer.wte.weight is dropped). Errors name the file and the tensor.
WeightSet litgpt_to_strata(const Config& cfg, const WeightSet& litgpt);

// Reads a lit-gpt .safetensors file for config `config_name` (litgpt_config).
Imported import_litgpt(const std::string& path, const std::string& config_name);

// True when config.json's text is a Hugging Face Mamba's (model_type "mamba",
// or architectures MambaForCausalLM without a model_type).
bool is_hf_mamba_config(const std::string& text);
// The strata config (mamba recipe, the Mamba options from the HF fields) of an
// HF Mamba config.json; errors name `source` and the field.
Config hf_mamba_config(const std::string& text, const std::string& source);
// An HF Mamba checkpoint's tensors (backbone.*) renamed for `cfg`.
WeightSet hf_mamba_to_strata(const Config& cfg, const WeightSet& hf);

// Refuses PyTorch pickles (torch.save files: .pth/.pt/.ckpt, or a zip or
// pickle header under any name; a directory holding only pytorch_model.bin)
// with a message pointing at scripts/pth_to_safetensors.py: unpickling can run
// code, and strata reads safetensors only.
void refuse_torch_pickle(const std::string& path);

}  // namespace strata
