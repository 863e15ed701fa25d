// llama2.c legacy checkpoints and the interleaved <-> rotate_half q/k permutation.
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "io/checkpoint.h"
#include "strata/error.h"

namespace strata {

namespace {

// Row permutation shared by both directions: out[dst(h, j, i)] = in[src(h, j, i)].
// `keep_dtype`: whole rows are moved as stored (quantized rows included);
// otherwise they are widened to F32 on the way.
Tensor permute_rows(const Tensor& w, int64_t n_heads, bool to_half, bool keep_dtype, const std::string& where) {
  if (w.shape.size() != 2) fail(where, ": expected a 2-D weight, got shape ", shape_str(w.shape));
  const int64_t rows = w.shape[0], cols = w.shape[1];
  if (n_heads <= 0 || rows % n_heads != 0) fail(where, ": ", n_heads, " heads do not divide ", rows, " rows");
  const int64_t d = rows / n_heads;
  if (d % 2 != 0) fail(where, ": head size ", d, " is odd");
  Tensor out = Tensor::alloc(keep_dtype ? w.dtype : DType::F32, w.shape);
  const uint8_t* src = static_cast<const uint8_t*>(w.data);
  uint8_t* dst = static_cast<uint8_t*>(out.data);
  const size_t in_row = row_bytes(w.dtype, cols), out_row = row_bytes(out.dtype, cols);
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t j = 0; j < 2; ++j) {
      for (int64_t i = 0; i < d / 2; ++i) {
        const int64_t half = h * d + j * (d / 2) + i;  // rotate_half (HF) row
        const int64_t inter = h * d + 2 * i + j;       // interleaved (Meta) row
        const int64_t from = to_half ? inter : half, to = to_half ? half : inter;
        const uint8_t* row = src + static_cast<size_t>(from) * in_row;
        if (keep_dtype) std::memcpy(dst + static_cast<size_t>(to) * out_row, row, in_row);
        else to_f32(w.dtype, row, out.f32() + to * cols, cols);
      }
    }
  }
  return out;
}

int32_t read_i32(const uint8_t* p) {
  uint32_t u = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
               static_cast<uint32_t>(p[3]) << 24;
  return static_cast<int32_t>(u);
}

}  // namespace

Tensor permute_interleaved_to_half(const Tensor& w, int64_t n_heads) {
  return permute_rows(w, n_heads, true, false, "q/k permutation");
}
Tensor permute_half_to_interleaved(const Tensor& w, int64_t n_heads) {
  return permute_rows(w, n_heads, false, false, "q/k permutation");
}
Tensor permute_rows_interleaved(const Tensor& w, int64_t n_heads, bool to_half, const std::string& where) {
  return permute_rows(w, n_heads, to_half, true, where);
}

