// Layer recipes: which norm and mixer each block of a layer uses, and the
// parameter-name prefixes (HF naming). Every block is the residual unit
// x = x + Post(Mixer(Norm(x))), Post optional.
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
  std::string post = {};         // optional module kind inside the branch, e.g. "token-mix"
  std::string post_prefix = {};  // e.g. "model.layers.3.token_mixing"
};

// The blocks of layer `layer` under cfg.recipe; throws for an unknown recipe.
std::vector<BlockSpec> layer_blocks(const Config& cfg, int64_t layer);
std::vector<std::string> recipe_names();

}  // namespace strata
