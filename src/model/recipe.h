// Layer recipes: which norm and mixer each block of a layer uses, and the
// parameter-name prefixes (HF naming). Every block is the residual unit
// x = x + Mixer(Norm(x)).
#pragma once
#include <string>
#include <vector>

#include "strata/config.h"

namespace strata {

struct BlockSpec {
  std::string norm;          // module kind, e.g. "rmsnorm"
  std::string norm_prefix;   // e.g. "model.layers.3.input_layernorm"
  std::string mixer;         // module kind, e.g. "attn"
  std::string mixer_prefix;  // e.g. "model.layers.3.self_attn"
};

// The blocks of layer `layer` under cfg.recipe; throws for an unknown recipe.
std::vector<BlockSpec> layer_blocks(const Config& cfg, int64_t layer);
std::vector<std::string> recipe_names();

}  // namespace strata
