// Built-in configurations (`strata init --preset`, `info --preset`, `bench --preset`).
#include <functional>
#include <utility>

#include "model/layers.h"
#include "model/recipes.h"
#include "strata/config.h"
#include "strata/error.h"

namespace strata {

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
  set_layers(c, "llama", llama_unit());
  return c;
}

namespace {

Config tinyllama() {
  Config c = llama_config(32000, 2048, 5632, 22, 32, 4, 2048, false);
  c.torch_dtype = "bfloat16";
  return c;
}

Config stories(int64_t vocab, int64_t dim, int64_t ffn, int64_t layers, int64_t heads, int64_t kv, int64_t ctx) {
  Config c = llama_config(vocab, dim, ffn, layers, heads, kv, ctx, true);
  c.stop_at_bos = true;  // llama2.c models end a sample with BOS
  return c;
}

// The modified decoder on top of a Llama shape, with the from-scratch inits of
// differential attention (paper layout, subln, (1 - lambda_init) scale, paper
// lambda_init). docs/modified-decoder.md lists the presets and their counts.
Config modified(const Config& base, const std::string& attention, int64_t ada_rank, int64_t se_reduction) {
  ModifiedRecipe r;
  r.attention = attention;
  r.ada_rank = ada_rank;
  r.se_reduction = se_reduction;
  return with_modified_layers(base, r);
}

// A Samba-family model (docs/samba.md): `blocks` layers of the recipe's
// unit, SlimPajama-style settings (eps 1e-5, theta 10000, trained at 4096).
// Samba-style configs tie the embeddings and use mamba_init; the Llama
// baselines untie them and use the NeoX init.
Config samba_family(const std::string& recipe, int64_t vocab, int64_t d, int64_t d_p, int64_t blocks, int64_t heads,
                    int64_t kv, bool mamba_init) {
  Config c = llama_config(vocab, d, d_p, blocks, heads, kv, 4096, mamba_init);
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.init_scheme = mamba_init ? "mamba" : "neox";
  c.training = {0.01, true};  // pretrain.py: warmup over 1% of the run, decay on every parameter
  set_layers(c, recipe, *samba_family_unit(recipe));
  return c;
}

// Samba with the Mamba sub-layer replaced by a SwiGLU MLP of width 2d.
Config mlp2_swa_mlp(int64_t vocab, int64_t d, int64_t d_p, int64_t blocks, int64_t heads) {
  Config c = samba_family("samba", vocab, d, d_p, blocks, heads, heads, true);
  LayerConf first = {sublayer("mlp", {{"intermediate_size", 2 * d}}), sublayer("mlp")};
  set_layers(c, "custom", {first, c.layers.unit[1]});
  return c;
}

// Samba 421M with H query and H_kv key/value heads and d_p 4608 (Table 6).
Config samba_421m_heads(int64_t heads, int64_t kv) {
  Config c = samba_family("samba", 32000, 1536, 4608, 12, heads, kv, true);
  return c;
}

// A tiny model of a recipe for tests: d 64, 4 heads / 2 KV heads, window 16.
Config tiny_of(const std::string& recipe, int64_t blocks) {
  Config c = samba_family(recipe, 512, 64, 128, blocks, 4, 2, recipe != "llama-swa");
  c.max_position_embeddings = 256;
  set_module_option(c.layers, "attention", "window", int64_t{16});
  return c;
}

Config with_hypernet(Config c, int64_t soft_tokens, int64_t layers, int64_t heads) {
  c.hypernet.soft_tokens = soft_tokens;
  c.hypernet.layers = layers;
  c.hypernet.heads = heads;
  c.hypernet.heads = c.hypernet.heads_for(c.hidden_size);  // (resolved, as config.json spells them out)
  c.hypernet.intermediate_size = c.hypernet.ffn_for(c.hidden_size);
  return c;
}

struct Preset {
  const char* name;
  std::function<Config()> make;
};

const std::vector<Preset>& presets() {
  static const std::vector<Preset> p = {
      {"tinyllama-1.1b", tinyllama},
      {"stories260k", [] { return stories(512, 64, 172, 5, 8, 4, 512); }},
      {"stories15m", [] { return stories(32000, 288, 768, 6, 6, 6, 256); }},
      {"tiny", [] { return llama_config(512, 64, 160, 2, 4, 2, 256, false); }},
      {"tiny-tied", [] { return llama_config(512, 64, 160, 2, 4, 2, 256, true); }},
      {"tinyllama-1.1b-modified", [] { return modified(tinyllama(), "differential", 64, 16); }},
      {"tinyllama-1.1b-modified-nodiff", [] { return modified(tinyllama(), "standard", 64, 16); }},
      {"tiny-modified", [] { return modified(llama_config(512, 64, 160, 2, 4, 2, 256, false), "differential", 8, 4); }},
      {"stories260k-modified", [] { return modified(stories(512, 64, 172, 5, 8, 4, 512), "differential", 16, 4); }},
      // Recursive soft prompting (docs/hypernet.md): 128 soft tokens, 2 layers.
      {"tinyllama-1.1b-hypernet", [] { return with_hypernet(tinyllama(), 128, 2, 0); }},
      {"tiny-hypernet", [] { return with_hypernet(llama_config(512, 64, 160, 2, 4, 2, 256, false), 8, 2, 4); }},
      {"stories260k-hypernet", [] { return with_hypernet(stories(512, 64, 172, 5, 8, 4, 512), 16, 2, 4); }},
      // The Samba family (docs/samba.md has the table with the counts).
      {"samba-421m", [] { return samba_family("samba", 32000, 1536, 4096, 12, 12, 12, true); }},
      {"samba-1.3b", [] { return samba_family("samba", 32000, 2304, 6144, 18, 18, 18, true); }},
      {"samba-1.7b", [] { return samba_family("samba", 50304, 2048, 8192, 24, 32, 4, true); }},
      {"samba-3.8b", [] { return samba_family("samba", 32064, 2816, 9984, 32, 11, 1, true); }},
      {"mamba-432m", [] { return samba_family("mamba", 32000, 1024, 4096, 60, 16, 16, true); }},
      {"mamba-1.3b", [] { return samba_family("mamba", 32000, 2048, 8192, 48, 16, 16, true); }},
      {"mamba-mlp-1.9b", [] { return samba_family("mamba-mlp", 50304, 2048, 8192, 24, 32, 4, true); }},
      {"mamba-swa-mlp-400m", [] { return samba_family("mamba-swa-mlp", 32000, 1536, 4096, 8, 12, 12, true); }},
      {"llama-438m", [] { return with_llama_layers(samba_family("llama-swa", 32000, 1536, 4096, 12, 12, 12, false)); }},
      {"llama-438m-swa", [] { return samba_family("llama-swa", 32000, 1536, 4096, 12, 12, 12, false); }},
      {"mistral-1.6b", [] { return samba_family("llama-swa", 50304, 2048, 8192, 24, 32, 4, false); }},
      {"mlp2-swa-mlp-417m", [] { return mlp2_swa_mlp(32000, 1536, 4096, 12, 12); }},
      // Sliding GLA / Sliding RetNet (docs/linear-attention.md): GLA at 438M
      // keeps the NeoX init and untied embeddings, the others mamba_init.
      {"sliding-gla-438m", [] { return samba_family("sliding-gla", 32000, 1536, 4096, 12, 12, 12, false); }},
      {"sliding-gla-1.2b", [] { return samba_family("sliding-gla", 32000, 2304, 6144, 18, 18, 18, true); }},
      {"sliding-retnet-446m", [] { return samba_family("sliding-retnet", 32000, 1536, 4096, 12, 12, 12, true); }},
      {"sliding-retnet-1.4b", [] { return samba_family("sliding-retnet", 32000, 2304, 6144, 18, 18, 18, true); }},
      {"samba-421m-nope",
       [] {
         Config c = samba_family("samba", 32000, 1536, 4096, 12, 12, 12, true);
         set_module_option(c.layers, "attention", "rope", false);
         c.recipe = "custom";
         return c;
       }},
      {"samba-421m-gqa2", [] { return samba_421m_heads(12, 2); }},
      {"samba-421m-mqa6", [] { return samba_421m_heads(6, 1); }},
      {"samba-421m-mqa", [] { return samba_421m_heads(12, 1); }},
      {"samba-421m-gqa4", [] { return samba_421m_heads(12, 4); }},
      {"tiny-samba", [] { return tiny_of("samba", 2); }},
      {"tiny-mamba", [] { return tiny_of("mamba", 3); }},
      {"tiny-mamba-mlp", [] { return tiny_of("mamba-mlp", 2); }},
      {"tiny-mamba-swa-mlp", [] { return tiny_of("mamba-swa-mlp", 2); }},
      {"tiny-llama-swa", [] { return tiny_of("llama-swa", 2); }},
      {"tiny-sliding-gla",
       [] {
         Config c = tiny_of("sliding-gla", 2);
         set_module_option(c.layers, "gla", "num_heads", int64_t{2});  // d / 384 would be 0
         return c;
       }},
      {"tiny-sliding-retnet", [] { return tiny_of("sliding-retnet", 2); }},
      {"tiny-mlp2-swa-mlp",
       [] {
         Config c = mlp2_swa_mlp(512, 64, 128, 2, 4);
         c.max_position_embeddings = 256;
         set_module_option(c.layers, "attention", "window", int64_t{16});
         return c;
       }},
  };
  return p;
}

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> r;
  for (const Preset& p : presets()) r.push_back(p.name);
  return r;
}

Config preset_config(const std::string& name) {
  for (const Preset& p : presets()) {
    if (name != p.name) continue;
    Config c = p.make();
    c.validate("preset " + name);
    return c;
  }
  std::string names;
  for (const std::string& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  fail("unknown preset '", name, "' (known presets: ", names, ")");
}

}  // namespace strata
