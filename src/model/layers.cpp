#include "model/layers.h"

#include <cctype>
#include <set>

#include "model/registry.h"
#include "strata/error.h"

namespace strata {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

constexpr const char* kField = "strata_layers";

// Error prefixes "<source>: field '<path>'" for a path and its options.
FieldName fields_at(const std::string& source, const std::string& path) {
  return [source, path](const std::string& option) { return cat(source, ": field '", path, ".", option, "'"); };
}

[[noreturn]] void field_error(const std::string& source, const std::string& path, const std::string& what) {
  fail(source, ": field '", path, "': ", what);
}

// A module given as "kind" or {"kind": ..., options...}; `skip` keys belong to the sub-layer.
ModuleConf parse_module_json(const json& j, const std::string& source, const std::string& path,
                             const std::set<std::string>& skip = {}) {
  if (j.is_string()) return parse_module(j.get<std::string>(), json::object(), fields_at(source, path));
  if (!j.is_object()) field_error(source, path, cat("expected a module kind or an object with \"kind\", got ", j.type_name()));
  auto k = j.find("kind");
  if (k == j.end() || !k->is_string()) field_error(source, path + ".kind", "is missing or not a string");
  json options = json::object();
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "kind" && !skip.count(it.key())) options[it.key()] = *it;
  return parse_module(k->get<std::string>(), options, fields_at(source, path));
}

SublayerConf parse_sublayer(const json& j, const std::string& source, const std::string& path) {
  SublayerConf s;
  s.mixer = parse_module_json(j, source, path, {"norm", "post"});
  s.norm = default_module("rmsnorm");
  if (j.is_object()) {
    if (auto n = j.find("norm"); n != j.end() && !n->is_null()) s.norm = parse_module_json(*n, source, path + ".norm");
    if (auto p = j.find("post"); p != j.end() && !p->is_null()) s.post = parse_module_json(*p, source, path + ".post");
  }
  return s;
}

LayerConf parse_layer(const json& j, const std::string& source, const std::string& path) {
  LayerConf l;
  if (!j.is_array()) {
    l.push_back(parse_sublayer(j, source, path));
    return l;
  }
  if (j.empty()) field_error(source, path, "a layer needs at least one sub-layer");
  for (size_t i = 0; i < j.size(); ++i) l.push_back(parse_sublayer(j[i], source, cat(path, "[", i, "]")));
  return l;
}

// Applies an override object to sub-layer `s`: with "kind" it replaces the
// sub-layer; without, it sets the named options of its mixer (and replaces
// norm / post when given; "post": null removes the post module).
void patch_sublayer(SublayerConf& s, const json& patch, const std::string& source, const std::string& path) {
  if (patch.contains("kind")) {
    s = parse_sublayer(patch, source, path);
    return;
  }
  json options = json::object();
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it.key() == "norm") {
      s.norm = it->is_null() ? default_module("rmsnorm") : parse_module_json(*it, source, path + ".norm");
    } else if (it.key() == "post") {
      if (it->is_null()) s.post.reset();
      else s.post = parse_module_json(*it, source, path + ".post");
    } else {
      options[it.key()] = *it;
    }
  }
  json merged = module_options_json(s.mixer);
  for (auto it = options.begin(); it != options.end(); ++it) merged[it.key()] = *it;
  s.mixer = parse_module(s.mixer.kind, merged, fields_at(source, path));
}

// "5" -> (5, -1), "5.1" -> (5, 1); anything else is an error.
std::pair<int64_t, int64_t> override_key(const std::string& key, const std::string& source) {
  const std::string path = cat(kField, ".overrides.", key);
  auto number = [&](const std::string& s) {
    if (s.empty() || s.size() > 9) field_error(source, path, "expected a layer index (\"5\") or layer.sub-layer (\"5.1\")");
    for (char c : s)
      if (!std::isdigit(static_cast<unsigned char>(c)))
        field_error(source, path, "expected a layer index (\"5\") or layer.sub-layer (\"5.1\")");
    return static_cast<int64_t>(std::stoll(s));
  };
  const size_t dot = key.find('.');
  if (dot == std::string::npos) return {number(key), -1};
  return {number(key.substr(0, dot)), number(key.substr(dot + 1))};
}

ojson module_json(const ModuleConf& m) {
  ojson j;
  j["kind"] = m.kind;
  const ojson options = module_options_json(m);
  for (const auto& [k, v] : options.items()) j[k] = v;
  return j;
}

