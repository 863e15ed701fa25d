#include "model/recipes.h"

#include <tuple>

#include "model/layers.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {

using json = nlohmann::json;

namespace {

constexpr const char* kModifiedFields[] = {"attention", "diff_attn", "ctx_mode", "ada_rank", "tm_kernel", "se_reduction"};

// One legacy top-level field read with the declaration of the module option it
// sets (same types, ranges and choices), errors naming the legacy field.
OptionValue legacy_option(const json& top, const std::string& field, const std::string& kind,
                          const std::string& option, const std::string& source, const OptionValue& def) {
  const json* obj = &top;
  std::string key = field;
  if (const size_t dot = field.find('.'); dot != std::string::npos) {  // diff_attn.layout
    auto it = top.find(field.substr(0, dot));
    if (it == top.end() || it->is_null()) return def;
    obj = &*it;
    key = field.substr(dot + 1);
  }
  auto it = obj->find(key);
  if (it == obj->end() || it->is_null()) return def;
  for (const OptionDecl& d : module_type(kind).options)
    if (d.name == option) return parse_option(d, *it, cat(source, ": field '", field, "'"));
  fail("module '", kind, "' declares no option '", option, "'");
}

ModifiedRecipe read_modified(const json& top, const std::string& source) {
  ModifiedRecipe r;
  if (auto a = top.find("attention"); a != top.end() && !a->is_null()) {
    if (!a->is_string() || (*a != "standard" && *a != "differential"))
      fail(source, ": field 'attention': ", a->dump(), " is not standard or differential");
    r.attention = a->get<std::string>();
  }
  if (auto d = top.find("diff_attn"); d != top.end() && !d->is_null() && !d->is_object())
    fail(source, ": field 'diff_attn': expected an object, got ", d->type_name());
  r.diff_layout = std::get<std::string>(legacy_option(top, "diff_attn.layout", "diff-attn", "layout", source, r.diff_layout));
  r.diff_subln = std::get<bool>(legacy_option(top, "diff_attn.subln", "diff-attn", "subln", source, r.diff_subln));
  r.diff_out_scale = std::get<std::string>(legacy_option(top, "diff_attn.out_scale", "diff-attn", "out_scale", source,
                                                         std::string("one_minus_lambda_init"))) == "one_minus_lambda_init";
  r.diff_lambda_init_zero = std::get<std::string>(legacy_option(top, "diff_attn.lambda_init", "diff-attn", "lambda_init",
                                                                source, std::string("paper"))) == "zero";
  r.ctx_mode = std::get<std::string>(legacy_option(top, "ctx_mode", "se", "ctx_mode", source, r.ctx_mode));
  r.ada_rank = std::get<int64_t>(legacy_option(top, "ada_rank", "ada-rmsnorm", "rank", source, r.ada_rank));
  r.tm_kernel = std::get<int64_t>(legacy_option(top, "tm_kernel", "token-mix", "kernel", source, r.tm_kernel));
  r.se_reduction = std::get<int64_t>(legacy_option(top, "se_reduction", "se", "reduction", source, r.se_reduction));
  return r;
}

const char* legacy_field(const std::string& kind, const std::string& option) {
  if (kind == "diff-attn") return option == "layout" ? "diff_attn.layout" : "diff_attn";
  if (option == "ctx_mode") return "ctx_mode";
  if (kind == "ada-rmsnorm") return "ada_rank";
  if (kind == "token-mix") return "tm_kernel";
  if (kind == "se") return "se_reduction";
  return "strata_recipe";
}

bool same_module(const ModuleConf& m, const char* kind) { return m.kind == kind; }

}  // namespace

std::vector<LayerConf> llama_unit() { return {{sublayer("attention"), sublayer("mlp")}}; }

std::vector<LayerConf> modified_unit(const ModifiedRecipe& r) {
  SublayerConf attn;
  if (r.attention == "differential") {
    attn = sublayer("diff-attn", {{"layout", r.diff_layout},
                                  {"subln", r.diff_subln},
                                  {"out_scale", r.diff_out_scale ? "one_minus_lambda_init" : "one"},
                                  {"lambda_init", r.diff_lambda_init_zero ? "zero" : "paper"}});
  } else if (r.attention == "standard") {
    attn = sublayer("attention");
  } else {
    fail("modified recipe: attention '", r.attention, "' is not standard or differential");
  }
  const json norm = {{"rank", r.ada_rank}, {"ctx_mode", r.ctx_mode}};
  attn = with_post(with_norm(attn, "ada-rmsnorm", norm), "token-mix", {{"kernel", r.tm_kernel}});
  SublayerConf mlp = with_post(with_norm(sublayer("mlp"), "ada-rmsnorm", norm), "se",
                               {{"reduction", r.se_reduction}, {"ctx_mode", r.ctx_mode}});
  return {{attn, mlp}};
}

