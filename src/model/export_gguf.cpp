#include "model/export_gguf.h"

#include <map>
#include <set>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "kernels/quant.h"
#include "model/stack.h"
#include "strata/error.h"
#include "text/spm_proto.h"

namespace strata {

namespace {

// llama.cpp's file types (general.file_type).
uint32_t llama_file_type(const std::string& type) {
  static const std::map<std::string, uint32_t> kTypes = {{"f32", 0},  {"f16", 1},  {"q4_0", 2},
                                                        {"q8_0", 7}, {"q4_k_m", 15}, {"bf16", 32}};
  return kTypes.at(type);
}

// llama.cpp's rule for the layers that get more bits in the _M mixes: the
// first and last eighth, and every third layer between.
bool use_more_bits(int64_t layer, int64_t layers) {
  return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

int64_t layer_of(const std::string& name) {
  const std::string pre = "model.layers.";
  if (!name.starts_with(pre)) return -1;
  const size_t dot = name.find('.', pre.size());
  if (dot == std::string::npos) return -1;
  return std::stoll(name.substr(pre.size(), dot - pre.size()));
}

// HF names -> llama.cpp names for a plain Llama (empty if the name has none).
std::string llama_cpp_name(const std::string& name) {
  static const std::map<std::string, std::string> kGlobal = {{"model.embed_tokens.weight", "token_embd.weight"},
                                                            {"model.norm.weight", "output_norm.weight"},
                                                            {"lm_head.weight", "output.weight"}};
  static const std::map<std::string, std::string> kLayer = {
      {"input_layernorm.weight", "attn_norm.weight"},      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},        {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},   {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},         {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"}};
  if (auto it = kGlobal.find(name); it != kGlobal.end()) return it->second;
  const int64_t layer = layer_of(name);
  if (layer < 0) return {};
  const std::string rest = name.substr(name.find('.', 13) + 1);
  auto it = kLayer.find(rest);
  return it == kLayer.end() ? std::string() : cat("blk.", layer, ".", it->second);
}

void add_tokenizer(GgufWriter& w, const Tokenizer& tok, bool add_bos) {
  const text::SpmVocab v = text::parse_spm(tok.spm_model_proto(), tok.path());
  std::vector<GgufValue> tokens, scores, types;
  for (const auto& p : v.pieces) {
    tokens.push_back(GgufValue::str(p.text));
    scores.push_back(GgufValue::f32(p.score));
    types.push_back(GgufValue::i32(static_cast<int32_t>(p.type)));
  }
  w.set("tokenizer.ggml.model", GgufValue::str("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::array(GgufType::String, std::move(tokens)));
  w.set("tokenizer.ggml.scores", GgufValue::array(GgufType::F32, std::move(scores)));
  w.set("tokenizer.ggml.token_type", GgufValue::array(GgufType::I32, std::move(types)));
  if (v.bos_id >= 0) w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<uint32_t>(v.bos_id)));
  if (v.eos_id >= 0) w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<uint32_t>(v.eos_id)));
  if (v.unk_id >= 0) w.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(static_cast<uint32_t>(v.unk_id)));
  if (v.pad_id >= 0) w.set("tokenizer.ggml.padding_token_id", GgufValue::u32(static_cast<uint32_t>(v.pad_id)));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(add_bos));
  w.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(false));
  w.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(v.add_dummy_prefix));
}

}  // namespace

bool is_gguf_file_type(const std::string& type) {
  for (const char* t : kGgufFileTypes)
    if (type == t) return true;
  return false;
}

DType gguf_tensor_type(const std::string& type, const Shape& shape, const TensorRole& role) {
  if (!role.matrix || shape.size() != 2) return DType::F32;
  if (type == "f32") return DType::F32;
  if (type == "f16") return DType::F16;
  if (type == "bf16") return DType::BF16;
  DType want;
  if (type == "q8_0") want = DType::Q8_0;
  else if (type == "q4_0") want = role.head ? DType::Q6_K : DType::Q4_0;
  else if (type == "q4_k_m") want = role.head || role.more_bits ? DType::Q6_K : DType::Q4_K;
  else fail("unknown GGUF file type '", type, "'");
  const int64_t cols = shape.back();
  if (cols % dtype_block(want) == 0) return want;
  // llama.cpp's fallbacks for rows that are not whole super-blocks.
  const DType fallback = want == DType::Q4_K ? DType::Q5_0 : DType::Q8_0;
  return cols % quant::kBlock == 0 ? fallback : DType::F16;
}

