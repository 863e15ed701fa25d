#include "strata/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

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
constexpr const char* kModifiedType = "strata_modified_llama";
// Written for modified models so tools that only know Llama refuse the checkpoint.
constexpr const char* kModifiedArchitecture = "StrataModifiedLlamaForCausalLM";

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
  if (c.model_type != "llama" && c.model_type != kModifiedType)
    field_error(source, "model_type",
                cat("model type '", c.model_type, "' is not supported (expected 'llama' or '", kModifiedType, "')"));
  if (const json* a = get(j, "architectures")) {
    if (!a->is_array()) field_error(source, "architectures", cat("expected a list of strings, got ", type_of(*a)));
    for (const json& e : *a)
      if (!e.is_string()) field_error(source, "architectures", "expected a list of strings");
    if (!a->empty()) c.architecture = (*a)[0].get<std::string>();
  }
  c.recipe = opt_string(j, "strata_recipe", c.model_type == kModifiedType ? "modified" : "llama", source);
  if (c.model_type == kModifiedType) {
    c.architecture = kModifiedArchitecture;  // whatever the file says: it is not a Llama
    c.attention = opt_string(j, "attention", c.attention, source);
    if (const json* d = get(j, "diff_attn")) {
      if (!d->is_object()) field_error(source, "diff_attn", cat("expected an object, got ", type_of(*d)));
      c.diff_layout = opt_string(*d, "layout", c.diff_layout, source);
      c.diff_subln = opt_bool(*d, "subln", c.diff_subln, source);
      const std::string scale = opt_string(*d, "out_scale", "one_minus_lambda_init", source);
      if (scale != "one_minus_lambda_init" && scale != "one")
        field_error(source, "diff_attn.out_scale", cat("'", scale, "' is not one_minus_lambda_init or one"));
      c.diff_out_scale = scale == "one_minus_lambda_init";
      const std::string li = opt_string(*d, "lambda_init", "paper", source);
      if (li != "paper" && li != "zero") field_error(source, "diff_attn.lambda_init", cat("'", li, "' is not paper or zero"));
      c.diff_lambda_init_zero = li == "zero";
    }
    c.ctx_mode = opt_string(j, "ctx_mode", c.ctx_mode, source);
    c.ada_rank = opt_int(j, "ada_rank", c.ada_rank, source);
    c.tm_kernel = opt_int(j, "tm_kernel", c.tm_kernel, source);
    c.se_reduction = opt_int(j, "se_reduction", c.se_reduction, source);
  }

  c.vocab_size = req_int(j, "vocab_size", source);
  c.hidden_size = req_int(j, "hidden_size", source);
  c.intermediate_size = req_int(j, "intermediate_size", source);
  c.num_hidden_layers = req_int(j, "num_hidden_layers", source);
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
  // Newer transformers write "dtype" instead of "torch_dtype".
  c.torch_dtype = opt_string(j, "torch_dtype", opt_string(j, "dtype", "float32", source), source);
  c.stop_at_bos = opt_bool(j, "strata_stop_at_bos", false, source);

  c.validate(source);
  return c;
}

void Config::validate(const std::string& source) const {
  if (model_type != "llama" && model_type != kModifiedType)
    field_error(source, "model_type",
                cat("model type '", model_type, "' is not supported (expected 'llama' or '", kModifiedType, "')"));
  if (recipe.empty()) field_error(source, "strata_recipe", "must not be empty");
  if ((recipe == "modified") != (model_type == kModifiedType))
    field_error(source, "model_type",
                cat("recipe '", recipe, "' goes with model_type '", recipe == "modified" ? kModifiedType : "llama", "'"));
  if (recipe == "modified") validate_modified(source);
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
  DType dt;
  if (!parse_dtype(torch_dtype, &dt))
    field_error(source, "torch_dtype", cat("dtype '", torch_dtype, "' is not supported (float32, bfloat16, float16)"));
}

void Config::validate_modified(const std::string& source) const {
  if (attention != "standard" && attention != "differential")
    field_error(source, "attention", cat("'", attention, "' is not standard or differential"));
  if (diff_layout != "paper" && diff_layout != "expanded")
    field_error(source, "diff_attn.layout", cat("'", diff_layout, "' is not paper or expanded"));
  if (attention == "differential" && diff_layout == "paper") {
    if (num_attention_heads % 2 != 0 || num_key_value_heads % 2 != 0)
      field_error(source, "num_key_value_heads",
                  "the paper layout of differential attention pairs heads: num_attention_heads and "
                  "num_key_value_heads must be even");
  }
  if (ctx_mode != "causal" && ctx_mode != "global")
    field_error(source, "ctx_mode", cat("'", ctx_mode, "' is not causal or global"));
  if (ada_rank < 0 || ada_rank > kMaxDim) field_error(source, "ada_rank", cat("must be in [0, ", kMaxDim, "]"));
  if (tm_kernel < 1 || tm_kernel > 8) field_error(source, "tm_kernel", cat("must be in 1..8 (got ", tm_kernel, ")"));
  if (se_reduction < 1 || hidden_size % se_reduction != 0)
    field_error(source, "se_reduction", cat(se_reduction, " does not divide hidden_size ", hidden_size));
}

