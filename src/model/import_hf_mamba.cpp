// Hugging Face Mamba configs (MambaConfig's config.json) as strata configs,
// and the refusal of PyTorch pickles. The tensor names are mapped in
// import_samba.cpp with the lit-gpt ones.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "model/import_samba.h"
#include "model/layers.h"
#include "model/recipes.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Mamba has no position limit; this is only the default `ppl` window and the
// length `info` reports decode-state sizes at.
constexpr int64_t kMambaContext = 2048;

const json* field(const json& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

[[noreturn]] void field_error(const std::string& src, const std::string& f, const std::string& what) {
  fail(src, ": field '", f, "': ", what);
}

int64_t int_field(const json& j, const char* name, const std::string& src, const int64_t* def = nullptr,
                  const char* alias = nullptr) {
  const json* v = field(j, name);
  if (!v && alias) v = field(j, alias);  // mamba_ssm's own names (d_model, n_layer)
  if (!v) {
    if (def) return *def;
    field_error(src, name, "is missing");
  }
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_float() && v->get<double>() == std::floor(v->get<double>()) && std::fabs(v->get<double>()) < 1e15)
    return static_cast<int64_t>(v->get<double>());
  field_error(src, name, cat("expected an integer, got ", v->dump()));
}

int64_t int_or(const json& j, const char* name, int64_t def, const std::string& src) {
  return int_field(j, name, src, &def);
}

bool bool_or(const json& j, const char* name, bool def, const std::string& src) {
  const json* v = field(j, name);
  if (!v) return def;
  if (!v->is_boolean()) field_error(src, name, cat("expected true or false, got ", v->type_name()));
  return v->get<bool>();
}

double number_or(const json& j, const char* name, double def, const std::string& src) {
  const json* v = field(j, name);
  if (!v) return def;
  if (!v->is_number()) field_error(src, name, cat("expected a number, got ", v->type_name()));
  return v->get<double>();
}

int32_t token_id(const json& v, const std::string& src, const char* name) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
    field_error(src, name, cat("expected a token id, got ", v.dump()));
  return static_cast<int32_t>(v.get<int64_t>());
}

// The HF field that sets each Mamba module option, for errors.
std::string hf_field_of(const std::string& option) {
  if (option == "d_state") return "state_size";
  if (option == "d_conv") return "conv_kernel";
  if (option == "dt_rank") return "time_step_rank";
  if (option == "conv_bias") return "use_conv_bias";
  if (option == "dt_min") return "time_step_min";
  if (option == "dt_max") return "time_step_max";
  if (option == "dt_init_floor") return "time_step_floor";
  if (option == "dt_scale") return "time_step_scale";
  return option;
}

bool has_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// torch.save writes a zip archive (PyTorch >= 1.6) or a bare pickle (protocol
// 2+, then a non-zero opcode; a llama2.c header starting 80 02 has zeros next).
bool pickle_header(const std::string& path) {
  unsigned char b[4] = {0, 0, 0, 0};
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  const size_t n = std::fread(b, 1, 4, f);
  std::fclose(f);
  if (n == 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4) return true;
  return n >= 3 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5 && b[2] != 0;
}

}  // namespace

bool is_hf_mamba_config(const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;  // Config::from_json_text reports it
  if (const json* t = field(j, "model_type")) return t->is_string() && *t == "mamba";
  if (const json* a = field(j, "architectures"))
    return a->is_array() && !a->empty() && (*a)[0].is_string() && (*a)[0] == "MambaForCausalLM";
  return false;
}

