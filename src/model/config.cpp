#include "strata/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "model/layers.h"
#include "model/recipes.h"
#include "strata/error.h"
#include "strata/tensor.h"

namespace strata {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

// Limits that catch corrupt or hostile configs before anything is allocated.
constexpr int64_t kMaxDim = int64_t{1} << 20;
constexpr int64_t kMaxVocab = int64_t{1} << 22;
constexpr int64_t kMaxLayers = 1024;
// model_type values strata reads: a Llama, and strata's own layer patterns
// (written so that tools which only know Llama refuse the checkpoint).
constexpr const char* kModelTypes[] = {"llama", "strata_modified_llama", "strata"};

bool known_model_type(const std::string& t) {
  for (const char* k : kModelTypes)
    if (t == k) return true;
  return false;
}

[[noreturn]] void field_error(const std::string& src, const std::string& field, const std::string& what) {
  fail(src, ": field '", field, "': ", what);
}

std::string type_of(const json& v) { return v.type_name(); }

// A present, non-null value, or nullptr (HF configs write null for "unset").
const json* get(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t as_int(const json& v, const std::string& src, const std::string& field) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      field_error(src, field, "value is out of range");
    return v.get<int64_t>();
  }
  if (v.is_number_float()) {  // accept 2048.0, reject 2048.5
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
    field_error(src, field, cat("expected an integer, got ", v.dump()));
  }
  field_error(src, field, cat("expected an integer, got ", type_of(v)));
}

int64_t opt_int(const json& j, const char* name, int64_t def, const std::string& src) {
  const json* v = get(j, name);
  return v ? as_int(*v, src, name) : def;
}

int64_t req_int(const json& j, const char* name, const std::string& src) {
  const json* v = get(j, name);
  if (!v) field_error(src, name, "is missing");
  return as_int(*v, src, name);
}

double opt_double(const json& j, const char* name, double def, const std::string& src) {
  const json* v = get(j, name);
  if (!v) return def;
  if (!v->is_number()) field_error(src, name, cat("expected a number, got ", type_of(*v)));
  return v->get<double>();
}

bool opt_bool(const json& j, const char* name, bool def, const std::string& src) {
  const json* v = get(j, name);
  if (!v) return def;
  if (!v->is_boolean()) field_error(src, name, cat("expected true or false, got ", type_of(*v)));
  return v->get<bool>();
}

std::string opt_string(const json& j, const char* name, const std::string& def, const std::string& src) {
  const json* v = get(j, name);
  if (!v) return def;
  if (!v->is_string()) field_error(src, name, cat("expected a string, got ", type_of(*v)));
  return v->get<std::string>();
}

int32_t token_id(const json& v, const std::string& src, const std::string& field) {
  const int64_t id = as_int(v, src, field);
  if (id < 0 || id > INT32_MAX) field_error(src, field, cat("token id ", id, " is out of range"));
  return static_cast<int32_t>(id);
}

void check_size(const std::string& src, const char* field, int64_t v, int64_t max) {
  if (v <= 0) field_error(src, field, cat("must be positive (got ", v, ")"));
  if (v > max) field_error(src, field, cat("value ", v, " is too large (limit ", max, ")"));
}

}  // namespace

