#include "model/module_run.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "model/module.h"
#include "model/options.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

using json = nlohmann::json;
constexpr const char* kPrefix = "m";  // the module is built under this prefix; P's names lack it

// A config field --opt may set: its key (the reference constructors' name),
// other accepted names, and the field. Values are parsed and range-checked
// with the module options' parser.
struct ConfigField {
  std::string key;
  std::vector<std::string> aliases;
  int64_t Config::*int_field = nullptr;
  double Config::*float_field = nullptr;
  OptionDecl decl;
};

const std::vector<ConfigField>& config_fields() {
  constexpr int64_t kMaxDim = int64_t{1} << 20;
  static const std::vector<ConfigField> fields = {
      {"hidden_size", {"d_model"}, &Config::hidden_size, nullptr, int_option("hidden_size", 0, 1, kMaxDim, "")},
      {"intermediate_size", {}, &Config::intermediate_size, nullptr, int_option("intermediate_size", 0, 1, kMaxDim, "")},
      {"num_heads", {"num_attention_heads"}, &Config::num_attention_heads, nullptr, int_option("num_heads", 0, 1, kMaxDim, "")},
      {"num_kv_heads", {"num_key_value_heads"}, &Config::num_key_value_heads, nullptr,
       int_option("num_kv_heads", 0, 1, kMaxDim, "")},
      {"head_dim", {}, &Config::head_dim, nullptr, int_option("head_dim", 0, 1, kMaxDim, "")},
      {"rope_theta", {}, nullptr, &Config::rope_theta, float_option("rope_theta", 1e4, 1.0, 1e12, "")},
      {"rope_scaling_factor", {}, nullptr, &Config::rope_scaling_factor,
       float_option("rope_scaling_factor", 1.0, 1e-6, 1e6, "")},
      {"eps", {"rms_norm_eps"}, nullptr, &Config::rms_norm_eps, float_option("eps", 1e-6, 0.0, 1.0, "")},
  };
  return fields;
}

const ConfigField* find_field(const std::string& name) {
  for (const ConfigField& f : config_fields())
    if (f.key == name || std::find(f.aliases.begin(), f.aliases.end(), name) != f.aliases.end()) return &f;
  return nullptr;
}

bool declares(const ModuleType& t, const std::string& option) {
  return std::any_of(t.options.begin(), t.options.end(), [&](const OptionDecl& d) { return d.name == option; });
}

// A value for a key and where it came from: --opt, or a tensor's shape
// ("k_proj.weight [16, 32]").
struct Known {
  json value;
  std::string from;
  bool given = false;  // by --opt
};

// How errors about key `key` begin.
std::string key_field(const std::string& kind, const std::string& key, const Known& k) {
  return k.given ? cat("--opt '", key, "'") : cat(kind, ": '", key, "' (from ", k.from, ")");
}
using KnownMap = std::map<std::string, Known>;

// What the parameter shapes tell about the keys a kind needs.
class ShapeFacts {
 public:
  ShapeFacts(const std::string& kind, const WeightSet& p, KnownMap& known) : kind_(kind), p_(p), known_(known) {}
  bool has(const std::string& key) const { return known_.count(key) > 0; }
  int64_t get(const std::string& key) const {
    const Known& k = known_.at(key);
    if (!k.value.is_number_integer()) fail(key_field(kind_, key, k), ": expected an integer, got ", k.value.dump());
    return k.value.get<int64_t>();
  }
  // A declared option's value: given, or the kind's default.
  json option(const std::string& key) const {
    if (has(key)) return known_.at(key).value;
    for (const OptionDecl& d : module_type(kind_).options)
      if (d.name == key) return option_json(d.def);
    return nullptr;
  }
  bool has_tensor(const std::string& name) const { return p_.find(name) != nullptr; }
  // Dimension i of P's tensor `name`, when P has it with that many dimensions.
  std::optional<int64_t> dim(const std::string& name, int i) const {
    const Tensor* t = p_.find(name);
    if (!t || static_cast<int>(t->shape.size()) <= i) return std::nullopt;
    return t->shape[static_cast<size_t>(i)];
  }
  void set(const std::string& key, json v, const std::string& tensor) {
    if (has(key)) return;
    const Tensor* t = p_.find(tensor);
    known_[key] = {std::move(v), t ? cat(tensor, " ", shape_str(t->shape)) : tensor};
  }
  // n / d where `tensor`'s dimension n must be a multiple of d (= `what`).
  int64_t ratio(int64_t n, int64_t d, const std::string& tensor, const std::string& what) const {
    if (d <= 0 || n % d != 0)
      fail(p_.origin, ": tensor '", tensor, "' has ", n, " rows, not a multiple of ", what, " (", d, ")");
    return n / d;
  }
  const std::string& kind() const { return kind_; }
  const std::string& file() const { return p_.origin; }