// The Samba family (docs/samba.md): Samba [Mamba, MLP] / [SWA, MLP] layers
// alternating, and the paper's baselines. SWA is attention with a 2048 window.
std::optional<std::vector<LayerConf>> samba_family_unit(const std::string& name) {
  const SublayerConf mamba = sublayer("mamba"), mlp = sublayer("mlp"), swa = sublayer("attention", {{"window", 2048}});
  if (name == "samba") return std::vector<LayerConf>{{mamba, mlp}, {swa, mlp}};
  if (name == "sliding-gla") return std::vector<LayerConf>{{sublayer("gla"), mlp}, {swa, mlp}};
  if (name == "sliding-retnet") return std::vector<LayerConf>{{sublayer("retnet"), mlp}, {swa, mlp}};
  if (name == "mamba") return std::vector<LayerConf>{{mamba}};
  if (name == "mamba-mlp") return std::vector<LayerConf>{{mamba, mlp}};
  if (name == "mamba-swa-mlp") return std::vector<LayerConf>{{mamba, swa, mlp}};
  if (name == "llama-swa") return std::vector<LayerConf>{{swa, mlp}};
  return std::nullopt;
}

std::vector<std::string> recipe_names() {
  return {"llama", "modified", "samba", "mamba", "mamba-mlp", "mamba-swa-mlp", "llama-swa", "sliding-gla", "sliding-retnet"};
}

std::vector<std::string> recipe_fields(const std::string& name) {
  if (name == "modified") return {std::begin(kModifiedFields), std::end(kModifiedFields)};
  return {};
}

std::vector<LayerConf> recipe_unit(const std::string& name, const json& top, const std::string& source,
                                   const Config& shape) {
  if (name == "llama") return llama_unit();
  if (auto u = samba_family_unit(name)) return *u;
  if (name == "modified") {
    std::vector<LayerConf> unit = modified_unit(read_modified(top, source));
    // Checks against the shape (e.g. se_reduction must divide hidden_size), naming the legacy fields.
    for (const SublayerConf& s : unit[0])
      for (const ModuleConf* m : {&s.norm, &s.mixer, s.post ? &*s.post : nullptr})
        if (m)
          check_module(*m, shape, [&](const std::string& o) { return cat(source, ": field '", legacy_field(m->kind, o), "'"); });
    return unit;
  }
  std::string known;
  for (const std::string& n : recipe_names()) known += (known.empty() ? "" : ", ") + n;
  fail(source, ": field 'strata_recipe': unknown recipe '", name, "' (known: ", known,
       "; or spell the layers out in strata_layers)");
}

std::optional<std::vector<LayerConf>> recipe_default_unit(const std::string& name) {
  if (name == "llama") return llama_unit();
  if (name == "modified") return modified_unit(ModifiedRecipe());
  return samba_family_unit(name);
}

std::pair<std::string, std::string> model_type_for(const Config& cfg) {
  if (cfg.is_llama())
    return {"llama", cfg.architecture.rfind("Strata", 0) == 0 || cfg.architecture.empty() ? "LlamaForCausalLM"
                                                                                           : cfg.architecture};
  if (cfg.recipe == "modified") return {"strata_modified_llama", "StrataModifiedLlamaForCausalLM"};
  return {"strata", "StrataForCausalLM"};
}

void set_layers(Config& cfg, const std::string& recipe, std::vector<LayerConf> unit) {
  cfg.layers = LayerPattern{std::move(unit), {}};
  cfg.recipe = recipe;
  std::tie(cfg.model_type, cfg.architecture) = model_type_for(cfg);
}

Config with_llama_layers(Config cfg) {
  set_layers(cfg, "llama", llama_unit());
  return cfg;
}

Config with_modified_layers(Config cfg, const ModifiedRecipe& r) {
  set_layers(cfg, "modified", modified_unit(r));
  return cfg;
}

ModifiedRecipe modified_recipe_of(const Config& cfg) {
  const auto& u = cfg.layers.unit;
  const bool shape_ok = u.size() == 1 && cfg.layers.overrides.empty() && u[0].size() == 2 &&
                        same_module(u[0][0].norm, "ada-rmsnorm") && u[0][0].post &&
                        same_module(*u[0][0].post, "token-mix") && same_module(u[0][1].mixer, "mlp") &&
                        same_module(u[0][1].norm, "ada-rmsnorm") && u[0][1].post && same_module(*u[0][1].post, "se") &&
                        (same_module(u[0][0].mixer, "attention") || same_module(u[0][0].mixer, "diff-attn"));
  if (!shape_ok) fail("the layers are not the modified recipe's (", describe_layer(u.empty() ? LayerConf() : u[0]), ")");
  ModifiedRecipe r;
  const Options& a = u[0][0].mixer.options;
  r.attention = u[0][0].mixer.kind == "diff-attn" ? "differential" : "standard";
  if (r.attention == "differential") {
    r.diff_layout = opt_string(a, "layout");
    r.diff_subln = opt_bool(a, "subln");
    r.diff_out_scale = opt_string(a, "out_scale") == "one_minus_lambda_init";
    r.diff_lambda_init_zero = opt_string(a, "lambda_init") == "zero";
  }
  r.ctx_mode = opt_string(u[0][0].norm.options, "ctx_mode");
  r.ada_rank = opt_int(u[0][0].norm.options, "rank");
  r.tm_kernel = opt_int(u[0][0].post->options, "kernel");
  r.se_reduction = opt_int(u[0][1].post->options, "reduction");
  return r;
}

}  // namespace strata