ojson sublayer_json(const SublayerConf& s) {
  ojson j = module_json(s.mixer);
  if (!(s.norm == default_module("rmsnorm"))) j["norm"] = module_json(s.norm);
  if (s.post) j["post"] = module_json(*s.post);
  return j;
}

ojson layer_json(const LayerConf& l) {
  ojson a = ojson::array();
  for (const SublayerConf& s : l) a.push_back(sublayer_json(s));
  return a;
}

std::string norm_name(size_t s) {
  if (s == 0) return "input_layernorm";
  if (s == 1) return "post_attention_layernorm";
  return cat("norm_", s);
}

std::string describe_module(const ModuleConf& m) {
  std::string s = m.kind;
  const ojson o = module_options_json(m);
  if (o.empty()) return s;
  s += "(";
  bool first = true;
  for (const auto& [k, v] : o.items()) {
    s += (first ? "" : ", ") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
    first = false;
  }
  return s + ")";
}

}  // namespace

const LayerConf& LayerPattern::layer(int64_t l) const {
  if (unit.empty()) fail("the layer pattern is empty");
  if (auto it = overrides.find(l); it != overrides.end()) return it->second;
  return unit[static_cast<size_t>(l % static_cast<int64_t>(unit.size()))];
}

SublayerConf sublayer(const std::string& kind, const json& options) {
  SublayerConf s;
  s.mixer = parse_module(kind, options, [&](const std::string& o) { return cat("module '", kind, "' ", o); });
  s.norm = default_module("rmsnorm");
  return s;
}

SublayerConf with_norm(SublayerConf s, const std::string& kind, const json& options) {
  s.norm = sublayer(kind, options).mixer;
  return s;
}

SublayerConf with_post(SublayerConf s, const std::string& kind, const json& options) {
  s.post = sublayer(kind, options).mixer;
  return s;
}

std::vector<BlockSpec> layer_blocks(const Config& cfg, int64_t layer) {
  const LayerConf& l = cfg.layers.layer(layer);
  const std::string pre = cat("model.layers.", layer, ".");
  std::set<std::string> used;
  auto unique_name = [&](const ModuleConf& m, size_t s) {
    std::string name = module_type(m.kind).name;
    if (used.count(name)) name = cat(name, "_", s);
    used.insert(name);
    return pre + name;
  };
  std::vector<BlockSpec> r;
  for (size_t s = 0; s < l.size(); ++s) {
    const SublayerConf& sub = l[s];
    BlockSpec b;
    b.norm = {sub.norm.kind, pre + norm_name(s), layer, sub.norm.options};
    b.mixer = {sub.mixer.kind, unique_name(sub.mixer, s), layer, sub.mixer.options};
    if (sub.post) b.post = ModuleSpec{sub.post->kind, unique_name(*sub.post, s), layer, sub.post->options};
    r.push_back(std::move(b));
  }
  return r;
}

ModuleSpec final_norm_spec(const Config& cfg) {
  const ModuleConf n = default_module("rmsnorm");
  return {n.kind, "model.norm", cfg.num_hidden_layers, n.options};
}

LayerPattern parse_layer_pattern(const json& j, const std::string& source, int64_t* num_layers) {
  if (!j.is_object()) field_error(source, kField, cat("expected an object with \"unit\", got ", j.type_name()));
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "unit" && it.key() != "repeat" && it.key() != "overrides")
      field_error(source, cat(kField, ".", it.key()), "unknown field (expected unit, repeat, overrides)");
  LayerPattern p;
  auto unit = j.find("unit");
  if (unit == j.end() || !unit->is_array() || unit->empty())
    field_error(source, cat(kField, ".unit"), "must be a non-empty list of layers");
  for (size_t i = 0; i < unit->size(); ++i)
    p.unit.push_back(parse_layer((*unit)[i], source, cat(kField, ".unit[", i, "]")));
  const int64_t u = static_cast<int64_t>(p.unit.size());
  if (auto rep = j.find("repeat"); rep != j.end() && !rep->is_null()) {
    if (!rep->is_number_integer() || rep->get<int64_t>() <= 0 || rep->get<int64_t>() > 1024)
      field_error(source, cat(kField, ".repeat"), "must be an integer in 1..1024");
    const int64_t n = u * rep->get<int64_t>();
    if (*num_layers > 0 && *num_layers != n)
      field_error(source, "num_hidden_layers",
                  cat(*num_layers, " layers, but strata_layers has ", u, " x ", rep->get<int64_t>(), " = ", n));
    *num_layers = n;
  } else if (*num_layers <= 0) {
    *num_layers = u;
  }
  if (auto ov = j.find("overrides"); ov != j.end() && !ov->is_null()) {
    if (!ov->is_object()) field_error(source, cat(kField, ".overrides"), "expected an object {\"LAYER\": ...}");
    for (auto it = ov->begin(); it != ov->end(); ++it) {
      const auto [l, s] = override_key(it.key(), source);
      const std::string path = cat(kField, ".overrides.", it.key());
      if (l >= *num_layers) field_error(source, path, cat("layer ", l, " does not exist (", *num_layers, " layers)"));
      if (it->is_array()) {
        if (s >= 0) field_error(source, path, "a whole layer (a list) replaces a layer: use the key \"LAYER\"");
        p.overrides[l] = parse_layer(*it, source, path);
        continue;
      }
      if (!it->is_object()) field_error(source, path, "expected a layer (a list) or a sub-layer patch (an object)");
      LayerConf layer = p.overrides.count(l) ? p.overrides[l] : p.unit[static_cast<size_t>(l % u)];
      const int64_t sub = s < 0 ? 0 : s;
      if (sub >= static_cast<int64_t>(layer.size()))
        field_error(source, path, cat("layer ", l, " has ", layer.size(), " sub-layers"));
      patch_sublayer(layer[static_cast<size_t>(sub)], *it, source, path);
      p.overrides[l] = std::move(layer);
    }
  }
  return p;
}

