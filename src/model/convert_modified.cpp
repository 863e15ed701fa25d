// Llama -> modified decoder conversion (docs/modified-decoder.md).
//
// The converted model is walked in the modified model's own declaration
// order. A tensor is, in this order of preference: an attention tensor mapped
// from the base (differential attention only), a base tensor of the same name
// copied (embeddings, norm weights -> AdaRMSNorm weight, MLP, final norm,
// head, and standard attention), or the declaration's own init (context
// modules: ctx_up = 0, Dirac token mixing, SE fc2 = 0, seeded normals).
#include "model/convert_modified.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <set>

#include "core/rng.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {

namespace {

constexpr const char* kWhat = "conversion to the modified decoder";

// Seed of one tensor's random stream: the conversion seed mixed with the
// tensor's name, so a tensor's values do not depend on what else is declared.
uint64_t tensor_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  uint64_t x = seed ^ h;
  return Rng::splitmix64(x);
}

// A fresh F32 tensor holding `d`'s declared init. Random values come from the
// stream of `stream_name` (the λ vectors of component 2 use component 1's).
Tensor declared_init(const ParamDecl& d, const Config& cfg, uint64_t seed, const std::string& stream_name) {
  Tensor t = Tensor::alloc(DType::F32, d.shape);
  float* v = t.f32();
  Rng rng(tensor_seed(seed, stream_name));
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = declared_value(d, i, rng, static_cast<float>(cfg.initializer_range));
  return t;
}

Tensor to_f32(const Tensor& t) { return t.dtype == DType::F32 ? t : t.to(DType::F32); }

// out row block m (`block` rows each) = w row block src(m); w is [rows, cols] F32.
Tensor gather_row_blocks(const Tensor& w, int64_t block, int64_t out_blocks, const std::function<int64_t(int64_t)>& src) {
  const int64_t cols = w.dim(1);
  Tensor out = Tensor::alloc(DType::F32, {out_blocks * block, cols});
  for (int64_t m = 0; m < out_blocks; ++m)
    std::memcpy(out.f32() + m * block * cols, w.f32() + src(m) * block * cols, sizeof(float) * block * cols);
  return out;
}

// out column block m (`block` columns each) = w column block src(m).
Tensor gather_col_blocks(const Tensor& w, int64_t block, int64_t out_blocks, const std::function<int64_t(int64_t)>& src) {
  const int64_t rows = w.dim(0), in_cols = w.dim(1), out_cols = out_blocks * block;
  Tensor out = Tensor::alloc(DType::F32, {rows, out_cols});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t m = 0; m < out_blocks; ++m)
      std::memcpy(out.f32() + r * out_cols + m * block, w.f32() + r * in_cols + src(m) * block, sizeof(float) * block);
  return out;
}

// One tensor of a differential-attention layer, from the base layer's q/k/v/o
// (looked up by name; the modified model keeps the prefix) or, for the λ
// vectors and the lambda_init buffer, from the declaration.
Tensor diff_attention_tensor(const ParamDecl& d, const Config& cfg, uint64_t seed,
                             const std::map<std::string, Tensor>& base) {
  const int64_t H = cfg.num_attention_heads, KV = cfg.num_key_value_heads, hd = cfg.head_dim;
  const bool paper = modified_recipe_of(cfg).diff_layout == "paper";
  const Tensor w = d.name.ends_with("_proj.weight") ? to_f32(base.at(d.name)) : Tensor();  // same name in the base
  auto half = [](int64_t m) { return m / 2; };  // expanded: both components of head h are the base head h
  auto paper_slot = [&](int64_t m) { return paper_source_head(m, H, KV); };

  if (d.name.ends_with(".q_proj.weight"))
    return paper ? gather_row_blocks(w, hd, H, paper_slot) : gather_row_blocks(w, hd, 2 * H, half);
  // paper: key sub-head 2g + c is base KV head 2g + c, and group g's value
  // [v_2g; v_2g+1] is the base rows: k and v stay as they are.
  if (d.name.ends_with(".k_proj.weight")) return paper ? w : gather_row_blocks(w, hd, 2 * KV, half);
  if (d.name.ends_with(".v_proj.weight")) return w;
  if (d.name.ends_with(".o_proj.weight")) return paper ? gather_col_blocks(w, hd, H, paper_slot) : w;
  // λ_q2 := λ_q1 and λ_k2 := λ_k1 (same random stream), so λ = e^a − e^a + 0 = 0
  // exactly while its gradient is not zero; lambda_init is declared 0.
  std::string stream = d.name;
  for (auto [two, one] : {std::pair{"lambda_q2", "lambda_q1"}, std::pair{"lambda_k2", "lambda_k1"}})
    if (stream.ends_with(two)) stream.replace(stream.size() - 9, 9, one);
  return declared_init(d, cfg, seed, stream);
}

}  // namespace

