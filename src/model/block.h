// A block of the stack: the residual unit x = x + Post(Mixer(Norm(x))). The
// post-module is optional and sits inside the branch (token mixing after
// attention, an SE gate after the MLP), so an identity-initialised one leaves
// the block exactly as it was.
#pragma once
#include <memory>

#include "model/module.h"

namespace strata {

struct Block {
  std::unique_ptr<Module> norm, mixer, post;  // post may be null
  Module* slot(int i) const { return i == 0 ? norm.get() : i == 1 ? mixer.get() : post.get(); }
  static constexpr int kSlots = 3;
};

}  // namespace strata