Config hf_mamba_config(const std::string& text, const std::string& src) {
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object()) fail(src, ": invalid JSON (expected an object)");
  if (bool_or(j, "use_bias", false, src))
    field_error(src, "use_bias", "true (biases on in_proj and out_proj) is not supported: strata's Mamba has none");
  if (const json* act = field(j, "hidden_act"); act && *act != "silu")
    field_error(src, "hidden_act", cat(act->dump(), " is not supported (expected \"silu\")"));
  if (!bool_or(j, "rms_norm", true, src)) field_error(src, "rms_norm", "false (LayerNorm) is not supported");

  const int64_t d = int_field(j, "hidden_size", src, nullptr, "d_model");
  const int64_t layers = int_field(j, "num_hidden_layers", src, nullptr, "n_layer");
  const int64_t pad = int_or(j, "pad_vocab_size_multiple", 1, src);
  if (pad <= 0) field_error(src, "pad_vocab_size_multiple", "must be positive");
  const int64_t vocab = (int_field(j, "vocab_size", src) + pad - 1) / pad * pad;
  const int64_t expand = int_or(j, "expand", 2, src);
  if (const json* inter = field(j, "intermediate_size"); inter && int_field(j, "intermediate_size", src) != expand * d)
    field_error(src, "intermediate_size", cat(inter->dump(), " is not expand x hidden_size = ", expand * d));
  if (d <= 0 || d % 2 != 0) field_error(src, "hidden_size", cat("must be positive and even (got ", d, ")"));

  int64_t dt_rank = 0;  // "auto": the module's own ceil(d / 16)
  if (const json* r = field(j, "time_step_rank"); r && !(r->is_string() && *r == "auto")) {
    if (r->is_string()) field_error(src, "time_step_rank", cat("expected \"auto\" or an integer, got ", r->dump()));
    dt_rank = int_field(j, "time_step_rank", src);
  }
  json opts = {{"d_state", int_or(j, "state_size", 16, src)},
               {"d_conv", int_or(j, "conv_kernel", 4, src)},
               {"expand", expand},
               {"dt_rank", dt_rank},
               {"conv_bias", bool_or(j, "use_conv_bias", true, src)}};
  // Init settings: they matter only to training from a random init.
  const std::pair<const char*, const char*> init_fields[] = {
      {"time_step_min", "dt_min"}, {"time_step_max", "dt_max"}, {"time_step_floor", "dt_init_floor"},
      {"time_step_scale", "dt_scale"}};
  for (const auto& [hf, opt] : init_fields)
    if (field(j, hf)) opts[opt] = number_or(j, hf, 0.0, src);
  SublayerConf mamba;
  mamba.mixer = parse_module("mamba", opts, [&](const std::string& o) { return cat(src, ": field '", hf_field_of(o), "'"); });
  mamba.norm = default_module("rmsnorm");

  // num_attention_heads is unused by a pure-Mamba model but a strata config
  // needs one: a single head of width hidden_size.
  Config c = llama_config(vocab, d, expand * d, layers, 1, 1, kMambaContext,
                          bool_or(j, "tie_word_embeddings", true, src));  // HF's default ties
  c.rms_norm_eps = number_or(j, "layer_norm_epsilon", 1e-5, src);
  // residual_in_fp32 is accepted either way: strata's residual stream is F32.
  (void)bool_or(j, "residual_in_fp32", true, src);
  c.bos_token_id = field(j, "bos_token_id") ? token_id(*field(j, "bos_token_id"), src, "bos_token_id") : 0;
  c.eos_token_ids = {0};
  if (const json* e = field(j, "eos_token_id")) {
    c.eos_token_ids.clear();
    if (e->is_array()) {
      for (const json& x : *e) c.eos_token_ids.push_back(token_id(x, src, "eos_token_id"));
    } else {
      c.eos_token_ids.push_back(token_id(*e, src, "eos_token_id"));
    }
  }
  if (const json* t = field(j, "torch_dtype"); t && t->is_string()) c.torch_dtype = t->get<std::string>();
  c.init_scheme = "mamba";
  set_layers(c, "mamba", {{mamba}});
  c.validate(src);
  return c;
}

void refuse_torch_pickle(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    if (has_file(p / "model.safetensors") || has_file(p / "model.safetensors.index.json")) return;
    for (const char* name : {"pytorch_model.bin", "pytorch_model.bin.index.json"})
      if (has_file(p / name))
        fail(path, ": holds PyTorch pickles (", name, ") and no model.safetensors; strata reads safetensors only: ",
             "convert with /usr/bin/python3 scripts/pth_to_safetensors.py ", (p / "pytorch_model.bin").string(), " -o ",
             (p / "model.safetensors").string());
    return;
  }
  if (!fs::is_regular_file(p, ec)) return;
  const std::string ext = p.extension().string();
  if (ext == ".safetensors") return;  // its header length could start like a pickle
  if (ext == ".pth" || ext == ".pt" || ext == ".ckpt" || pickle_header(path))
    fail(path, ": a PyTorch pickle (torch.save), which strata does not read (unpickling can run code): convert it with ",
         "/usr/bin/python3 scripts/pth_to_safetensors.py ", path, " -o OUT.safetensors");
}

}  // namespace strata