int64_t paper_source_head(int64_t slot, int64_t heads, int64_t kv_heads) {
  const int64_t n_rep = heads / kv_heads, h = slot / 2, c = slot % 2;
  return (2 * (h / n_rep) + c) * n_rep + h % n_rep;
}

Config modified_config(const Config& base, const ModifiedOptions& opt) {
  if (!base.is_llama())
    fail(kWhat, ": the base model is a '", base.recipe, "' model (model_type '", base.model_type,
         "'); only a Llama model (recipe llama) can be converted");
  ModifiedRecipe r;
  r.attention = opt.attention;
  r.diff_layout = opt.diff_layout;
  r.ctx_mode = opt.ctx_mode;
  r.ada_rank = opt.ada_rank;
  r.tm_kernel = opt.tm_kernel;
  r.se_reduction = opt.se_reduction;
  if (opt.attention == "differential") {  // the converted layer starts as the base attention
    r.diff_subln = false;
    r.diff_out_scale = false;
    r.diff_lambda_init_zero = true;
  }
  Config c = with_modified_layers(base, r);
  c.torch_dtype = "float32";
  c.validate(kWhat);
  return c;
}

NamedTensors convert_to_modified(const Model& base, const ModifiedOptions& opt, Config* out_cfg) {
  const Config cfg = modified_config(base.config(), opt);
  std::map<std::string, Tensor> base_tensors;
  for (const auto& [name, t] : base.named_tensors()) base_tensors[name] = t;
  std::set<std::string> used;

  NamedTensors out;
  for (const DeclaredParam& p : declared_params(cfg)) {
    const ParamDecl& d = p.decl;
    Tensor t;
    if (p.group == "diff-attn") {
      t = diff_attention_tensor(d, cfg, opt.seed, base_tensors);
    } else if (auto it = base_tensors.find(d.name); it != base_tensors.end()) {
      if (it->second.shape != d.shape)
        fail(kWhat, ": base tensor '", d.name, "' has shape ", shape_str(it->second.shape), ", the modified model ",
             shape_str(d.shape));
      t = to_f32(it->second);
    } else {
      t = declared_init(d, cfg, opt.seed, d.name);
    }
    if (base_tensors.count(d.name)) used.insert(d.name);
    out.emplace_back(d.name, std::move(t));
  }
  for (const auto& [name, t] : base_tensors)
    if (!used.count(name)) fail(kWhat, ": base tensor '", name, "' has no place in the modified model");
  if (out_cfg) *out_cfg = cfg;
  return out;
}

LogitComparison compare_logits(Model& base, Model& converted, const std::vector<int32_t>& ids) {
  const int64_t V = base.config().vocab_size;
  if (converted.config().vocab_size != V) fail("compare_logits: the models' vocabularies differ");
  std::vector<float> a, b;
  SeqInput in{ids};
  base.forward({&in, 1}, Logits::All, a);
  converted.forward({&in, 1}, Logits::All, b);
  LogitComparison r;
  r.positions = static_cast<int64_t>(ids.size());
  // log-softmax in double: log p_i = x_i − max − log Σ exp(x_j − max)
  auto log_norm = [&](const float* x) {
    const double mx = *std::max_element(x, x + V);
    double s = 0;
    for (int64_t i = 0; i < V; ++i) s += std::exp(x[i] - mx);
    return mx + std::log(s);
  };
  double kl_sum = 0;
  for (int64_t t = 0; t < r.positions; ++t) {
    const float* p = a.data() + t * V;
    const float* q = b.data() + t * V;
    const double lp = log_norm(p), lq = log_norm(q);
    double kl = 0;
    for (int64_t i = 0; i < V; ++i) {
      r.max_abs_diff = std::max(r.max_abs_diff, static_cast<double>(std::fabs(p[i] - q[i])));
      const double log_p = p[i] - lp, log_q = q[i] - lq;
      kl += std::exp(log_p) * (log_p - log_q);
    }
    kl_sum += kl;
  }
  r.mean_kl = kl_sum / static_cast<double>(r.positions);
  return r;
}

}  // namespace strata
