// The modules of a config, built once from its layer pattern, and the one
// list of declared parameters that loading, random init, conversion, `strata
// info`, the optimizer and checkpoint writing all walk.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/layers.h"
#include "model/module.h"
#include "strata/model.h"

namespace strata {

// A block of the stack: the residual unit x = x + Post(Mixer(Norm(x))). The
// post-module is optional and sits inside the branch (token mixing after
// attention, an SE gate after the MLP), so an identity-initialised one leaves
// the block exactly as it was.
struct Block {
  std::unique_ptr<Module> norm, mixer, post;  // post may be null
  Module* slot(int i) const { return i == 0 ? norm.get() : i == 1 ? mixer.get() : post.get(); }
  static constexpr int kSlots = 3;
};

// A declared parameter with the kind of the module that declares it
// ("embed_tokens", "final_norm" and "lm_head" for the model's own).
struct DeclaredParam {
  std::string group;
  ParamDecl decl;
};

inline constexpr const char* kEmbedName = "model.embed_tokens.weight";
inline constexpr const char* kHeadName = "lm_head.weight";

struct Stack {
  std::vector<std::unique_ptr<Block>> blocks;
  std::unique_ptr<Module> final_norm;
  std::vector<DeclaredParam> params;  // every parameter and buffer, in load/save order
  bool causal = true;                 // no module looks at later positions
};

// Validates cfg and builds its modules (nothing allocated for weights).
Stack build_stack(const Config& cfg);
std::vector<DeclaredParam> declared_params(const Config& cfg);
// Parameter `d` (number `index` of its model's declaration list) drawn from
// its declared init, deterministic for (seed, index) whatever the thread
// count; matrices in `dtype`, everything else F32 (Model::random).
Tensor random_param(const ParamDecl& d, size_t index, uint64_t seed, DType dtype, float default_std);
ParamCounts count_params(const std::vector<DeclaredParam>& params);
ParamCounts count_params(const Config& cfg);

// The decode state one sequence needs, grouped by module kind and size in
// first-appearance order: `modules` modules of `kind` hold `each` apiece.
struct StateUse {
  std::string kind;
  int64_t modules = 0;
  StateSize each;
};
std::vector<StateUse> state_use(const Stack& stack);

}  // namespace strata