GgufExportResult write_model_gguf(const std::string& path, const Config& cfg, const NamedTensors& tensors,
                                  const Tokenizer* tok, bool add_bos, const std::string& type, const std::string& name,
                                  const std::string& chat_template) {
  if (!is_gguf_file_type(type)) fail("--type '", type, "': expected f32, f16, bf16, q8_0, q4_0 or q4_k_m");
  std::set<std::string> matrices;
  for (const DeclaredParam& p : declared_params(cfg))
    if (p.decl.matrix) matrices.insert(p.decl.name);
  bool llama = cfg.recipe == "llama" && !cfg.has_hypernet();
  for (const auto& [n, t] : tensors) llama = llama && !llama_cpp_name(n).empty();
  const bool has_head = std::any_of(tensors.begin(), tensors.end(), [](const auto& p) { return p.first == "lm_head.weight"; });

  GgufWriter w;
  GgufExportResult r;
  r.architecture = llama ? "llama" : "strata";
  w.set("general.architecture", GgufValue::str(r.architecture));
  w.set("general.name", GgufValue::str(name));
  w.set("general.file_type", GgufValue::u32(llama_file_type(type)));
  if (type.starts_with("q")) w.set("general.quantization_version", GgufValue::u32(2));
  w.set("general.alignment", GgufValue::u32(32));
  if (!chat_template.empty()) w.set("tokenizer.chat_template", GgufValue::str(chat_template));
  if (llama) {
    auto u32 = [](int64_t v) { return GgufValue::u32(static_cast<uint32_t>(v)); };
    w.set("llama.context_length", u32(cfg.max_position_embeddings));
    w.set("llama.embedding_length", u32(cfg.hidden_size));
    w.set("llama.block_count", u32(cfg.num_hidden_layers));
    w.set("llama.feed_forward_length", u32(cfg.intermediate_size));
    w.set("llama.rope.dimension_count", u32(cfg.head_dim));
    w.set("llama.attention.head_count", u32(cfg.num_attention_heads));
    w.set("llama.attention.head_count_kv", u32(cfg.num_key_value_heads));
    w.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(static_cast<float>(cfg.rms_norm_eps)));
    w.set("llama.rope.freq_base", GgufValue::f32(static_cast<float>(cfg.rope_theta)));
    w.set("llama.vocab_size", u32(cfg.vocab_size));
  } else {
    Config stored = cfg;
    stored.torch_dtype = type == "bf16" ? "bfloat16" : "float32";
    w.set("strata.config", GgufValue::str(stored.to_json_text()));
  }
  if (tok && tok->kind() == TokenizerKind::kSentencePiece) {
    add_tokenizer(w, *tok, add_bos);
    r.tokenizer_embedded = true;
  }

  std::vector<Tensor> keep;  // the converted tensors live until the file is written
  keep.reserve(tensors.size());
  for (const auto& [n, t] : tensors) {
    TensorRole role;
    role.matrix = matrices.count(n) > 0;
    role.head = n == "lm_head.weight" || (!has_head && n == "model.embed_tokens.weight");
    const int64_t layer = layer_of(n);
    role.more_bits = layer >= 0 && (n.ends_with("self_attn.v_proj.weight") || n.ends_with("mlp.down_proj.weight")) &&
                     use_more_bits(layer, cfg.num_hidden_layers);
    Tensor src = t;
    std::string out_name = n;
    if (llama) {
      out_name = llama_cpp_name(n);
      // llama.cpp rotates interleaved pairs: q/k rows go back to Meta's order.
      if (n.ends_with("self_attn.q_proj.weight")) src = permute_rows_interleaved(t, cfg.num_attention_heads, false);
      if (n.ends_with("self_attn.k_proj.weight")) src = permute_rows_interleaved(t, cfg.num_key_value_heads, false);
    }
    const DType want = gguf_tensor_type(type, t.shape, role);
    keep.push_back(src.dtype == want ? src : src.to(want));
    r.bytes += static_cast<int64_t>(keep.back().nbytes());
    w.add_tensor(out_name, keep.back());
  }
  w.write(path);
  return r;
}

}  // namespace strata