 private:
  std::string kind_;
  const WeightSet& p_;
  KnownMap& known_;
};

// Heads of an attention-like kind: q rows = per_head * num_heads * head_dim,
// k rows = per_head * num_kv_heads * head_dim (one of num_heads and head_dim given).
void heads_from(ShapeFacts& s, const std::string& q, const std::string& k, int64_t per_head) {
  const auto qr = s.dim(q, 0);
  if (!qr) return;
  if (!s.has("head_dim") && !s.has("num_heads"))
    fail(s.kind(), ": --opt num_heads=N or head_dim=N is needed to split the ", *qr, " rows of ", q);
  if (!s.has("head_dim")) s.set("head_dim", s.ratio(*qr, per_head * s.get("num_heads"), q, "num_heads"), q);
  if (!s.has("num_heads")) s.set("num_heads", s.ratio(*qr, per_head * s.get("head_dim"), q, "head_dim"), q);
  if (const auto kr = s.dim(k, 0)) s.set("num_kv_heads", s.ratio(*kr, per_head * s.get("head_dim"), k, "head_dim"), k);
  s.set("num_kv_heads", s.get("num_heads"), q);
}

// GLA / RetNet: the widths from q_proj and v_proj, the heads from the shared
// norm weight (dv values), GLA's gate rank from gk_proj.0.
void linear_attention_shapes(ShapeFacts& s) {
  const double d = static_cast<double>(s.get("hidden_size"));
  if (const auto kd = s.dim("q_proj.weight", 0)) s.set("expand_k", static_cast<double>(*kd) / d, "q_proj.weight");
  if (const auto vd = s.dim("v_proj.weight", 0)) {
    s.set("expand_v", static_cast<double>(*vd) / d, "v_proj.weight");
    if (const auto dv = s.dim("g_norm_swish_gate.weight", 0))
      s.set("num_heads", s.ratio(*vd, *dv, "v_proj.weight", "the g_norm_swish_gate.weight size"), "g_norm_swish_gate.weight");
  }
  if (const auto r = s.dim("gk_proj.0.weight", 0)) s.set("gate_low_rank_dim", *r, "gk_proj.0.weight");
}

// The one place that knows particular kinds: what each one's parameter
// shapes determine, applied to the keys --opt did not give.
using ShapeRule = void (*)(ShapeFacts&);
const std::map<std::string, ShapeRule>& shape_rules() {
  static const std::map<std::string, ShapeRule> rules = {
      {"attention", [](ShapeFacts& s) { heads_from(s, "q_proj.weight", "k_proj.weight", 1); }},
      {"diff-attn",
       [](ShapeFacts& s) {
         if (const auto d = s.dim("lambda_q1", 0)) s.set("head_dim", *d, "lambda_q1");
         heads_from(s, "q_proj.weight", "k_proj.weight", s.option("layout") == "paper" ? 1 : 2);
       }},
      {"mlp",
       [](ShapeFacts& s) {
         if (const auto f = s.dim("gate_proj.weight", 0)) s.set("intermediate_size", *f, "gate_proj.weight");
       }},
      {"ada-rmsnorm",
       [](ShapeFacts& s) {
         if (const auto r = s.dim("ctx_down.weight", 0)) s.set("rank", *r, "ctx_down.weight");
         if (!s.has_tensor("ctx_down.weight") && !s.has_tensor("ctx_up.weight")) s.set("rank", 0, "ctx_down.weight (absent)");
       }},
      {"token-mix",
       [](ShapeFacts& s) {
         if (const auto k = s.dim("weight", 2)) s.set("kernel", *k, "weight");
       }},
      {"se",
       [](ShapeFacts& s) {
         const int64_t d = s.get("hidden_size");
         if (const auto h = s.dim("fc1.weight", 0)) {
           if (*h < 1 || d % *h != 0)
             fail(s.file(), ": tensor 'fc1.weight' has ", *h, " rows, which do not divide hidden_size ", d);
           s.set("reduction", d / *h, "fc1.weight");
         }
       }},
      {"gla", linear_attention_shapes},
      {"retnet", linear_attention_shapes},
      {"mamba",
       [](ShapeFacts& s) {
         if (const auto n = s.dim("A_log", 1)) s.set("d_state", *n, "A_log");
         if (const auto k = s.dim("conv1d.weight", 2)) s.set("d_conv", *k, "conv1d.weight");
         if (const auto r = s.dim("dt_proj.weight", 1)) s.set("dt_rank", *r, "dt_proj.weight");
         if (const auto e2 = s.dim("in_proj.weight", 0)) {  // 2E rows, E = expand * d_model
           const int64_t d = s.get("hidden_size");
           if (*e2 % (2 * d) == 0) s.set("expand", *e2 / (2 * d), "in_proj.weight");
           else s.set("expand", static_cast<double>(*e2) / static_cast<double>(2 * d), "in_proj.weight");
         }
         s.set("conv_bias", s.has_tensor("conv1d.bias"), s.has_tensor("conv1d.bias") ? "conv1d.bias" : "conv1d.bias (absent)");
       }},
  };
  return rules;
}

