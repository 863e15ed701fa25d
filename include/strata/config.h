// Model configuration: the Hugging Face LlamaConfig fields plus what every
// layer is made of (the layer pattern). Parsed and validated once; everything
// else reads shapes from here. config.json keeps the HF fields, so a Llama's
// config.json stays a valid HF LlamaConfig; the layers are `strata_recipe`
// (the name of a pattern) and, when they are not that recipe's own,
// `strata_layers` (docs/formats.md describes the schema).
#pragma once
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace strata {

// One option of a module (declared, with its default, by the module type).
using OptionValue = std::variant<bool, int64_t, double, std::string>;
using Options = std::map<std::string, OptionValue>;

// A module as a config names it: a registered kind and every one of its
// declared options (defaults filled in).
struct ModuleConf {
  std::string kind;
  Options options;
  bool operator==(const ModuleConf&) const = default;
};

// A residual sub-layer x = x + Post(Mixer(Norm(x))); Post is optional.
struct SublayerConf {
  ModuleConf mixer;
  ModuleConf norm;
  std::optional<ModuleConf> post;
  bool operator==(const SublayerConf&) const = default;
};

// A layer: its sub-layers in order (a Llama layer is [attention, mlp]). Its
// modules share the layer's index and name prefix (model.layers.N.).
using LayerConf = std::vector<SublayerConf>;

// The layers of a model: `unit` repeated until num_hidden_layers layers, with
// some layers replaced whole by `overrides` (e.g. "layer 5 uses full attention").
struct LayerPattern {
  std::vector<LayerConf> unit;
  std::map<int64_t, LayerConf> overrides;
  const LayerConf& layer(int64_t l) const;
  bool operator==(const LayerPattern&) const = default;
};

struct Config {
  std::string model_type = "llama";
  std::string architecture = "LlamaForCausalLM";
  std::string recipe = "llama";  // the pattern's name ("custom" for a pattern no recipe yields)
  LayerPattern layers;           // what every layer is made of (src/model/layers.h, docs/formats.md)

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
  // How Model::random draws the weights modules leave to the model
  // (strata_init): "normal" N(0, initializer_range) (HF); "mamba" (Samba's
  // mamba_init: uniform linears, residual outputs / sqrt(sub-layers x layers));
  // "neox" (TinyLlama / GPT-NeoX: N(0, 2/(5d)), residual outputs
  // N(0, 1/(sqrt(d) x layers))). docs/samba.md has the details.
  std::string init_scheme = "normal";
  std::string torch_dtype = "float32";
  // The training recipe a family was published with (strata_training):
  // `strata train` takes these where no flag says otherwise. warmup_fraction:
  // linear warmup over this fraction of the steps (< 0: not set); decay_all:
  // weight decay on every parameter, norms, biases, A_log and D included
  // (Samba's pretrain.py), not only on matrices.
  struct TrainingDefaults {
    double warmup_fraction = -1;
    bool decay_all = false;
    bool operator==(const TrainingDefaults&) const = default;
  } training;

  // Recursive soft prompting (strata_hypernet, docs/hypernet.md): a
  // bidirectional encoder at the model's width writes `soft_tokens` rows that
  // are prepended to the input, sp(c+1) = H(sp(c), tokens of chunk c).
  // soft_tokens 0: no hypernetwork.
  struct Hypernet {
    int64_t soft_tokens = 0;
    int64_t layers = 2;
    int64_t heads = 0;              // 0: max(1, hidden_size / 128)
    int64_t intermediate_size = 0;  // 0: 1.5 x hidden_size
    double rope_theta = 10000.0;
    int64_t chunk = 16;             // answer tokens per chunk
    bool operator==(const Hypernet&) const = default;
    int64_t heads_for(int64_t hidden) const { return heads > 0 ? heads : std::max<int64_t>(1, hidden / 128); }
    int64_t ffn_for(int64_t hidden) const { return intermediate_size > 0 ? intermediate_size : hidden * 3 / 2; }
  } hypernet;
  bool has_hypernet() const { return hypernet.soft_tokens > 0; }

  // Throws strata::Error naming `source` and the field when a value is
  // missing, of the wrong type, out of range, unknown or unsupported.
  static Config from_json_text(const std::string& text, const std::string& source);
  std::string to_json_text() const;  // HF-compatible config.json
  void validate(const std::string& source) const;

  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int64_t q_dim() const { return num_attention_heads * head_dim; }
  // True when every layer is a plain Llama layer (what HF's LlamaForCausalLM runs).
  bool is_llama() const;
};

// A Llama configuration with the llama2.c / Llama-2 conventions (eps 1e-5,
// theta 10000, bos 1, eos 2, head_dim = hidden / heads).
Config llama_config(int64_t vocab, int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv_heads,
                    int64_t max_pos, bool tied);

// Built-in configurations for `strata init` / `strata bench --preset`.
Config preset_config(const std::string& name);  // throws for an unknown name
std::vector<std::string> preset_names();

}  // namespace strata
