// Model configuration: the Hugging Face LlamaConfig fields plus strata's layer
// recipe. Parsed and validated once; everything else reads shapes from here.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace strata {

struct Config {
  std::string model_type = "llama";
  std::string architecture = "LlamaForCausalLM";
  std::string recipe = "llama";  // layer recipe name (see src/model/recipe.cpp)

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double rope_scaling_factor = 1.0;  // "linear" rope_scaling: positions divided by this
  bool tie_word_embeddings = false;
  int32_t bos_token_id = 1;
  std::vector<int32_t> eos_token_ids{2};
  bool stop_at_bos = false;  // llama2.c models end a sample when they produce BOS
  double initializer_range = 0.02;
  std::string torch_dtype = "float32";

  // The modified decoder (recipe "modified", model_type
  // "strata_modified_llama"; spec: docs/modified-decoder.md). With
  // differential attention, num_attention_heads / num_key_value_heads /
  // head_dim still describe the baseline Llama attention the layout is
  // derived from.
  std::string attention = "standard";  // "standard" | "differential"
  std::string diff_layout = "paper";   // "paper" (parameter-neutral) | "expanded" (exact conversion)
  bool diff_subln = true;              // per-head RMSNorm of the differential output
  bool diff_out_scale = true;          // scale heads by (1 - lambda_init); false: by 1
  bool diff_lambda_init_zero = false;  // lambda_init buffer initialised to 0 instead of the paper formula
  std::string ctx_mode = "causal";     // context statistics: "causal" prefix mean | "global" sequence mean
  int64_t ada_rank = 64;               // AdaRMSNorm context rank (0 disables the adaptation)
  int64_t tm_kernel = 4;               // token-mixing taps (1..8)
  int64_t se_reduction = 16;           // SE hidden width = hidden_size / se_reduction

  // Throws strata::Error naming `source` and the field when a value is missing,
  // of the wrong type, out of range or unsupported.
  static Config from_json_text(const std::string& text, const std::string& source);
  std::string to_json_text() const;  // HF-compatible config.json
  void validate(const std::string& source) const;
  void validate_modified(const std::string& source) const;

  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int64_t q_dim() const { return num_attention_heads * head_dim; }
};

// A Llama configuration with the llama2.c / Llama-2 conventions (eps 1e-5,
// theta 10000, bos 1, eos 2, head_dim = hidden / heads).
Config llama_config(int64_t vocab, int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv_heads,
                    int64_t max_pos, bool tied);

// Built-in configurations for `strata init` / `strata bench --preset`.
Config preset_config(const std::string& name);  // throws for an unknown name
std::vector<std::string> preset_names();

}  // namespace strata
