// A block of the stack: the residual unit x = x + Mixer(Norm(x)).
#pragma once
#include <memory>

#include "model/module.h"

namespace strata {

struct Block {
  std::unique_ptr<Module> norm, mixer;
};

}  // namespace strata
