#include "model/registry.h"

#include <utility>

#include "strata/error.h"

namespace strata {
namespace {

using Factory = std::unique_ptr<Module> (*)(const Config&, const std::string&);

const std::vector<std::pair<std::string, Factory>>& registry() {
  static const std::vector<std::pair<std::string, Factory>> r = {
      {"rmsnorm", make_rmsnorm},
      {"attn", make_attention},
      {"mlp", make_mlp},
      {"diff-attn", make_diff_attention},
      {"ada-rmsnorm", make_ada_rmsnorm},
      {"token-mix", make_token_mix},
      {"se", make_se},
  };
  return r;
}

}  // namespace

std::unique_ptr<Module> make_module(const std::string& kind, const Config& cfg, const std::string& prefix) {
  for (const auto& [name, factory] : registry())
    if (name == kind) return factory(cfg, prefix);
  std::string known;
  for (const auto& [name, factory] : registry()) known += (known.empty() ? "" : ", ") + name;
  fail("unknown module '", kind, "' in recipe '", cfg.recipe, "' (known: ", known, ")");
}

std::vector<std::string> module_kinds() {
  std::vector<std::string> r;
  for (const auto& [name, factory] : registry()) r.push_back(name);
  return r;
}

}  // namespace strata
