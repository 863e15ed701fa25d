#include "model/registry.h"

#include <algorithm>
#include <deque>
#include <mutex>

#include "strata/error.h"

namespace strata {

// The built-in modules: one line each; each is defined in src/model/modules/.
#define STRATA_BUILTIN_MODULES(X) \
  X(rmsnorm)                      \
  X(attention)                    \
  X(mlp)                          \
  X(diff_attention)               \
  X(ada_rmsnorm)                  \
  X(token_mix)                    \
  X(se)                           \
  X(mamba)                        \
  X(gla)                          \
  X(retnet)                       \
  X(bidir_attention)

#define STRATA_DECLARE_MODULE(name) ModuleType name##_module();
STRATA_BUILTIN_MODULES(STRATA_DECLARE_MODULE)
#undef STRATA_DECLARE_MODULE

namespace {

struct Registry {
  std::deque<ModuleType> types;  // a deque: references stay valid as types are added
  std::mutex mu;
};

void add(Registry& r, ModuleType t) {
  auto taken = [&](const std::string& name) {
    for (const ModuleType& e : r.types) {
      if (e.kind == name) return true;
      for (const auto& a : e.aliases)
        if (a.name == name) return true;
    }
    return false;
  };
  if (t.kind.empty() || !t.make) fail("register_module_type: a module type needs a kind and a constructor");
  if (taken(t.kind)) fail("register_module_type: module kind '", t.kind, "' is already registered");
  for (const auto& a : t.aliases)
    if (taken(a.name) || a.name == t.kind) fail("register_module_type: module name '", a.name, "' is already taken");
  r.types.push_back(std::move(t));
}

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry();
#define STRATA_ADD_MODULE(name) add(*reg, name##_module());
    STRATA_BUILTIN_MODULES(STRATA_ADD_MODULE)
#undef STRATA_ADD_MODULE
    return reg;
  }();
  return *r;
}

// The type and the alias presets of `kind`, or null.
const ModuleType* find_type(const std::string& kind, const Options** presets) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const ModuleType& t : r.types) {
    if (t.kind == kind) return &t;
    for (const auto& a : t.aliases)
      if (a.name == kind) {
        if (presets) *presets = &a.presets;
        return &t;
      }
  }
  return nullptr;
}

const ModuleType& type_or_fail(const std::string& kind, const Options** presets, const std::string& where) {
  if (const ModuleType* t = find_type(kind, presets)) return *t;
  std::string known;
  for (const std::string& k : module_kinds()) known += (known.empty() ? "" : ", ") + k;
  fail(where, where.empty() ? "" : ": ", "unknown module kind '", kind, "' (known: ", known, ")");
}

}  // namespace

void register_module_type(ModuleType type) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  add(r, std::move(type));
}

const ModuleType& module_type(const std::string& kind) { return type_or_fail(kind, nullptr, ""); }

std::vector<std::string> module_kinds() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> kinds, aliases;
  for (const ModuleType& t : r.types) {
    kinds.push_back(t.kind);
    for (const auto& a : t.aliases) aliases.push_back(a.name);
  }
  kinds.insert(kinds.end(), aliases.begin(), aliases.end());
  return kinds;
}

ModuleConf parse_module(const std::string& kind, const nlohmann::json& options, const FieldName& field) {
  const Options* presets = nullptr;
  const ModuleType& t = type_or_fail(kind, &presets, field("kind"));
  if (!options.is_object()) fail(field("kind"), ": expected an object of options, got ", options.type_name());
  ModuleConf m{t.kind, {}};
  for (const OptionDecl& d : t.options) {
    auto it = options.find(d.name);
    if (it != options.end() && !it->is_null()) {
      m.options[d.name] = parse_option(d, *it, field(d.name));
    } else if (presets && presets->count(d.name)) {
      m.options[d.name] = presets->at(d.name);
    } else {
      m.options[d.name] = d.def;
    }
  }
  for (auto it = options.begin(); it != options.end(); ++it) {
    const bool known = std::any_of(t.options.begin(), t.options.end(), [&](const OptionDecl& d) { return d.name == it.key(); });
    if (!known) {
      std::string names;
      for (const OptionDecl& d : t.options) names += (names.empty() ? "" : ", ") + d.name;
      fail(field(it.key()), ": '", t.kind, "' has no option '", it.key(), "' (its options: ",
           names.empty() ? "none" : names, ")");
    }
  }
  return m;
}

ModuleConf default_module(const std::string& kind) {
  return parse_module(kind, nlohmann::json::object(), [&](const std::string& o) { return cat("module '", kind, "' ", o); });
}

nlohmann::ordered_json module_options_json(const ModuleConf& m) {
  const ModuleType& t = module_type(m.kind);
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const OptionDecl& d : t.options)
    if (auto it = m.options.find(d.name); it != m.options.end()) j[d.name] = option_json(it->second);
  return j;
}

void check_module(const ModuleConf& m, const Config& cfg, const FieldName& field) {
  const ModuleType& t = module_type(m.kind);
  for (const OptionDecl& d : t.options) {
    auto it = m.options.find(d.name);
    if (it == m.options.end()) fail(field(d.name), ": is not set");
    check_option(d, it->second, field(d.name));
  }
  for (const auto& [name, v] : m.options)
    if (std::none_of(t.options.begin(), t.options.end(), [&](const OptionDecl& d) { return d.name == name; }))
      fail(field(name), ": '", t.kind, "' has no option '", name, "'");
  if (t.check) t.check(m.options, cfg, field);
}

std::unique_ptr<Module> make_module(const ModuleSpec& spec, const Config& cfg) {
  const ModuleType& t = module_type(spec.kind);
  ModuleSpec s = spec;
  s.kind = t.kind;  // an alias builds its kind
  return t.make(s, cfg);
}

std::unique_ptr<Module> make_module(const std::string& kind, const Config& cfg, const std::string& prefix,
                                    const nlohmann::json& options, int64_t layer) {
  const FieldName field = [&](const std::string& o) { return cat(prefix, ": option '", o, "'"); };
  ModuleConf m = parse_module(kind, options, field);
  check_module(m, cfg, field);
  return make_module(ModuleSpec{m.kind, prefix, layer, m.options}, cfg);
}

}  // namespace strata
