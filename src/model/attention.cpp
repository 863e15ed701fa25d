// Causal multi-head attention with grouped KV heads and rotate_half RoPE
// (HF LlamaAttention). Decode state: a per-sequence KV cache of the rotated
// keys and the values, one row of kv_dim floats per position. The attention
// itself is the shared core (attention_core.h).
#include <algorithm>

#include "kernels/ops.h"
#include "model/attention_core.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

class Attention final : public Module {
 public:
  Attention(const Config& cfg, const std::string& prefix)
      : prefix_(prefix),
        dim_(cfg.hidden_size),
        heads_(cfg.num_attention_heads),
        kv_heads_(cfg.num_key_value_heads),
        head_dim_(cfg.head_dim),
        rope_(RopeTable::get(cfg)) {}

  const char* kind() const override { return "attn"; }
  std::vector<ParamDecl> params() const override {
    const int64_t qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_;
    return {{prefix_ + ".q_proj.weight", {qd, dim_}},
            {prefix_ + ".k_proj.weight", {kvd, dim_}},
            {prefix_ + ".v_proj.weight", {kvd, dim_}},
            {prefix_ + ".o_proj.weight", {dim_, qd}}};
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    wq_ = b.get(p[0]);
    wk_ = b.get(p[1]);
    wv_ = b.get(p[2]);
    wo_ = b.get(p[3]);
  }
  int64_t out_width() const override { return dim_; }

  std::unique_ptr<LayerState> make_state() const override {
    auto s = std::make_unique<KvCache>();
    s->k_width = s->v_width = kv_heads_ * head_dim_;
    return s;
  }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Scratch& scratch) override {
    const int64_t rows = batch.rows, qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_;
    if (training_ && states) fail("attention ", prefix_, ": training forward runs without decode states");
    float* q_all = scratch.floats(0, static_cast<size_t>(rows * qd));
    float* k_all = scratch.floats(1, static_cast<size_t>(rows * kvd));
    float* v_all = scratch.floats(2, static_cast<size_t>(rows * kvd));
    float* att = scratch.floats(3, static_cast<size_t>(rows * qd));
    linear(x, rows, wq_, q_all);
    linear(x, rows, wk_, k_all);
    linear(x, rows, wv_, v_all);
    caches_.begin(batch, states, kvd, kvd, "attention " + prefix_);
    rope_->rotate(q_all, rows, qd, heads_, caches_.row_pos());
    rope_->rotate(k_all, rows, kvd, kv_heads_, caches_.row_pos());
    caches_.append(batch, k_all, v_all);
    attention_forward(layout(), sequences(batch, q_all, att));
    if (training_) {
      saved_x_.assign(x, x + rows * dim_);
      saved_q_.assign(q_all, q_all + rows * qd);
      saved_att_.assign(att, att + rows * qd);
    }
    linear(att, rows, wo_, y);
  }

  void free_saved() override {
    caches_.release();
    release(saved_x_, saved_q_, saved_att_);
  }
  void bind_grads(GradBinder& gb) override {
    auto p = params();
    dwq_ = gb.get(p[0].name);
    dwk_ = gb.get(p[1].name);
    dwv_ = gb.get(p[2].name);
    dwo_ = gb.get(p[3].name);
  }

  // dO = dy Wo, the core's backward (from the caches the training forward
  // kept), RoPE rotated back, then the projections' products.
  void backward(const float* dy, float* dx, const Batch& batch, Scratch& scratch) override {
    const int64_t rows = batch.rows, qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_;
    float* dO = scratch.floats(0, static_cast<size_t>(rows * qd));
    float* dq = scratch.floats(1, static_cast<size_t>(rows * qd));
    float* dk = scratch.floats(2, static_cast<size_t>(rows * kvd));
    float* dv = scratch.floats(3, static_cast<size_t>(rows * kvd));
    float* tmp = scratch.floats(4, static_cast<size_t>(rows * dim_));
    ops::matmul_nn(dy, rows, dim_, wo_.f32(), qd, dO);
    ops::matmul_tn_acc(dy, rows, dim_, saved_att_.data(), qd, dwo_);
    std::fill(dk, dk + rows * kvd, 0.0f);
    std::fill(dv, dv + rows * kvd, 0.0f);
    auto seqs = sequences(batch, saved_q_.data(), nullptr);
    std::vector<AttnSeqGrad> grads;
    for (const SeqSpan& sp : batch.seqs)
      grads.push_back({dO + sp.row * qd, dq + sp.row * qd, dk + sp.row * kvd, dv + sp.row * kvd});
    attention_backward(layout(), seqs, grads);
    rope_->rotate(dq, rows, qd, heads_, caches_.row_pos(), /*inverse=*/true);
    rope_->rotate(dk, rows, kvd, kv_heads_, caches_.row_pos(), /*inverse=*/true);
    qkv_projection_backward(saved_x_.data(), rows, dim_, dq, wq_, dwq_, dk, wk_, dwk_, dv, wv_, dwv_, dx, tmp);
  }

 private:
  AttnLayout layout() const {
    const int64_t qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_;
    return {heads_, kv_heads_, head_dim_, head_dim_, qd, head_dim_, kvd, head_dim_, kvd, head_dim_, qd, head_dim_};
  }
  // Each sequence's queries (packed rows) against its cache.
  std::vector<AttnSeq> sequences(const Batch& batch, const float* q_all, float* out) {
    const int64_t qd = heads_ * head_dim_;
    std::vector<AttnSeq> r;
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const SeqSpan& sp = batch.seqs[s];
      const KvCache& c = caches_[s];
      r.push_back({q_all + sp.row * qd, sp.len, c.len - sp.len, c.k.data(), c.v.data(),
                   out ? out + sp.row * qd : nullptr});
    }
    return r;
  }

  std::string prefix_;
  int64_t dim_, heads_, kv_heads_, head_dim_;
  std::shared_ptr<const RopeTable> rope_;
  Tensor wq_, wk_, wv_, wo_;
  float *dwq_ = nullptr, *dwk_ = nullptr, *dwv_ = nullptr, *dwo_ = nullptr;
  std::vector<float> saved_x_, saved_q_, saved_att_;  // training: inputs, rotated queries, head outputs
  CallCaches caches_;  // training: the temporaries hold the rotated keys and the values for backward
};

}  // namespace

std::unique_ptr<Module> make_attention(const Config& cfg, const std::string& prefix) {
  return std::make_unique<Attention>(cfg, prefix);
}

}  // namespace strata