Config Config::from_json_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    std::string msg = e.what();
    for (char& c : msg)
      if (c == '\n' || c == '\r') c = ' ';
    fail(source, ": invalid JSON: ", msg);
  }
  if (!j.is_object()) fail(source, ": invalid JSON: expected an object at the top level, got ", j.type_name());

  Config c;
  c.model_type = opt_string(j, "model_type", "llama", source);
  if (!known_model_type(c.model_type))
    field_error(source, "model_type",
                cat("model type '", c.model_type, "' is not supported (expected llama, strata_modified_llama or strata)"));
  if (const json* a = get(j, "architectures")) {
    if (!a->is_array()) field_error(source, "architectures", cat("expected a list of strings, got ", type_of(*a)));
    for (const json& e : *a)
      if (!e.is_string()) field_error(source, "architectures", "expected a list of strings");
    if (!a->empty()) c.architecture = (*a)[0].get<std::string>();
  }

  c.vocab_size = req_int(j, "vocab_size", source);
  c.hidden_size = req_int(j, "hidden_size", source);
  c.intermediate_size = req_int(j, "intermediate_size", source);
  const json* layers = get(j, "strata_layers");
  // With strata_layers the layer count may come from its unit x repeat.
  c.num_hidden_layers = layers ? opt_int(j, "num_hidden_layers", 0, source) : req_int(j, "num_hidden_layers", source);
  c.num_attention_heads = req_int(j, "num_attention_heads", source);
  c.num_key_value_heads = opt_int(j, "num_key_value_heads", c.num_attention_heads, source);
  if (get(j, "head_dim")) {
    c.head_dim = req_int(j, "head_dim", source);
  } else {
    // Derived: the heads must split hidden_size evenly.
    check_size(source, "hidden_size", c.hidden_size, kMaxDim);
    check_size(source, "num_attention_heads", c.num_attention_heads, kMaxDim);
    if (c.hidden_size % c.num_attention_heads != 0)
      field_error(source, "num_attention_heads",
                  cat(c.num_attention_heads, " does not divide hidden_size ", c.hidden_size));
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.max_position_embeddings = opt_int(j, "max_position_embeddings", 2048, source);
  c.rms_norm_eps = opt_double(j, "rms_norm_eps", 1e-6, source);
  c.rope_theta = opt_double(j, "rope_theta", 10000.0, source);

  if (const json* rs = get(j, "rope_scaling")) {
    if (!rs->is_object()) field_error(source, "rope_scaling", cat("expected an object or null, got ", type_of(*rs)));
    std::string type = opt_string(*rs, "rope_type", "", source);
    if (type.empty()) type = opt_string(*rs, "type", "", source);
    if (type.empty()) field_error(source, "rope_scaling", "has no 'type' or 'rope_type'");
    if (type == "default") {
      c.rope_scaling_factor = 1.0;  // HF spells "no scaling" this way too
    } else if (type == "linear") {
      const json* f = get(*rs, "factor");
      if (!f || !f->is_number()) field_error(source, "rope_scaling", "linear scaling needs a numeric 'factor'");
      c.rope_scaling_factor = f->get<double>();
    } else {
      fail(source, ": rope_scaling type '", type, "' is not supported");
    }
  }

  c.tie_word_embeddings = opt_bool(j, "tie_word_embeddings", false, source);
  if (const json* b = get(j, "bos_token_id")) c.bos_token_id = token_id(*b, source, "bos_token_id");
  if (const json* e = get(j, "eos_token_id")) {
    c.eos_token_ids.clear();
    if (e->is_array()) {
      for (const json& x : *e) c.eos_token_ids.push_back(token_id(x, source, "eos_token_id"));
    } else {
      c.eos_token_ids.push_back(token_id(*e, source, "eos_token_id"));
    }
  }
  const std::string act = opt_string(j, "hidden_act", "silu", source);
  if (act != "silu")
    field_error(source, "hidden_act", cat("activation '", act, "' is not supported (expected 'silu')"));
  if (opt_bool(j, "attention_bias", false, source)) field_error(source, "attention_bias", "biases are not supported");
  if (opt_bool(j, "mlp_bias", false, source)) field_error(source, "mlp_bias", "biases are not supported");
  c.initializer_range = opt_double(j, "initializer_range", 0.02, source);
  c.init_scheme = opt_string(j, "strata_init", "normal", source);
  // Newer transformers write "dtype" instead of "torch_dtype".
  c.torch_dtype = opt_string(j, "torch_dtype", opt_string(j, "dtype", "float32", source), source);
  c.stop_at_bos = opt_bool(j, "strata_stop_at_bos", false, source);
  if (const json* t = get(j, "strata_training")) {
    if (!t->is_object()) field_error(source, "strata_training", cat("expected an object, got ", type_of(*t)));
    for (const auto& [key, v] : t->items()) {
      const std::string f = "strata_training." + key;
      if (key == "warmup_fraction") {
        if (!v.is_number() || !(v.get<double>() >= 0 && v.get<double>() <= 1))
          field_error(source, f, cat("expected a number in [0, 1], got ", v.dump()));
        c.training.warmup_fraction = v.get<double>();
      } else if (key == "decay") {
        if (v != "matrices" && v != "all") field_error(source, f, cat("expected \"matrices\" or \"all\", got ", v.dump()));
        c.training.decay_all = v == "all";
      } else {
        field_error(source, f, "unknown field (known: warmup_fraction, decay)");
      }
    }
  }
  if (const json* h = get(j, "strata_hypernet")) {
    if (!h->is_object()) field_error(source, "strata_hypernet", cat("expected an object, got ", type_of(*h)));
    for (const auto& [key, v] : h->items()) {
      const std::string f = "strata_hypernet." + key;
      auto count = [&](int64_t lo, int64_t hi) {
        if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
          field_error(source, f, cat("expected an integer in [", lo, ", ", hi, "], got ", v.dump()));
        return v.get<int64_t>();
      };
      if (key == "soft_tokens") c.hypernet.soft_tokens = count(1, 4096);
      else if (key == "layers") c.hypernet.layers = count(1, 64);
      else if (key == "heads") c.hypernet.heads = count(0, 1024);
      else if (key == "intermediate_size") c.hypernet.intermediate_size = count(0, int64_t{1} << 20);
      else if (key == "chunk") c.hypernet.chunk = count(1, 4096);
      else if (key == "rope_theta") {
        if (!v.is_number() || !(v.get<double>() > 0)) field_error(source, f, cat("expected a positive number, got ", v.dump()));
        c.hypernet.rope_theta = v.get<double>();
      } else {
        field_error(source, f, "unknown field (known: soft_tokens, layers, heads, intermediate_size, rope_theta, chunk)");
      }
    }
    if (c.hypernet.soft_tokens == 0) field_error(source, "strata_hypernet.soft_tokens", "missing");
  }

  // The layers: spelled out (strata_layers), or a recipe's (strata_recipe;
  // files without either are Llamas, or modified decoders of an earlier strata).
  const std::string by_type = c.model_type == "strata_modified_llama" ? "modified" : "llama";
  c.recipe = opt_string(j, "strata_recipe", layers ? "custom" : by_type, source);
  if (c.recipe.empty()) field_error(source, "strata_recipe", "must not be empty");
  if (layers) {
    for (const std::string& f : recipe_fields(c.recipe == "custom" ? by_type : c.recipe))
      if (get(j, f.c_str()))
        field_error(source, f, "is a parameter of the recipe: with strata_layers, set the module's option there");
    c.layers = parse_layer_pattern(*layers, source, &c.num_hidden_layers);
  } else {
    check_size(source, "num_hidden_layers", c.num_hidden_layers, kMaxLayers);
    check_size(source, "hidden_size", c.hidden_size, kMaxDim);
    c.layers.unit = recipe_unit(c.recipe, j, source, c);
  }
  const auto [type, arch] = model_type_for(c);
  if (get(j, "model_type") && c.model_type == "llama" && type != "llama")
    field_error(source, "model_type",
                cat("'llama', but the layers are not a Llama's (", describe_layer(c.layers.layer(0)),
                    "): a Llama loader would misread this model; use '", type, "'"));
  c.model_type = type;
  if (type != "llama") c.architecture = arch;  // whatever the file says: it is not a Llama

  c.validate(source);
  return c;
}

