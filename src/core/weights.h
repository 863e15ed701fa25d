// A named set of tensors as read from checkpoint files, with the file each
// came from (for error messages).
#pragma once
#include <map>
#include <string>

#include "strata/tensor.h"

namespace strata {

struct WeightSet {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> source;  // tensor name -> file path
  std::string origin;                          // the checkpoint as a whole, for errors about missing tensors

  const Tensor* find(const std::string& name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second;
  }
  std::string source_of(const std::string& name) const {
    auto it = source.find(name);
    return it == source.end() ? std::string("<memory>") : it->second;
  }
  void add(const std::string& name, Tensor t, const std::string& file) {
    tensors[name] = std::move(t);
    source[name] = file;
  }
};

}  // namespace strata