// --opt values as text: JSON (numbers, true/false, "quoted") or a bare string.
json option_value(const std::string& text) {
  json v = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (v.is_discarded() || v.is_null()) return json(text);
  return v;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string facts_text(const KnownMap& known) {
  std::string s;
  for (const auto& [k, v] : known) s += (s.empty() ? "" : ", ") + k + " " + (v.value.is_string() ? v.value.get<std::string>() : v.value.dump());
  return s;
}

// Checks P against the module's declarations (names without the prefix) and
// binds F32 copies: backward reads the matrices as F32.
void bind_params(Module& m, const WeightSet& p, const std::string& kind, const KnownMap& known) {
  const std::string file = p.origin;
  const std::string pre = std::string(kPrefix) + ".";
  const std::vector<ParamDecl> decls = m.params();
  std::vector<std::string> names;
  for (const ParamDecl& d : decls) names.push_back(d.name.substr(pre.size()));
  for (const auto& [name, t] : p.tensors)
    if (std::find(names.begin(), names.end(), name) == names.end())
      fail(file, ": tensor '", name, "' is not a parameter of '", kind, "' (its parameters: ", join(names), ")");
  WeightSet full;
  full.origin = file;
  for (size_t i = 0; i < decls.size(); ++i) {
    const Tensor* t = p.find(names[i]);
    if (!t)
      fail(file, ": missing tensor '", names[i], "' (", kind, " expects shape ", shape_str(decls[i].shape), " with ",
           facts_text(known), ")");
    if (t->shape != decls[i].shape)
      fail(file, ": tensor '", names[i], "' has shape ", shape_str(t->shape), ", expected ", shape_str(decls[i].shape),
           " (", kind, " with ", facts_text(known), ")");
    full.add(decls[i].name, t->to(DType::F32), file);
  }
  ParamBinder binder(full);
  m.bind(binder);
}

Tensor as_f32(const Tensor& t) { return t.dtype == DType::F32 ? t : t.to(DType::F32); }

// Exports whose reference layout keeps one column more than strata's state:
// mamba_simple's conv_state holds the last k_c pre-conv inputs, strata's the
// k_c - 1 the next step needs. The oldest column is the first column of the
// same export one step earlier (zeros before the first row).
const std::map<std::string, std::string>& widened_exports() {
  static const std::map<std::string, std::string> m = {{"mamba", "conv_state"}};
  return m;
}

// [rows, cols] -> [rows, cols + 1]: before's column 0, then now's columns.
Tensor widen_window(const Tensor& before, const Tensor& now) {
  const int64_t rows = now.shape[0], cols = now.shape[1];
  Tensor w = Tensor::alloc(DType::F32, {rows, cols + 1});
  for (int64_t r = 0; r < rows; ++r) {
    w.f32()[r * (cols + 1)] = cols > 0 ? before.f32()[r * cols] : 0.0f;
    std::copy(now.f32() + r * cols, now.f32() + (r + 1) * cols, w.f32() + r * (cols + 1) + 1);
  }
  return w;
}

// Per sequence s, the tensors its state exports, stacked to [B, ...]; the
// export named `widened` (if any) gets the oldest column from `before` (the
// states one step earlier).
NamedTensors stack_exports(const std::vector<std::unique_ptr<LayerState>>& states,
                           const std::vector<std::unique_ptr<LayerState>>& before, const std::string& widened) {
  NamedTensors out;
  std::vector<NamedTensors> per;
  for (size_t i = 0; i < states.size(); ++i) {
    per.push_back(states[i] ? states[i]->export_tensors() : NamedTensors{});
    if (widened.empty() || !states[i]) continue;
    const NamedTensors prev = before.at(i)->export_tensors();
    for (size_t j = 0; j < per.back().size(); ++j) {
      auto& [name, t] = per.back()[j];
      if (name == widened) t = widen_window(prev.at(j).second, t);
    }
  }
  if (per.empty()) return out;
  const int64_t B = static_cast<int64_t>(per.size());
  for (size_t i = 0; i < per[0].size(); ++i) {
    const auto& [name, first] = per[0][i];
    Shape shape = {B};
    shape.insert(shape.end(), first.shape.begin(), first.shape.end());
    Tensor t = Tensor::alloc(DType::F32, shape);
    const int64_t n = first.numel();
    for (int64_t s = 0; s < B; ++s) {
      if (per[s].size() != per[0].size() || per[s][i].first != name || per[s][i].second.shape != first.shape)
        fail("module-run: the decode states of the sequences export different tensors ('", name, "')");
      to_f32(per[s][i].second.dtype, per[s][i].second.data, t.f32() + s * n, n);
    }
    out.emplace_back("final_" + name, t);
  }
  return out;
}

}  // namespace

