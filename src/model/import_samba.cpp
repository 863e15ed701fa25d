// lit-gpt (microsoft/Samba) and Hugging Face Mamba tensors under strata's
// names. Both go through one plan: for every parameter the config declares
// (stack.h), the foreign tensor it comes from, so "missing", "extra" and
// "wrong shape" are checked once, against the names the user's file has.
#include "model/import_samba.h"

#include <cstring>
#include <filesystem>
#include <functional>
#include <set>

#include "io/safetensors.h"
#include "model/layers.h"
#include "model/stack.h"
#include "strata/error.h"

namespace strata {

namespace {

namespace fs = std::filesystem;

// lit-gpt config name -> the strata preset of the same model (spec §1.3/§1.4).
const std::vector<std::pair<std::string, std::string>> kLitGptConfigs = {
    {"Samba_421M", "samba-421m"},
    {"Samba_1.3B", "samba-1.3b"},
    {"LLaMA_438M", "llama-438m"},
    {"LLaMA_438M_SWA", "llama-438m-swa"},
    {"Mamba_430M", "mamba-432m"},
    {"Mamba_1.3B", "mamba-1.3b"},
    {"Mamba_SWA_MLP_400M", "mamba-swa-mlp-400m"},
    {"Samba_421M_abl_mamba", "mlp2-swa-mlp-417m"},
    {"Samba_421M_nope", "samba-421m-nope"},
    {"Samba_421M_gqa2", "samba-421m-gqa2"},
    {"Samba_421M_mqa6", "samba-421m-mqa6"},
    {"Samba_421M_mqa", "samba-421m-mqa"},
    {"Samba_421M_gqa4", "samba-421m-gqa4"},
    {"LLaMA_438M_SWA_gla", "sliding-gla-438m"},
    {"LLaMA_1.2B_SWA_gla", "sliding-gla-1.2b"},
    {"LLaMA_446M_SWA_ret", "sliding-retnet-446m"},
    {"LLaMA_1.4B_SWA_ret", "sliding-retnet-1.4b"},
};

constexpr int64_t kLitGptPadding = 64;  // padding_multiple of every Samba config

// The foreign module names of one sub-layer.
struct SubNames {
  std::string norm, mixer;
};

// A foreign checkpoint layout: the model-level names and, per layer, the
// names of its sub-layers' norms and mixers (or an error when a layer has no
// counterpart there).
struct Layout {
  std::string what;  // for messages: "the lit-gpt layout of tiny-samba"
  std::string embed, final_norm, head;
  std::function<std::vector<SubNames>(int64_t layer, const LayerConf& l)> layer;
};

// Where one strata parameter comes from.
struct Entry {
  std::string name;  // strata's
  Shape shape;
  std::string src;   // the foreign tensor
  int part = -1;     // rows of a fused grouped QKV: 0 q, 1 k, 2 v
};

bool is_kind(const SublayerConf& s, const char* kind) { return s.mixer.kind == kind; }

// The foreign name of parameter `suffix` (e.g. "gate_proj.weight") of a module
// of `kind` whose foreign prefix is `fp`.
Entry foreign_param(const std::string& kind, const std::string& fp, const std::string& suffix) {
  Entry e;
  if (kind == "rmsnorm" || kind == "mamba" || kind == "gla" || kind == "retnet") {  // their own names everywhere
    e.src = fp + "." + suffix;
  } else if (kind == "mlp") {  // xformers SwiGLU: w1 gate, w2 up, w3 down
    const char* w = suffix == "gate_proj.weight" ? "w1" : suffix == "up_proj.weight" ? "w2" : "w3";
    e.src = fp + ".swiglu." + w + ".weight";
  } else if (kind == "attention") {
    if (suffix == "o_proj.weight") {
      e.src = fp + ".proj.weight";
    } else {
      e.src = fp + ".attn.weight";
      e.part = suffix == "q_proj.weight" ? 0 : suffix == "k_proj.weight" ? 1 : 2;
    }
  } else {
    fail("module kind '", kind, "' has no foreign name");  // excluded by the layouts
  }
  return e;
}

std::vector<Entry> plan(const Config& cfg, const Layout& lay) {
  struct Owner {
    std::string kind, prefix, foreign;
  };
  std::vector<std::vector<Owner>> owners(static_cast<size_t>(cfg.num_hidden_layers));
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::vector<BlockSpec> blocks = layer_blocks(cfg, l);
    const std::vector<SubNames> names = lay.layer(l, cfg.layers.layer(l));
    for (size_t s = 0; s < blocks.size(); ++s) {
      if (blocks[s].post || blocks[s].norm.kind != "rmsnorm")
        fail(lay.what, ": layer ", l, " ", describe_layer(cfg.layers.layer(l)), " has modules with no counterpart there");
      owners[l].push_back({blocks[s].norm.kind, blocks[s].norm.prefix, names[s].norm});
      owners[l].push_back({blocks[s].mixer.kind, blocks[s].mixer.prefix, names[s].mixer});
    }
  }
  const std::string final_norm = final_norm_spec(cfg).prefix + ".weight";
  std::vector<Entry> r;
  for (const DeclaredParam& p : declared_params(cfg)) {
    const std::string& n = p.decl.name;
    Entry e;
    if (n == kEmbedName) {
      e.src = lay.embed;
    } else if (n == kHeadName) {
      e.src = lay.head;
    } else if (n == final_norm) {
      e.src = lay.final_norm;
    } else {
      // model.layers.N.<module>.<suffix>
      const size_t start = std::strlen("model.layers.");
      const int64_t l = std::stoll(n.substr(start, n.find('.', start) - start));
      const Owner* o = nullptr;
      for (const Owner& cand : owners.at(static_cast<size_t>(l)))
        if (n.compare(0, cand.prefix.size() + 1, cand.prefix + ".") == 0) o = &cand;
      if (!o) fail("parameter '", n, "' belongs to no module of layer ", l);
      e = foreign_param(o->kind, o->foreign, n.substr(o->prefix.size() + 1));
    }
    e.name = n;
    e.shape = p.decl.shape;
    r.push_back(std::move(e));
  }
  return r;
}

// Part `part` (0 q, 1 k, 2 v) of a fused projection grouped per KV group:
// group g holds [q heads g·r .. g·r+r-1, k_g, v_g], r = H / H_kv (spec §3.1).
Tensor split_qkv(const Tensor& fused, const Config& c, int part) {
  const int64_t H = c.num_attention_heads, G = c.num_key_value_heads, hd = c.head_dim, r = H / G;
  const int64_t rows_per_group = part == 0 ? r * hd : hd;
  Tensor out = Tensor::alloc(fused.dtype, {G * rows_per_group, fused.dim(1)});
  const size_t row_bytes = static_cast<size_t>(fused.dim(1)) * dtype_size(fused.dtype);
  const char* src = static_cast<const char*>(fused.data);
  char* dst = static_cast<char*>(out.data);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t from = g * (r + 2) * hd + (part == 0 ? 0 : part == 1 ? r * hd : (r + 1) * hd);
    std::memcpy(dst + g * rows_per_group * row_bytes, src + from * row_bytes, rows_per_group * row_bytes);
  }
  return out;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

WeightSet remap(const Config& cfg, const Layout& lay, const WeightSet& src) {
  const std::string origin = src.origin.empty() ? std::string("<checkpoint>") : src.origin;
  WeightSet out;
  out.origin = src.origin;
  std::set<std::string> used;
  for (const Entry& e : plan(cfg, lay)) {
    const Tensor* t = src.find(e.src);
    if (!t) fail(origin, ": missing tensor '", e.src, "' (", lay.what, ")");
    used.insert(e.src);
    Shape want = e.shape;
    if (e.part >= 0) want = {(cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim, cfg.hidden_size};
    if (t->shape != want)
      fail(src.source_of(e.src), ": tensor '", e.src, "' has shape ", shape_str(t->shape), ", expected ",
           shape_str(want), " (", lay.what, ")");
    out.add(e.name, e.part >= 0 ? split_qkv(*t, cfg, e.part) : *t, src.source_of(e.src));
  }
  if (cfg.tie_word_embeddings) {
    // Tied models store the head too (lit-gpt's state dict has both keys); it
    // must be the embedding itself.
    if (const Tensor* h = src.find(lay.head)) {
      const Tensor* emb = src.find(lay.embed);
      if (!emb || !same_bits(*h, *emb))
        fail(src.source_of(lay.head), ": tensor '", lay.head, "' differs from '", lay.embed, "', but ", lay.what,
             " ties the embeddings");
      used.insert(lay.head);
    }
  }
  for (const auto& [name, t] : src.tensors)
    if (!used.count(name)) fail(src.source_of(name), ": unexpected tensor '", name, "' (", lay.what, ")");
  return out;
}

// lit-gpt's blocks (spec §1.2, §1.4): Block [mixer, mlp] with norm_1/attn/
// norm_2/mlp (the mixer is `attn` whatever it is: attention, Mamba, or the
// wide MLP of the abl_mamba ablation), the Mamba-SWA-MLP block with
// norm_m/mb/norm_attn/attn/norm_2/mlp, and pure Mamba's MBlock norm/mixer.
std::vector<SubNames> litgpt_layer(const std::string& what, int64_t l, const LayerConf& layer) {
  const std::string p = cat("transformer.h.", l, ".");
  auto any_of = [](const SublayerConf& s, std::initializer_list<const char*> kinds) {
    for (const char* k : kinds)
      if (is_kind(s, k)) return true;
    return false;
  };
  if (layer.size() == 1 && is_kind(layer[0], "mamba")) return {{p + "norm", p + "mixer"}};
  if (layer.size() == 2 && any_of(layer[0], {"mamba", "gla", "retnet", "attention", "mlp"}) && is_kind(layer[1], "mlp"))
    return {{p + "norm_1", p + "attn"}, {p + "norm_2", p + "mlp"}};
  if (layer.size() == 3 && is_kind(layer[0], "mamba") && is_kind(layer[1], "attention") && is_kind(layer[2], "mlp"))
    return {{p + "norm_m", p + "mb"}, {p + "norm_attn", p + "attn"}, {p + "norm_2", p + "mlp"}};
  fail(what, ": layer ", l, " ", describe_layer(layer),
       " has no lit-gpt block (known: [mamba], [mamba|gla|retnet|attention|mlp, mlp], [mamba, attention, mlp])");
}

Layout litgpt_layout(const std::string& what) {
  Layout lay;
  lay.what = what;
  lay.embed = "transformer.wte.weight";
  lay.final_norm = "transformer.ln_f.weight";
  lay.head = "lm_head.weight";
  lay.layer = [what](int64_t l, const LayerConf& layer) { return litgpt_layer(what, l, layer); };
  return lay;
}

// HF MambaForCausalLM: backbone.layers.N.{norm, mixer}.
std::vector<SubNames> hf_mamba_layer(int64_t l, const LayerConf& layer) {
  if (layer.size() != 1 || !is_kind(layer[0], "mamba")) fail("an HF Mamba model has [mamba] layers only");
  const std::string p = cat("backbone.layers.", l, ".");
  return {{p + "norm", p + "mixer"}};
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& litgpt_configs() { return kLitGptConfigs; }

Config litgpt_config(const std::string& name) {
  std::string preset;
  for (const auto& [lit, strata_name] : kLitGptConfigs)
    if (name == lit) preset = strata_name;
  if (preset.empty()) {
    for (const std::string& p : preset_names())
      if (name == p) preset = p;
  }
  if (preset.empty()) {
    std::string known;
    for (const auto& [lit, s] : kLitGptConfigs) known += (known.empty() ? "" : ", ") + lit;
    fail("unknown lit-gpt config '", name, "' (known: ", known, "; or any strata preset, see strata info --preset)");
  }
  Config c = preset_config(preset);
  c.vocab_size = (c.vocab_size + kLitGptPadding - 1) / kLitGptPadding * kLitGptPadding;
  c.validate("lit-gpt config " + name);
  return c;
}

WeightSet litgpt_to_strata(const Config& cfg, const WeightSet& litgpt) {
  return remap(cfg, litgpt_layout("the lit-gpt layout of this config"), litgpt);
}

Imported import_litgpt(const std::string& path, const std::string& config_name) {
  Imported r;
  r.config = litgpt_config(config_name);  // a bad name is reported before any file is read
  refuse_torch_pickle(path);
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) fail(path, ": not a file (a lit-gpt state dict as .safetensors is expected)");
  if (fs::path(path).extension() != ".safetensors")
    fail(path, ": expected a .safetensors file (scripts/pth_to_safetensors.py converts a lit-gpt .pth)");
  WeightSet src;
  read_safetensors(path, src);
  src.origin = path;
  if (const Tensor* e = src.find("transformer.wte.weight"))
    r.config.torch_dtype = e->dtype == DType::BF16 ? "bfloat16" : e->dtype == DType::F16 ? "float16" : "float32";
  r.weights = remap(r.config, litgpt_layout("the lit-gpt layout of " + config_name), src);
  return r;
}

WeightSet hf_mamba_to_strata(const Config& cfg, const WeightSet& hf) {
  Layout lay;
  lay.what = "an HF Mamba checkpoint with this config.json";
  lay.embed = "backbone.embeddings.weight";
  lay.final_norm = "backbone.norm_f.weight";
  lay.head = "lm_head.weight";
  lay.layer = hf_mamba_layer;
  return remap(cfg, lay, hf);
}

}  // namespace strata
