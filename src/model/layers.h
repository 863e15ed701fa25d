// The layer pattern of a config: the `strata_layers` schema read and written,
// and every layer expanded into the module specs (kind, name prefix, layer
// index, options) that the model, random init, conversion, `strata info` and
// the optimizer all walk (docs/formats.md has the schema).
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/module.h"
#include "strata/config.h"

namespace strata {

// One residual block x = x + Post(Mixer(Norm(x))) of a built model.
struct BlockSpec {
  ModuleSpec norm, mixer;
  std::optional<ModuleSpec> post;
};

// The blocks of layer `layer`, with HF-style names: the first sub-layer's norm
// is input_layernorm, the second's post_attention_layernorm (then norm_2,
// norm_3, ...); mixers and posts take their type's name (self_attn, mlp,
// token_mixing, se), suffixed _S when a layer uses one twice.
std::vector<BlockSpec> layer_blocks(const Config& cfg, int64_t layer);

// The final norm of every model (model.norm).
ModuleSpec final_norm_spec(const Config& cfg);

// A sub-layer built in code: `kind` with options, norm rmsnorm unless given,
// an optional post module. Options are JSON objects; defaults fill the rest.
SublayerConf sublayer(const std::string& kind, const nlohmann::json& options = nlohmann::json::object());
SublayerConf with_norm(SublayerConf s, const std::string& kind, const nlohmann::json& options = nlohmann::json::object());
SublayerConf with_post(SublayerConf s, const std::string& kind, const nlohmann::json& options = nlohmann::json::object());

// `strata_layers` as config.json gives it. *num_layers holds the config's
// num_hidden_layers (0 when absent) and receives the layer count; errors
// start with "<source>: field 'strata_layers...'".
LayerPattern parse_layer_pattern(const nlohmann::json& j, const std::string& source, int64_t* num_layers);
nlohmann::ordered_json layer_pattern_json(const LayerPattern& p, int64_t num_layers);

// Every module kind and option known and valid for this config's shape, the
// unit non-empty, num_hidden_layers a multiple of it, overrides in range.
void check_layer_pattern(const Config& cfg, const std::string& source);

// Options of every module of `kind` in the pattern (unit and overrides) set
// to `value` (for code that builds configs, e.g. tests and conversions).
void set_module_option(LayerPattern& p, const std::string& kind, const std::string& option, const OptionValue& value);

// One-line description of a layer: "attention(window=0) > mlp(...)".
std::string describe_layer(const LayerConf& layer);

}  // namespace strata
