// A GGUF file as a checkpoint (docs/formats.md, "GGUF"):
//  - architecture "llama" as llama.cpp writes it: the config made from the
//    llama.* keys, tensors renamed from llama.cpp's names to the HF names the
//    engine uses, and q/k rows permuted from the interleaved RoPE layout
//    llama.cpp keeps to rotate_half (quantized rows are moved whole, so the
//    blocks stay as stored);
//  - architecture "strata": strata's own models (modified decoder, Samba
//    family, hypernetwork), config.json in `strata.config`, tensors under
//    strata's names, read back exactly.
// The tokenizer is the file itself (Tokenizer::load reads tokenizer.ggml.*).
#include <sys/mman.h>
#include <unistd.h>


#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "strata/error.h"

namespace strata {

namespace {

// Drops the whole pages of a mapped tensor from this process once its data
// has been copied elsewhere (the file stays in the page cache), so moving
// rows never holds two copies.
void release_pages(const Tensor& t) {
  if (!t.mapped) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data) + t.nbytes()) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

struct NameMap {
  const char* gguf;
  const char* hf;
};
// Per layer (blk.N.<gguf> <-> model.layers.N.<hf>).
constexpr NameMap kLayerNames[] = {{"attn_norm.weight", "input_layernorm.weight"},
                                   {"attn_q.weight", "self_attn.q_proj.weight"},
                                   {"attn_k.weight", "self_attn.k_proj.weight"},
                                   {"attn_v.weight", "self_attn.v_proj.weight"},
                                   {"attn_output.weight", "self_attn.o_proj.weight"},
                                   {"ffn_norm.weight", "post_attention_layernorm.weight"},
                                   {"ffn_gate.weight", "mlp.gate_proj.weight"},
                                   {"ffn_up.weight", "mlp.up_proj.weight"},
                                   {"ffn_down.weight", "mlp.down_proj.weight"}};
constexpr NameMap kGlobalNames[] = {{"token_embd.weight", "model.embed_tokens.weight"},
                                    {"output_norm.weight", "model.norm.weight"},
                                    {"output.weight", "lm_head.weight"}};

CheckpointFiles read_llama(const GgufFile& g) {
  const std::string& path = g.path();
  auto count = [&](const std::string& key) {
    const uint64_t v = g.get_uint(key);
    if (v == 0 || v > (uint64_t{1} << 24)) fail(path, ": key '", key, "': ", v, " is out of range");
    return static_cast<int64_t>(v);
  };
  const int64_t layers = count("llama.block_count"), dim = count("llama.embedding_length");
  const int64_t ffn = count("llama.feed_forward_length"), heads = count("llama.attention.head_count");
  const int64_t kv_heads = g.has("llama.attention.head_count_kv") ? count("llama.attention.head_count_kv") : heads;
  if (dim % heads != 0) fail(path, ": key 'llama.attention.head_count': ", heads, " heads do not divide ", dim);
  if (heads % kv_heads != 0)
    fail(path, ": key 'llama.attention.head_count_kv': ", kv_heads, " does not divide ", heads, " heads");
  const int64_t head_dim = dim / heads;
  for (const char* key : {"llama.rope.dimension_count", "llama.attention.key_length", "llama.attention.value_length"})
    if (g.has(key) && static_cast<int64_t>(g.get_uint(key)) != head_dim)
      fail(path, ": key '", key, "': ", g.get_uint(key), " (only full rotary heads of ", head_dim, " are supported)");
  const std::string scaling = g.get_string("llama.rope.scaling.type", "none");
  if (scaling != "none") fail(path, ": key 'llama.rope.scaling.type': '", scaling, "' RoPE scaling is not supported");
  if (g.find_tensor("rope_freqs.weight")) fail(path, ": tensor 'rope_freqs.weight': RoPE frequency factors are not supported");

  const GgufTensorInfo* embd = g.find_tensor("token_embd.weight");
  if (!embd) fail(path, ": missing tensor 'token_embd.weight'");
  const int64_t vocab = embd->shape.at(0);
  const bool tied = g.find_tensor("output.weight") == nullptr;
  const double theta = g.get_float("llama.rope.freq_base", 10000.0);
  const double eps = g.get_float("llama.attention.layer_norm_rms_epsilon", 1e-5);
  nlohmann::ordered_json cfg = {{"architectures", {"LlamaForCausalLM"}},
                                {"model_type", "llama"},
                                {"vocab_size", vocab},
                                {"hidden_size", dim},
                                {"intermediate_size", ffn},
                                {"num_hidden_layers", layers},
                                {"num_attention_heads", heads},
                                {"num_key_value_heads", kv_heads},
                                {"head_dim", head_dim},
                                {"max_position_embeddings", static_cast<int64_t>(g.get_uint("llama.context_length", 2048))},
                                {"rms_norm_eps", eps},
                                {"rope_theta", theta},
                                {"tie_word_embeddings", tied},
                                {"bos_token_id", static_cast<int64_t>(g.get_uint("tokenizer.ggml.bos_token_id", 1))},
                                {"eos_token_id", static_cast<int64_t>(g.get_uint("tokenizer.ggml.eos_token_id", 2))},
                                {"torch_dtype", "float32"}};

  CheckpointFiles ck;
  ck.format = "gguf";
  ck.config_json = cfg.dump(2) + "\n";
  ck.config_source = path;
  for (const GgufTensorInfo& ti : g.tensors()) {
    std::string name;
    for (const NameMap& m : kGlobalNames)
      if (ti.name == m.gguf) name = m.hf;
    int64_t layer = -1, q_heads = 0;
    if (name.empty() && ti.name.starts_with("blk.")) {
      const size_t dot = ti.name.find('.', 4);
      const std::string num = ti.name.substr(4, dot == std::string::npos ? 0 : dot - 4);
      if (!num.empty() && num.size() < 8 && num.find_first_not_of("0123456789") == std::string::npos) {
        layer = std::stoll(num);
        const std::string rest = ti.name.substr(dot + 1);
        for (const NameMap& m : kLayerNames)
          if (rest == m.gguf) name = cat("model.layers.", layer, ".", m.hf);
        if (rest == "attn_q.weight") q_heads = heads;
        if (rest == "attn_k.weight") q_heads = kv_heads;
      }
    }
    if (name.empty()) fail(path, ": tensor '", ti.name, "': not a tensor of a llama model");
    if (layer >= layers) fail(path, ": tensor '", ti.name, "': layer ", layer, " of a ", layers, "-layer model");
    Tensor t = g.tensor(ti);
    if (q_heads > 0) {
      Tensor moved = permute_rows_interleaved(t, q_heads, /*to_half=*/true, cat(path, ": tensor '", ti.name, "'"));
      release_pages(t);
      t = std::move(moved);
    }
    ck.weights.add(name, std::move(t), path);
  }
  return ck;
}

CheckpointFiles read_strata(const GgufFile& g, const ConfigCheck& on_config) {
  CheckpointFiles ck;
  ck.format = "gguf";
  ck.config_json = g.get_string("strata.config");
  ck.config_source = g.path() + " (key 'strata.config')";
  if (on_config) on_config(ck.config_json, ck.config_source);
  for (const GgufTensorInfo& ti : g.tensors()) ck.weights.add(ti.name, g.tensor(ti), g.path());
  return ck;
}

}  // namespace

CheckpointFiles read_gguf(const std::string& path, const ConfigCheck& on_config) {
  const GgufFile g = GgufFile::open(path);
  const std::string arch = g.get_string("general.architecture");
  CheckpointFiles ck;
  if (arch == "llama") ck = read_llama(g);
  else if (arch == "strata") ck = read_strata(g, on_config);
  else fail(path, ": key 'general.architecture': '", arch, "' models are not supported (llama and strata are)");
  ck.weights.origin = path;
  if (g.has("tokenizer.ggml.model")) ck.tokenizer_path = path;
  ck.add_bos = g.get_bool("tokenizer.ggml.add_bos_token", true);
  return ck;
}

}  // namespace strata
