// Module registry: what each kind of module is (its options, its place in a
// layer's names, how to build it). The built-in kinds are listed once in
// registry.cpp; code outside the engine (a test, a plugin) adds its own with
// register_module_type before configs naming it are read. Nothing else in the
// engine knows which modules exist.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/module.h"
#include "model/options.h"

namespace strata {

// Maps an option name (or "kind") to the start of an error message about it,
// e.g. "m/config.json: field 'strata_layers.unit[0][0].window'".
using FieldName = std::function<std::string(const std::string& option)>;

struct ModuleType {
  std::string kind;                  // e.g. "attention"
  std::string name;                  // sub-prefix within its layer (HF style): "self_attn", "mlp", "se"
  std::string summary;               // one line: what it computes
  std::vector<OptionDecl> options;   // declared once, with defaults
  std::unique_ptr<Module> (*make)(const ModuleSpec& spec, const Config& cfg) = nullptr;
  // Checks of the options against the model's shape (e.g. a reduction that
  // must divide hidden_size), naming field(option) in errors. May be null.
  void (*check)(const Options& options, const Config& cfg, const FieldName& field) = nullptr;
  // Other names for this kind, each with some options preset (defaults the
  // config may still override), e.g. "swa" = attention with a window.
  struct Alias {
    std::string name;
    Options presets;
  };
  std::vector<Alias> aliases;
};

// The constructor of module class M for ModuleType::make.
template <class M>
std::unique_ptr<Module> make_as(const ModuleSpec& spec, const Config& cfg) {
  return std::make_unique<M>(spec, cfg);
}

void register_module_type(ModuleType type);  // throws if the kind or an alias is taken
// The type of `kind` (an alias resolves to its kind); throws listing the known kinds.
const ModuleType& module_type(const std::string& kind);
std::vector<std::string> module_kinds();  // registered kinds, then aliases

// The module of `kind` as config.json gives it: a kind (or alias) and a JSON
// object of options (`kind` and the sub-layer keys `norm`/`post` excluded by
// the caller). An unknown kind and unknown, ill-typed or out-of-range options
// are errors starting with field("kind") or field(option); missing options
// take their defaults.
ModuleConf parse_module(const std::string& kind, const nlohmann::json& options, const FieldName& field);
// `kind` with every option at its default (an alias's presets applied).
ModuleConf default_module(const std::string& kind);
// The options worth writing: all of them (so a config stays the same model
// when defaults change), in declaration order.
nlohmann::ordered_json module_options_json(const ModuleConf& m);
// Cross-checks of m's options against cfg (the type's `check`).
void check_module(const ModuleConf& m, const Config& cfg, const FieldName& field);

std::unique_ptr<Module> make_module(const ModuleSpec& spec, const Config& cfg);
// For tests and tools: `kind` with `options` (a JSON object; defaults for the rest) at `layer`.
std::unique_ptr<Module> make_module(const std::string& kind, const Config& cfg, const std::string& prefix,
                                    const nlohmann::json& options = nlohmann::json::object(), int64_t layer = 0);

}  // namespace strata
