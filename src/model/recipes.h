// Recipes: names for layer patterns. `llama` is [attention, mlp] per layer;
// `modified` is the modified TinyLlama decoder (docs/modified-decoder.md):
// [ada-rmsnorm > attention|diff-attn > token-mix, ada-rmsnorm > mlp > se].
// A config names a recipe (strata_recipe) or spells its pattern out
// (strata_layers); the model only ever sees the pattern.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "strata/config.h"

namespace strata {

// The modified recipe's parameters, and the top-level config.json fields an
// earlier config.json spelled them with (attention, diff_attn.*, ctx_mode,
// ada_rank, tm_kernel, se_reduction).
struct ModifiedRecipe {
  std::string attention = "differential";  // "differential" (diff-attn) | "standard" (attention)
  std::string diff_layout = "paper";       // "paper" (parameter-neutral) | "expanded" (exact conversion)
  bool diff_subln = true;                  // per-head RMSNorm of the differential output
  bool diff_out_scale = true;              // scale heads by (1 - lambda_init); false: by 1
  bool diff_lambda_init_zero = false;      // lambda_init buffer 0 instead of the paper formula
  std::string ctx_mode = "causal";         // context statistics: "causal" prefix mean | "global" sequence mean
  int64_t ada_rank = 64;                   // AdaRMSNorm context rank (0 disables the adaptation)
  int64_t tm_kernel = 4;                   // token-mixing taps (1..8)
  int64_t se_reduction = 16;               // SE hidden width = hidden_size / se_reduction
};

std::vector<LayerConf> llama_unit();
std::vector<LayerConf> modified_unit(const ModifiedRecipe& r);
// The unit of a Samba-family recipe (samba, mamba, mamba-mlp, mamba-swa-mlp,
// llama-swa) with default options; nullopt for other names.
std::optional<std::vector<LayerConf>> samba_family_unit(const std::string& name);

std::vector<std::string> recipe_names();
// The unit of recipe `name` for a config.json whose top level is `top`
// (the modified recipe reads its parameters from there). Errors name source
// and the field.
std::vector<LayerConf> recipe_unit(const std::string& name, const nlohmann::json& top, const std::string& source,
                                   const Config& shape);
// The top-level fields recipe `name` reads (must not appear beside strata_layers).
std::vector<std::string> recipe_fields(const std::string& name);
// The unit a recipe yields with its default parameters (nullopt: not a recipe).
std::optional<std::vector<LayerConf>> recipe_default_unit(const std::string& name);

// `cfg` with its layers replaced: `unit` repeated over num_hidden_layers, no
// overrides, recipe label `recipe`, model_type and architecture to match.
void set_layers(Config& cfg, const std::string& recipe, std::vector<LayerConf> unit);
Config with_llama_layers(Config cfg);
Config with_modified_layers(Config cfg, const ModifiedRecipe& r);
// The modified recipe's parameters of a config built from it (throws otherwise).
ModifiedRecipe modified_recipe_of(const Config& cfg);
// model_type and architecture a config.json must carry for these layers.
std::pair<std::string, std::string> model_type_for(const Config& cfg);

}  // namespace strata