std::string Config::to_json_text() const {
  ojson j;
  // A modified model never claims to be a LlamaForCausalLM.
  j["architectures"] = ojson::array({recipe == "modified" ? std::string(kModifiedArchitecture) : architecture});
  j["model_type"] = model_type;
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
  j["torch_dtype"] = torch_dtype;
  j["strata_recipe"] = recipe;
  j["strata_stop_at_bos"] = stop_at_bos;
  if (recipe == "modified") {
    j["attention"] = attention;
    j["diff_attn"] = ojson{{"layout", diff_layout},
                           {"subln", diff_subln},
                           {"out_scale", diff_out_scale ? "one_minus_lambda_init" : "one"},
                           {"lambda_init", diff_lambda_init_zero ? "zero" : "paper"}};
    j["ctx_mode"] = ctx_mode;
    j["ada_rank"] = ada_rank;
    j["tm_kernel"] = tm_kernel;
    j["se_reduction"] = se_reduction;
  }
  return j.dump(2) + "\n";
}

Config llama_config(int64_t vocab, int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv,
                    int64_t max_pos, bool tied) {
  Config c;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv;
  c.head_dim = heads > 0 ? hidden / heads : 0;
  c.max_position_embeddings = max_pos;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = tied;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

std::vector<std::string> preset_names() {
  return {"tinyllama-1.1b", "stories260k", "stories15m", "tiny", "tiny-tied",
          "tinyllama-1.1b-modified", "tinyllama-1.1b-modified-nodiff", "tiny-modified", "stories260k-modified"};
}

namespace {

// The modified decoder on top of a Llama shape, with the from-scratch inits of
// differential attention (paper layout, subln, (1 - lambda_init) scale, paper
// lambda_init). docs/modified-decoder.md lists the presets and their counts.
Config modified_preset(const Config& base, const std::string& attention, int64_t ada_rank, int64_t se_reduction) {
  Config c = base;
  c.model_type = kModifiedType;
  c.architecture = kModifiedArchitecture;
  c.recipe = "modified";
  c.attention = attention;
  c.diff_layout = "paper";
  c.diff_subln = true;
  c.diff_out_scale = true;
  c.diff_lambda_init_zero = false;
  c.ada_rank = ada_rank;
  c.se_reduction = se_reduction;
  return c;
}

}  // namespace

Config preset_config(const std::string& name) {
  Config c;
  if (name == "tinyllama-1.1b") {
    c = llama_config(32000, 2048, 5632, 22, 32, 4, 2048, false);
    c.torch_dtype = "bfloat16";
  } else if (name == "stories260k") {
    c = llama_config(512, 64, 172, 5, 8, 4, 512, true);
    c.stop_at_bos = true;  // llama2.c models end a sample with BOS
  } else if (name == "stories15m") {
    c = llama_config(32000, 288, 768, 6, 6, 6, 256, true);
    c.stop_at_bos = true;
  } else if (name == "tiny") {
    c = llama_config(512, 64, 160, 2, 4, 2, 256, false);
  } else if (name == "tiny-tied") {
    c = llama_config(512, 64, 160, 2, 4, 2, 256, true);
  } else if (name == "tinyllama-1.1b-modified") {
    c = modified_preset(preset_config("tinyllama-1.1b"), "differential", 64, 16);
  } else if (name == "tinyllama-1.1b-modified-nodiff") {
    c = modified_preset(preset_config("tinyllama-1.1b"), "standard", 64, 16);
  } else if (name == "tiny-modified") {
    c = modified_preset(preset_config("tiny"), "differential", 8, 4);
  } else if (name == "stories260k-modified") {
    c = modified_preset(preset_config("stories260k"), "differential", 16, 4);
  } else {
    std::string names;
    for (const std::string& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    fail("unknown preset '", name, "' (known presets: ", names, ")");
  }
  c.validate("preset " + name);
  return c;
}

}  // namespace strata
