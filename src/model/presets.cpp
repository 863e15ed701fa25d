// Built-in configurations (`strata init --preset`, `info --preset`, `bench --preset`).
#include <functional>
#include <utility>

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
