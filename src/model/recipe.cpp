#include "model/recipe.h"

#include "strata/error.h"

namespace strata {

std::vector<BlockSpec> layer_blocks(const Config& cfg, int64_t layer) {
  const std::string l = "model.layers." + std::to_string(layer);
  if (cfg.recipe == "llama") {
    return {{"rmsnorm", l + ".input_layernorm", "attn", l + ".self_attn"},
            {"rmsnorm", l + ".post_attention_layernorm", "mlp", l + ".mlp"}};
  }
  fail("unknown layer recipe '", cfg.recipe, "' (known: llama)");
}

std::vector<std::string> recipe_names() { return {"llama"}; }

}  // namespace strata
