#include "model/recipe.h"

#include "strata/error.h"

namespace strata {

std::vector<BlockSpec> layer_blocks(const Config& cfg, int64_t layer) {
  const std::string l = "model.layers." + std::to_string(layer);
  if (cfg.recipe == "llama") {
    return {{"rmsnorm", l + ".input_layernorm", "attn", l + ".self_attn"},
            {"rmsnorm", l + ".post_attention_layernorm", "mlp", l + ".mlp"}};
  }
  if (cfg.recipe == "modified") {  // docs/modified-decoder.md
    const std::string attn = cfg.attention == "differential" ? "diff-attn" : "attn";
    return {{"ada-rmsnorm", l + ".input_layernorm", attn, l + ".self_attn", "token-mix", l + ".token_mixing"},
            {"ada-rmsnorm", l + ".post_attention_layernorm", "mlp", l + ".mlp", "se", l + ".se"}};
  }
  fail("unknown layer recipe '", cfg.recipe, "' (known: llama, modified)");
}

std::vector<std::string> recipe_names() { return {"llama", "modified"}; }

}  // namespace strata