ojson layer_pattern_json(const LayerPattern& p, int64_t num_layers) {
  ojson j;
  j["unit"] = ojson::array();
  for (const LayerConf& l : p.unit) j["unit"].push_back(layer_json(l));
  j["repeat"] = p.unit.empty() ? 0 : num_layers / static_cast<int64_t>(p.unit.size());
  if (!p.overrides.empty()) {
    j["overrides"] = ojson::object();
    for (const auto& [l, layer] : p.overrides) j["overrides"][cat(l)] = layer_json(layer);
  }
  return j;
}

void check_layer_pattern(const Config& cfg, const std::string& source) {
  const LayerPattern& p = cfg.layers;
  if (p.unit.empty()) field_error(source, kField, "the layer pattern is empty");
  const int64_t u = static_cast<int64_t>(p.unit.size());
  if (cfg.num_hidden_layers % u != 0)
    field_error(source, "num_hidden_layers",
                cat(cfg.num_hidden_layers, " is not a multiple of the ", u, " layers of the repeated unit"));
  auto check = [&](const LayerConf& l, const std::string& path) {
    if (l.empty()) field_error(source, path, "a layer needs at least one sub-layer");
    for (size_t s = 0; s < l.size(); ++s) {
      const std::string sp = cat(path, "[", s, "]");
      check_module(l[s].mixer, cfg, fields_at(source, sp));
      check_module(l[s].norm, cfg, fields_at(source, sp + ".norm"));
      if (l[s].post) check_module(*l[s].post, cfg, fields_at(source, sp + ".post"));
    }
  };
  for (size_t i = 0; i < p.unit.size(); ++i) check(p.unit[i], cat(kField, ".unit[", i, "]"));
  for (const auto& [l, layer] : p.overrides) {
    if (l < 0 || l >= cfg.num_hidden_layers)
      field_error(source, cat(kField, ".overrides.", l), cat("layer ", l, " does not exist (", cfg.num_hidden_layers, " layers)"));
    check(layer, cat(kField, ".overrides.", l));
  }
}

void set_module_option(LayerPattern& p, const std::string& kind, const std::string& option, const OptionValue& value) {
  const std::string k = module_type(kind).kind;
  auto set = [&](ModuleConf& m) {
    if (m.kind == k) m.options[option] = value;
  };
  auto each = [&](LayerConf& l) {
    for (SublayerConf& s : l) {
      set(s.mixer);
      set(s.norm);
      if (s.post) set(*s.post);
    }
  };
  for (LayerConf& l : p.unit) each(l);
  for (auto& [i, l] : p.overrides) each(l);
}

std::string describe_layer(const LayerConf& layer) {
  std::string r;
  for (size_t s = 0; s < layer.size(); ++s) {
    const SublayerConf& sub = layer[s];
    std::string part = describe_module(sub.mixer);
    if (!(sub.norm == default_module("rmsnorm")) || sub.post) {
      part = describe_module(sub.norm) + " > " + part;
      if (sub.post) part += " > " + describe_module(*sub.post);
    }
    r += (s == 0 ? "" : ", ") + part;
  }
  return "[" + r + "]";
}

}  // namespace strata
