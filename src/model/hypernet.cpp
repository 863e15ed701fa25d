#include "model/hypernet.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/parallel.h"
#include "kernels/ops.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

// The model's config with the encoder's attention shape: full multi-head
// attention with heads_for(D) heads, its own RoPE base, RMSNorm eps 1e-5.
Config encoder_config(const Config& llm) {
  Config c = llm;
  const int64_t D = llm.hidden_size, H = llm.hypernet.heads_for(D);
  c.num_attention_heads = c.num_key_value_heads = H;
  c.head_dim = D / H;
  c.rope_theta = llm.hypernet.rope_theta;
  c.rope_scaling_factor = 1.0;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = llm.hypernet.soft_tokens + 512;  // (the table; longer inputs still work)
  return c;
}

std::string layer_prefix(int64_t i) { return "hypernet.layers." + std::to_string(i); }

constexpr float kLinearStd = 0.02f;  // every linear but out_proj: N(0, 0.02²)

void add(float* y, const float* x, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) y[i] += x[i];
  });
}

float* sized(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

}  // namespace

Hypernet::Hypernet(const Config& cfg)
    : cfg_(encoder_config(cfg)), P_(cfg.hypernet.soft_tokens), D_(cfg.hidden_size) {
  if (!cfg.has_hypernet()) fail("config has no hypernetwork (strata_hypernet)");
  const nlohmann::json mlp_options = {{"intermediate_size", cfg.hypernet.ffn_for(D_)}};
  for (int64_t i = 0; i < cfg.hypernet.layers; ++i) {
    const std::string p = layer_prefix(i);
    Layer l;
    l.attn_norm = make_module("rmsnorm", cfg_, p + ".input_layernorm", nlohmann::json::object(), i);
    l.attn = make_module("bidir-attention", cfg_, p + ".self_attn", nlohmann::json::object(), i);
    l.mlp_norm = make_module("rmsnorm", cfg_, p + ".post_attention_layernorm", nlohmann::json::object(), i);
    l.mlp = make_module("mlp", cfg_, p + ".mlp", mlp_options, i);
    layers_.push_back(std::move(l));
  }
  final_norm_ = make_module("rmsnorm", cfg_, "hypernet.norm", nlohmann::json::object(), 0);
}

Hypernet::~Hypernet() = default;

std::vector<DeclaredParam> hypernet_params(const Config& cfg, float embed_std) {
  return Hypernet(cfg).params(embed_std);
}

ParamDecl Hypernet::sp0_decl(float embed_std) const {
  ParamDecl d{kSoftPromptName, {P_, D_}, Init::Normal, /*matrix=*/false};
  d.init_std = embed_std;
  return d;
}

ParamDecl Hypernet::out_proj_decl() const { return {"hypernet.out_proj.weight", {D_, D_}, Init::Zeros}; }

std::vector<DeclaredParam> Hypernet::params(float embed_std) const {
  std::vector<DeclaredParam> r;
  r.push_back({"hypernet", sp0_decl(embed_std)});
  auto add_module = [&](const Module& m) {
    for (ParamDecl& d : m.params()) {
      if (d.init == Init::Normal) d.init_std = kLinearStd;
      r.push_back({"hypernet", std::move(d)});
    }
  };
  for (const Layer& l : layers_)
    for (const Module* m : {l.attn_norm.get(), l.attn.get(), l.mlp_norm.get(), l.mlp.get()}) add_module(*m);
  add_module(*final_norm_);
  r.push_back({"hypernet", out_proj_decl()});
  return r;
}

NamedTensors add_hypernet(const Model& base, const Config::Hypernet& shape, uint64_t seed, Config* cfg) {
  if (base.hypernet()) fail("the model already has a hypernetwork (", base.config().hypernet.soft_tokens, " soft tokens)");
  *cfg = base.config();
  cfg->hypernet = shape;
  cfg->hypernet.heads = shape.heads_for(cfg->hidden_size);
  cfg->hypernet.intermediate_size = shape.ffn_for(cfg->hidden_size);
  cfg->validate("--add-hypernet");
  NamedTensors out = base.named_tensors();
  double sum = 0, sq = 0;
  int64_t n = 0;
  for (const auto& [name, t] : out) {
    if (name != kEmbedName) continue;
    const Tensor e = t.to(DType::F32);
    n = e.numel();
    for (int64_t i = 0; i < n; ++i) sum += e.f32()[i], sq += static_cast<double>(e.f32()[i]) * e.f32()[i];
  }
  if (n == 0) fail("the model has no embedding table '", kEmbedName, "'");
  const double mean = sum / static_cast<double>(n);
  const float embed_std = static_cast<float>(std::sqrt(std::max(0.0, sq / static_cast<double>(n) - mean * mean)));
  const std::vector<DeclaredParam> decls = hypernet_params(*cfg, embed_std);
  const size_t first = declared_params(*cfg).size() - decls.size();  // their place in the model's list
  for (size_t i = 0; i < decls.size(); ++i)
    out.emplace_back(decls[i].decl.name,
                     random_param(decls[i].decl, first + i, seed, DType::F32, static_cast<float>(cfg->initializer_range)));
  return out;
}

std::vector<float> first_soft_prompt(const Model& model, std::span<const int32_t> query) {
  Hypernet* h = model.hypernet();
  if (!h) fail("the model has no hypernetwork (strata_hypernet in its config)");
  const int64_t D = h->width();
  std::vector<float> rows(query.size() * D), s(static_cast<size_t>(h->soft_tokens() * D));
  model.embed_rows(query, rows.data());
  const Hypernet::Input in{h->sp0(), rows.data(), static_cast<int64_t>(query.size())};
  h->forward({&in, 1}, s.data(), model.exec(), false);
  return s;
}

