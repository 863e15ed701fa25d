// Conversion of a Llama model to the modified decoder (recipe `modified`) with
// identity inits, and the parameter declarations of a config counted without
// allocating anything. Spec and figures: docs/modified-decoder.md.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "model/module.h"
#include "model/recipes.h"
#include "model/stack.h"
#include "strata/config.h"
#include "strata/model.h"

namespace strata {

// What `ctx_mode = global` means for a user, printed by the commands that
// create or run such a model.
inline constexpr const char* kGlobalContextWarning =
    "ctx_mode global leaks future tokens: the output at a position depends on later positions, so this is not a "
    "proper causal language model, and decoding recomputes the whole prefix at every step (no caches)";

struct ModifiedOptions {
  std::string attention = "differential";  // "differential" | "standard"
  std::string diff_layout = "expanded";    // "expanded" (exact) | "paper" (parameter-neutral, approximate)
  std::string ctx_mode = "causal";         // "causal" | "global"
  uint64_t seed = 0;                       // ctx_down, SE fc1 and the lambda vectors
  int64_t ada_rank = ModifiedRecipe().ada_rank;
  int64_t tm_kernel = ModifiedRecipe().tm_kernel;
  int64_t se_reduction = ModifiedRecipe().se_reduction;
};

// The modified config for a Llama config: same shape, the options' modules,
// and for differential attention the conversion settings (no subln, output
// scale 1, lambda_init buffer 0). Throws if the base is not a Llama config or
// an option is invalid.
Config modified_config(const Config& base, const ModifiedOptions& opt);

// The parameters of the modified model converted from `base` (a `llama`
// recipe model), in declaration order, every tensor F32 (base tensors that
// are F32 already are shared, not duplicated). Embeddings, norms,
// MLPs, the final norm and the head are copied; attention is mapped per
// options (expanded: mirrored components, exact; paper: the head mapping of
// docs/modified-decoder.md, approximate); context modules get their identity
// inits. `out_cfg` receives modified_config(base.config(), opt).
NamedTensors convert_to_modified(const Model& base, const ModifiedOptions& opt, Config* out_cfg);

// Paper layout: original q head (and o_proj column block) that fills
// sub-head slot m = 2h + c of diff head h, for H heads in groups of
// n_rep = H / H_kv. Slot 2h + c takes head (2g + c)·n_rep + r with
// g = h / n_rep, r = h % n_rep, so component c keeps the KV head 2g + c it
// used before.
int64_t paper_source_head(int64_t slot, int64_t heads, int64_t kv_heads);

// How far a converted model is from its base on one token sequence: the
// largest |logit difference| over every position and vocabulary entry, and
// KL(base ‖ converted) of the next-token distributions averaged over positions.
struct LogitComparison {
  double max_abs_diff = 0;
  double mean_kl = 0;
  int64_t positions = 0;
};
LogitComparison compare_logits(Model& base, Model& converted, const std::vector<int32_t>& ids);

}  // namespace strata