std::vector<std::string> module_run_keys(const std::string& kind) {
  std::vector<std::string> keys;
  for (const ConfigField& f : config_fields()) {
    keys.push_back(f.key);
    keys.insert(keys.end(), f.aliases.begin(), f.aliases.end());
  }
  for (const OptionDecl& d : module_type(kind).options)
    if (std::find(keys.begin(), keys.end(), d.name) == keys.end()) keys.push_back(d.name);
  return keys;
}

NamedTensors run_module(const ModuleRunRequest& req, const Exec& exec) {
  const ModuleType& type = module_type(req.kind);  // an unknown kind: the registry's error, listing the kinds
  const Tensor& in = req.input;
  if (in.shape.size() != 3 || in.shape[0] < 1 || in.shape[1] < 1 || in.shape[2] < 1)
    fail(req.input_origin, ": tensor 'input' has shape ", shape_str(in.shape), ", expected [B, T, D] with B, T, D >= 1");
  const int64_t B = in.shape[0], T = in.shape[1], D = in.shape[2];

  // The keys: --opt first (each a config field or a declared option), then
  // what the input and parameter shapes determine.
  KnownMap known;
  for (const auto& [key, text] : req.options) {
    const ConfigField* f = find_field(key);
    if (!f && !declares(type, key))
      fail("--opt '", key, "': '", type.kind, "' has no option of that name and it is no config field (accepted: ",
           join(module_run_keys(req.kind)), ")");
    const std::string canon = f ? f->key : key;
    if (known.count(canon)) fail("--opt '", key, "' is given twice");
    known[canon] = {option_value(text), cat("--opt ", key), true};
  }
  if (known.count("hidden_size")) {
    const Known& h = known.at("hidden_size");
    if (h.value != json(D))
      fail(key_field(type.kind, "hidden_size", h), ": ", h.value.dump(), " does not match the last dimension of ",
           req.input_origin, ": tensor 'input' ", shape_str(in.shape));
  }
  known["hidden_size"] = {D, cat("input ", shape_str(in.shape)), false};
  ShapeFacts facts(type.kind, req.params, known);
  if (auto it = shape_rules().find(type.kind); it != shape_rules().end()) it->second(facts);

  // Config fields, then the kind's options (declared under a field's key or
  // one of its other names).
  Config cfg;
  cfg.max_position_embeddings = T;
  for (const ConfigField& f : config_fields()) {
    auto it = known.find(f.key);
    if (it == known.end()) continue;
    const OptionValue v = parse_option(f.decl, it->second.value, key_field(type.kind, f.key, it->second));
    if (f.int_field) cfg.*f.int_field = std::get<int64_t>(v);
    else cfg.*f.float_field = std::get<double>(v);
  }
  json options = json::object();
  std::map<std::string, std::string> fields;  // option -> how errors about it begin
  for (const OptionDecl& d : type.options) {
    const ConfigField* f = find_field(d.name);
    auto it = known.find(f ? f->key : d.name);
    if (it == known.end()) continue;
    options[d.name] = it->second.value;
    fields[d.name] = key_field(type.kind, d.name, it->second);
  }
  const FieldName field = [&](const std::string& o) {
    auto it = fields.find(o);
    return it == fields.end() ? cat(type.kind, ": option '", o, "'") : it->second;
  };
  ModuleConf mc = parse_module(req.kind, options, field);
  check_module(mc, cfg, field);
  std::unique_ptr<Module> m = make_module(ModuleSpec{mc.kind, kPrefix, 0, mc.options}, cfg);
  bind_params(*m, req.params, type.kind, known);

  const int64_t Dout = m->out_width(), rows = B * T;
  const Tensor x = as_f32(in);
  Batch batch;
  for (int64_t s = 0; s < B; ++s) batch.seqs.push_back({s * T, T, 0});
  batch.rows = rows;
  Scratch scratch;
  Context ctx{exec, scratch, false};
  NamedTensors out;
  Tensor y = Tensor::alloc(DType::F32, {B, T, Dout});
  m->forward(x.f32(), y.f32(), batch, nullptr, ctx);
  out.emplace_back("output", y);

  // One row per sequence per call from empty states, as a decoder runs; a
  // module that looks at later rows (global context) has no such path.
  if (m->causal()) {
    std::vector<std::unique_ptr<LayerState>> states;
    std::vector<LayerState*> ptrs;
    for (int64_t s = 0; s < B; ++s) {
      states.push_back(m->make_state());
      ptrs.push_back(states.back().get());
    }
    const bool stateless = std::all_of(ptrs.begin(), ptrs.end(), [](LayerState* p) { return p == nullptr; });
    Tensor ys = Tensor::alloc(DType::F32, {B, T, Dout});
    std::vector<float> xr(static_cast<size_t>(B * D)), yr(static_cast<size_t>(B * Dout));
    Batch step;
    for (int64_t s = 0; s < B; ++s) step.seqs.push_back({s, 1, 0});
    step.rows = B;
    const auto widened = widened_exports().find(type.kind);
    std::vector<std::unique_ptr<LayerState>> before;  // the states before the last step
    for (int64_t t = 0; t < T; ++t) {
      if (t == T - 1 && widened != widened_exports().end())
        for (const auto& st : states) before.push_back(st ? st->clone() : nullptr);
      for (int64_t s = 0; s < B; ++s) {
        std::memcpy(&xr[s * D], x.f32() + (s * T + t) * D, static_cast<size_t>(D) * sizeof(float));
        step.seqs[static_cast<size_t>(s)].pos = t;
      }
      m->step(xr.data(), yr.data(), step, stateless ? nullptr : ptrs.data(), ctx);
      for (int64_t s = 0; s < B; ++s)
        std::memcpy(ys.f32() + (s * T + t) * Dout, &yr[s * Dout], static_cast<size_t>(Dout) * sizeof(float));
    }
    out.emplace_back("output_step", ys);
    for (auto& e : stack_exports(states, before, widened == widened_exports().end() ? "" : widened->second))
      out.push_back(std::move(e));
  }

  if (req.dy) {
    const Tensor& dy_in = *req.dy;
    if (dy_in.shape != Shape{B, T, Dout})
      fail(req.input_origin, ": tensor 'dy' has shape ", shape_str(dy_in.shape), ", expected ", shape_str({B, T, Dout}),
           " (the output's)");
    const Tensor dy = as_f32(dy_in);
    const std::vector<ParamDecl> decls = m->params();
    std::map<std::string, Tensor> grads;  // zeroed: backward adds into them
    for (const ParamDecl& d : decls)
      if (d.trainable) grads[d.name] = Tensor::alloc(DType::F32, d.shape);
    GradBinder gb(grads);
    m->bind_grads(gb);
    Context train{exec, scratch, true};
    Tensor yt = Tensor::alloc(DType::F32, {B, T, Dout});
    Tensor dx = Tensor::alloc(DType::F32, {B, T, D});
    m->forward(x.f32(), yt.f32(), batch, nullptr, train);
    m->backward(dy.f32(), dx.f32(), batch, train);
    m->free_saved();
    out.emplace_back("grad.input", dx);
    const size_t skip = std::strlen(kPrefix) + 1;
    for (const ParamDecl& d : decls)
      if (d.trainable) out.emplace_back("grad." + d.name.substr(skip), grads.at(d.name));
  }
  return out;
}

ModuleRunRequest module_run_request(const std::string& kind, const std::string& params_path,
                                    const std::string& input_path,
                                    const std::vector<std::pair<std::string, std::string>>& options) {
  ModuleRunRequest r;
  r.kind = kind;
  r.options = options;
  read_safetensors(params_path, r.params);
  r.params.origin = params_path;
  WeightSet x;
  read_safetensors(input_path, x);
  r.input_origin = input_path;
  for (const auto& [name, t] : x.tensors)
    if (name != "input" && name != "dy")
      fail(input_path, ": unexpected tensor '", name, "' (expected 'input' [B, T, D] and optionally 'dy')");
  const Tensor* in = x.find("input");
  if (!in) fail(input_path, ": missing tensor 'input' [B, T, D]");
  r.input = *in;
  if (const Tensor* dy = x.find("dy")) r.dy = *dy;
  return r;
}

}  // namespace strata
