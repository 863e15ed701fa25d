#include "model/checkpoint.h"

#include <filesystem>

#include "model/import_samba.h"

namespace strata {

Checkpoint load_checkpoint(const std::string& path) {
  refuse_torch_pickle(path);
  Checkpoint ck;
  bool parsed = false, hf_mamba = false;
  CheckpointFiles f = read_checkpoint_files(path, [&](const std::string& text, const std::string& source) {
    // A Hugging Face Mamba directory is read as it is, under strata's names.
    hf_mamba = is_hf_mamba_config(text);
    ck.config = hf_mamba ? hf_mamba_config(text, source) : Config::from_json_text(text, source);
    parsed = true;
  });
  if (!parsed) ck.config = Config::from_json_text(f.config_json, f.config_source);  // llama2.c: from its header
  if (f.weights.origin.empty()) f.weights.origin = path;
  ck.weights = hf_mamba ? hf_mamba_to_strata(ck.config, f.weights) : std::move(f.weights);
  ck.format = hf_mamba ? "hf-mamba" : std::move(f.format);
  ck.tokenizer_path = std::move(f.tokenizer_path);
  ck.add_bos = f.add_bos;
  return ck;
}

void save_hf_checkpoint(const std::string& dir, const Config& config, const NamedTensors& tensors,
                        int64_t max_shard_bytes) {
  config.validate((std::filesystem::path(dir) / "config.json").string());
  write_hf_files(dir, config.to_json_text(), tensors, max_shard_bytes);
}

}  // namespace strata