void Hypernet::bind(ParamBinder& b) {
  sp0_ = b.get(sp0_decl(0.0f));
  for (Layer& l : layers_) {
    l.attn_norm->bind(b);
    l.attn->bind(b);
    l.mlp_norm->bind(b);
    l.mlp->bind(b);
  }
  final_norm_->bind(b);
  out_proj_ = b.get(out_proj_decl());
}

void Hypernet::bind_grads(GradBinder& g) {
  dsp0_ = g.get(kSoftPromptName);
  for (Layer& l : layers_) {
    l.attn_norm->bind_grads(g);
    l.attn->bind_grads(g);
    l.mlp_norm->bind_grads(g);
    l.mlp->bind_grads(g);
  }
  final_norm_->bind_grads(g);
  dout_proj_ = g.get(out_proj_decl().name);
}

void Hypernet::forward(std::span<const Input> in, float* s_out, const Exec& ex, bool training) {
  const int64_t B = static_cast<int64_t>(in.size()), P = P_, D = D_;
  batch_ = {};
  head_batch_ = {};
  for (int64_t b = 0; b < B; ++b) {
    if (in[b].n < 0) fail("hypernetwork: example ", b, " has a negative token count");
    batch_.seqs.push_back({batch_.rows, P + in[b].n, 0});
    batch_.rows += P + in[b].n;
    head_batch_.seqs.push_back({b * P, P, 0});
  }
  head_batch_.rows = B * P;
  const int64_t n = batch_.rows * D;
  float* z = sized(z_, n);
  float* h = sized(h_, n);
  float* t = sized(dtmp_, n);
  for (int64_t b = 0; b < B; ++b) {
    float* zb = z + batch_.seqs[b].row * D;
    std::copy(in[b].s, in[b].s + P * D, zb);
    if (in[b].n > 0) std::copy(in[b].x, in[b].x + in[b].n * D, zb + P * D);
  }
  Context ctx{ex, scratch_, training};
  for (Layer& l : layers_) {
    l.attn_norm->forward(z, h, batch_, nullptr, ctx);
    l.attn->forward(h, t, batch_, nullptr, ctx);
    add(z, t, n);
    l.mlp_norm->forward(z, h, batch_, nullptr, ctx);
    l.mlp->forward(h, t, batch_, nullptr, ctx);
    add(z, t, n);
  }
  // The soft rows only: the final norm, out_proj, and the residual from S.
  for (int64_t b = 0; b < B; ++b)
    std::copy(z + batch_.seqs[b].row * D, z + (batch_.seqs[b].row + P) * D, h + b * P * D);
  float* f = sized(f_, B * P * D);
  final_norm_->forward(h, f, head_batch_, nullptr, ctx);
  if (training) {
    saved_f_.assign(f, f + B * P * D);
    ops::matmul_train(ex, f, B * P, out_proj_, s_out);
  } else {
    ops::matmul(ex, f, B * P, out_proj_, s_out);
  }
  for (int64_t b = 0; b < B; ++b) add(s_out + b * P * D, in[b].s, P * D);
}

void Hypernet::backward(const float* ds_out, float* ds_in, std::span<float* const> dx, const Exec& ex) {
  const int64_t B = static_cast<int64_t>(head_batch_.seqs.size()), P = P_, D = D_;
  if (saved_f_.size() != static_cast<size_t>(B * P * D) || static_cast<int64_t>(dx.size()) != B)
    fail("hypernetwork backward without its training forward (or for another batch)");
  Context ctx{ex, scratch_, true};
  // out = f Woᵀ: dWo += doutᵀ f, df = dout Wo; then the final norm.
  ops::matmul_tn_acc(ex, ds_out, B * P, D, saved_f_.data(), D, dout_proj_);
  float* df = sized(f_, B * P * D);
  ops::matmul_nn(ex, ds_out, B * P, D, out_proj_.f32(), D, df);
  const int64_t n = batch_.rows * D;
  float* dz = sized(dz_, n);
  float* dh = sized(dh_, n);
  float* dt = sized(dtmp_, n);
  final_norm_->backward(df, dh, head_batch_, ctx);
  std::fill(dz, dz + n, 0.0f);
  for (int64_t b = 0; b < B; ++b) std::copy(dh + b * P * D, dh + (b + 1) * P * D, dz + batch_.seqs[b].row * D);
  // Each residual unit z' = z + F(Norm(z)): dz += Norm'(F'(dz')).
  for (size_t i = layers_.size(); i-- > 0;) {
    Layer& l = layers_[i];
    l.mlp->backward(dz, dt, batch_, ctx);
    l.mlp_norm->backward(dt, dh, batch_, ctx);
    add(dz, dh, n);
    l.attn->backward(dz, dt, batch_, ctx);
    l.attn_norm->backward(dt, dh, batch_, ctx);
    add(dz, dh, n);
  }
  for (int64_t b = 0; b < B; ++b) {
    const float* zb = dz + batch_.seqs[b].row * D;
    float* sb = ds_in + b * P * D;
    const float* ob = ds_out + b * P * D;
    for (int64_t i = 0; i < P * D; ++i) sb[i] = ob[i] + zb[i];
    if (dx[b]) std::copy(zb + P * D, zb + batch_.seqs[b].len * D, dx[b]);
  }
}

void Hypernet::free_saved() {
  for (Layer& l : layers_) {
    l.attn_norm->free_saved();
    l.attn->free_saved();
    l.mlp_norm->free_saved();
    l.mlp->free_saved();
  }
  final_norm_->free_saved();
  std::vector<float>().swap(saved_f_);
}

}  // namespace strata
