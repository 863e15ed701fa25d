#include "model/checkpoint.h"

#include <filesystem>

namespace strata {

Checkpoint load_checkpoint(const std::string& path) {
  Checkpoint ck;
  bool parsed = false;
  CheckpointFiles f = read_checkpoint_files(path, [&](const std::string& text, const std::string& source) {
    ck.config = Config::from_json_text(text, source);
    parsed = true;
  });
  if (!parsed) ck.config = Config::from_json_text(f.config_json, f.config_source);  // llama2.c: from its header
  ck.weights = std::move(f.weights);
  if (ck.weights.origin.empty()) ck.weights.origin = path;
  ck.format = std::move(f.format);
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