CheckpointFiles read_llama2c(const std::string& path) {
  std::shared_ptr<MappedFile> mf = MappedFile::open(path);
  const uint8_t* base = mf->data();
  const uint64_t size = mf->size();
  if (size >= 4 && read_i32(base) == 0x616b3432)
    fail(path, ": llama2.c version-1/2 file (magic 'ak42') is not supported; export it with the legacy format");
  if (size < 28) fail(path, ": file size is ", size, " bytes, too small for a llama2.c header (28 bytes)");

  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  int64_t h[7];
  for (int i = 0; i < 7; ++i) h[i] = read_i32(base + 4 * i);
  const int64_t dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3], n_kv = h[4], seq_len = h[6];
  const bool shared = h[5] > 0;
  const int64_t vocab = shared ? h[5] : -h[5];
  auto bad = [&](int field, const std::string& what) {
    fail(path, ": llama2.c header field '", names[field], "': ", what, " (got ", h[field], ")");
  };
  // Bounds keep every size computation below far from overflow.
  const int64_t limits[7] = {1 << 20, 1 << 20, 1024, 1 << 20, 1 << 20, 1 << 22, 1 << 20};
  for (int i = 0; i < 7; ++i) {
    const int64_t v = i == 5 ? vocab : h[i];
    if (v <= 0) bad(i, "must be non-zero and positive");
    if (v > limits[i]) bad(i, cat("is too large (limit ", limits[i], ")"));
  }
  if (n_heads > dim) bad(3, "exceeds dim");
  if (dim % n_heads != 0) bad(3, cat("does not divide dim ", dim));
  if (n_kv > n_heads || n_heads % n_kv != 0) bad(4, cat("does not divide n_heads ", n_heads));
  const int64_t head_size = dim / n_heads;
  if (head_size % 2 != 0) bad(3, cat("gives an odd head size ", head_size));
  const int64_t kv_dim = n_kv * head_size;

  // Layout (floats) in file order; freq_cis tables are skipped.
  struct Part {
    const char* what;
    uint64_t count;
  };
  const uint64_t L = static_cast<uint64_t>(n_layers), D = static_cast<uint64_t>(dim);
  const uint64_t F = static_cast<uint64_t>(hidden), KV = static_cast<uint64_t>(kv_dim);
  const Part parts[] = {{"token_embedding", static_cast<uint64_t>(vocab) * D},
                        {"rms_att", L * D},
                        {"wq", L * D * D},
                        {"wk", L * D * KV},
                        {"wv", L * D * KV},
                        {"wo", L * D * D},
                        {"rms_ffn", L * D},
                        {"w1", L * F * D},
                        {"w2", L * D * F},
                        {"w3", L * F * D},
                        {"rms_final", D},
                        {"freq_cis_real", static_cast<uint64_t>(seq_len * head_size / 2)},
                        {"freq_cis_imag", static_cast<uint64_t>(seq_len * head_size / 2)},
                        {"wcls", shared ? 0 : static_cast<uint64_t>(vocab) * D}};
  uint64_t total = 0;
  for (const Part& p : parts) total += p.count;
  const uint64_t expected = 28 + 4 * total;
  if (size != expected)
    fail(path, ": file size is ", size, " bytes but the llama2.c header (dim=", dim, ", hidden_dim=", hidden,
         ", n_layers=", n_layers, ", n_heads=", n_heads, ", n_kv_heads=", n_kv, ", vocab_size=", h[5],
         ", seq_len=", seq_len, ") implies ", expected, " bytes", size < expected ? " (truncated?)" : "");

  const float* ptr[std::size(parts)];
  const float* cur = reinterpret_cast<const float*>(base + 28);  // 28 is a multiple of 4: views are aligned
  for (size_t i = 0; i < std::size(parts); ++i) {
    ptr[i] = cur;
    cur += parts[i].count;
  }

  CheckpointFiles ck;
  ck.format = "llama2c";
  // The header as an HF Llama config.json with the llama2.c conventions
  // (eps 1e-5, theta 10000, bos 1, eos 2; a sample ends at BOS).
  const nlohmann::ordered_json cfg = {{"architectures", {"LlamaForCausalLM"}},
                                      {"model_type", "llama"},
                                      {"vocab_size", vocab},
                                      {"hidden_size", dim},
                                      {"intermediate_size", hidden},
                                      {"num_hidden_layers", n_layers},
                                      {"num_attention_heads", n_heads},
                                      {"num_key_value_heads", n_kv},
                                      {"head_dim", head_size},
                                      {"max_position_embeddings", seq_len},
                                      {"rms_norm_eps", 1e-5},
                                      {"rope_theta", 10000.0},
                                      {"tie_word_embeddings", shared},
                                      {"bos_token_id", 1},
                                      {"eos_token_id", 2},
                                      {"torch_dtype", "float32"},
                                      {"strata_stop_at_bos", true}};
  ck.config_json = cfg.dump(2) + "\n";
  ck.config_source = path;

  auto view = [&](const float* p, Shape shape) {
    Tensor t;
    t.dtype = DType::F32;
    t.shape = std::move(shape);
    t.data = const_cast<float*>(p);
    t.owner = std::shared_ptr<void>(mf, t.data);  // keeps the mapping alive
    t.mapped = true;
    return t;
  };
  WeightSet& w = ck.weights;
  w.add("model.embed_tokens.weight", view(ptr[0], {vocab, dim}), path);
  for (int64_t l = 0; l < n_layers; ++l) {
    const std::string pre = cat("model.layers.", l, ".");
    const uint64_t ul = static_cast<uint64_t>(l);
    w.add(pre + "input_layernorm.weight", view(ptr[1] + ul * D, {dim}), path);
    // llama2.c keeps Meta's interleaved RoPE rows; the engine uses HF's rotate_half.
    w.add(pre + "self_attn.q_proj.weight", permute_interleaved_to_half(view(ptr[2] + ul * D * D, {dim, dim}), n_heads),
          path);
    w.add(pre + "self_attn.k_proj.weight", permute_interleaved_to_half(view(ptr[3] + ul * D * KV, {kv_dim, dim}), n_kv),
          path);
    w.add(pre + "self_attn.v_proj.weight", view(ptr[4] + ul * D * KV, {kv_dim, dim}), path);
    w.add(pre + "self_attn.o_proj.weight", view(ptr[5] + ul * D * D, {dim, dim}), path);
    w.add(pre + "post_attention_layernorm.weight", view(ptr[6] + ul * D, {dim}), path);
    w.add(pre + "mlp.gate_proj.weight", view(ptr[7] + ul * F * D, {hidden, dim}), path);
    w.add(pre + "mlp.down_proj.weight", view(ptr[8] + ul * D * F, {dim, hidden}), path);
    w.add(pre + "mlp.up_proj.weight", view(ptr[9] + ul * F * D, {hidden, dim}), path);
  }
  w.add("model.norm.weight", view(ptr[10], {dim}), path);
  if (!shared) w.add("lm_head.weight", view(ptr[13], {vocab, dim}), path);

  namespace fs = std::filesystem;
  // llama2.c names custom vocabularies tok<V>.model; prefer one matching the model's vocab.
  const fs::path dir = fs::path(path).parent_path();
  std::error_code ec;
  for (const fs::path& tok : {dir / cat("tok", vocab, ".model"), dir / "tokenizer.model"}) {
    if (fs::is_regular_file(tok, ec)) {
      ck.tokenizer_path = tok.string();
      break;
    }
  }
  return ck;
}

}  // namespace strata
