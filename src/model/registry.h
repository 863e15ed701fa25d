// Module registry: recipe names -> constructors. Adding a mixer is one file in
// src/model/ and one line in registry.cpp.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/module.h"

namespace strata {

// `prefix` is the module's parameter-name prefix, e.g. "model.layers.3.self_attn".
std::unique_ptr<Module> make_module(const std::string& kind, const Config& cfg, const std::string& prefix);
std::vector<std::string> module_kinds();

// Constructors, one per module file.
std::unique_ptr<Module> make_rmsnorm(const Config& cfg, const std::string& prefix);
std::unique_ptr<Module> make_attention(const Config& cfg, const std::string& prefix);
std::unique_ptr<Module> make_mlp(const Config& cfg, const std::string& prefix);
std::unique_ptr<Module> make_diff_attention(const Config& cfg, const std::string& prefix);
std::unique_ptr<Module> make_ada_rmsnorm(const Config& cfg, const std::string& prefix);
std::unique_ptr<Module> make_token_mix(const Config& cfg, const std::string& prefix);
std::unique_ptr<Module> make_se(const Config& cfg, const std::string& prefix);

}  // namespace strata