bool Config::is_llama() const {
  if (layers.unit.empty()) return false;
  const LayerConf llama = llama_unit()[0];
  for (const LayerConf& l : layers.unit)
    if (!(l == llama)) return false;
  for (const auto& [i, l] : layers.overrides)
    if (!(l == llama)) return false;
  return true;
}

void Config::validate(const std::string& source) const {
  if (!known_model_type(model_type))
    field_error(source, "model_type",
                cat("model type '", model_type, "' is not supported (expected llama, strata_modified_llama or strata)"));
  if (recipe.empty()) field_error(source, "strata_recipe", "must not be empty");
  check_size(source, "vocab_size", vocab_size, kMaxVocab);
  check_size(source, "hidden_size", hidden_size, kMaxDim);
  check_size(source, "intermediate_size", intermediate_size, kMaxDim);
  check_size(source, "num_hidden_layers", num_hidden_layers, kMaxLayers);
  check_size(source, "num_attention_heads", num_attention_heads, kMaxDim);
  check_size(source, "num_key_value_heads", num_key_value_heads, kMaxDim);
  check_size(source, "head_dim", head_dim, kMaxDim);
  check_size(source, "max_position_embeddings", max_position_embeddings, kMaxDim);
  if (num_attention_heads % num_key_value_heads != 0)
    field_error(source, "num_key_value_heads",
                cat(num_key_value_heads, " does not divide num_attention_heads ", num_attention_heads));
  if (head_dim % 2 != 0) field_error(source, "head_dim", cat("must be even for RoPE (got ", head_dim, ")"));
  if (num_attention_heads * head_dim > kMaxDim)
    field_error(source, "num_attention_heads", "num_attention_heads * head_dim is too large");
  if (!(rms_norm_eps > 0.0) || !std::isfinite(rms_norm_eps) || rms_norm_eps >= 1.0)
    field_error(source, "rms_norm_eps", cat("must be in (0, 1) (got ", rms_norm_eps, ")"));
  if (!(rope_theta > 0.0) || !std::isfinite(rope_theta))
    field_error(source, "rope_theta", cat("must be positive (got ", rope_theta, ")"));
  if (!(rope_scaling_factor > 0.0) || !std::isfinite(rope_scaling_factor))
    field_error(source, "rope_scaling", cat("factor must be positive (got ", rope_scaling_factor, ")"));
  if (bos_token_id < 0 || bos_token_id >= vocab_size)
    field_error(source, "bos_token_id",
                cat("token id ", bos_token_id, " is outside the vocabulary (", vocab_size, ")"));
  for (int32_t e : eos_token_ids)
    if (e < 0 || e >= vocab_size)
      field_error(source, "eos_token_id", cat("token id ", e, " is outside the vocabulary (", vocab_size, ")"));
  if (!std::isfinite(initializer_range) || initializer_range < 0.0)
    field_error(source, "initializer_range", "must be a non-negative number");
  if (has_hypernet()) {
    const int64_t heads = hypernet.heads_for(hidden_size);
    if (hidden_size % heads != 0 || (hidden_size / heads) % 2 != 0)
      field_error(source, "strata_hypernet.heads",
                  cat(heads, " heads do not split hidden_size ", hidden_size, " into heads of an even width"));
  }
  if (init_scheme != "normal" && init_scheme != "mamba" && init_scheme != "neox")
    field_error(source, "strata_init", cat("'", init_scheme, "' is not an init scheme (normal, mamba, neox)"));
  DType dt;
  if (!parse_dtype(torch_dtype, &dt) || is_quantized(dt))
    field_error(source, "torch_dtype", cat("dtype '", torch_dtype, "' is not supported (float32, bfloat16, float16)"));
  check_layer_pattern(*this, source);
  // (model_type is not checked against the layers here: config.json gets the
  // one the layers imply, see to_json_text; a file that claims otherwise is
  // refused when read.)
}

std::string Config::to_json_text() const {
  ojson j;
  const auto [type, arch] = model_type_for(*this);
  j["architectures"] = ojson::array({arch});
  j["model_type"] = type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling_factor == 1.0) {
    j["rope_scaling"] = nullptr;
  } else {
    // Both spellings, so old and new transformers read it.
    j["rope_scaling"] = ojson{{"rope_type", "linear"}, {"type", "linear"}, {"factor", rope_scaling_factor}};
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids[0];
  } else {
    j["eos_token_id"] = eos_token_ids;
  }
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["initializer_range"] = initializer_range;
  if (init_scheme != "normal") j["strata_init"] = init_scheme;
  j["torch_dtype"] = torch_dtype;
  j["strata_recipe"] = recipe;
  j["strata_stop_at_bos"] = stop_at_bos;
  if (!(training == TrainingDefaults{})) {
    ojson t = ojson::object();
    if (training.warmup_fraction >= 0) t["warmup_fraction"] = training.warmup_fraction;
    t["decay"] = training.decay_all ? "all" : "matrices";
    j["strata_training"] = t;
  }
  if (has_hypernet()) {
    ojson h = ojson::object();
    h["soft_tokens"] = hypernet.soft_tokens;
    h["layers"] = hypernet.layers;
    h["heads"] = hypernet.heads_for(hidden_size);
    h["intermediate_size"] = hypernet.ffn_for(hidden_size);
    h["rope_theta"] = hypernet.rope_theta;
    h["chunk"] = hypernet.chunk;
    j["strata_hypernet"] = h;
  }
  // The pattern is written unless it is exactly what the recipe yields by default.
  const auto def = recipe_default_unit(recipe);
  if (!def || !(layers == LayerPattern{*def, {}})) j["strata_layers"] = layer_pattern_json(layers, num_hidden_layers);
  return j.dump(2) + "\n";
}

}  // namespace strata
