// Causal multi-head attention with grouped KV heads and rotate_half RoPE
// (HF LlamaAttention), optionally over a sliding window: with `window` w each
// query sees the w most recent positions, itself included (Mistral, the
// Samba SWA layers). Decode state: a KV cache of the rotated keys and the
// values, every position (window 0) or a ring of the last w. The attention
// itself is the shared core (attention_core.h).
#include <algorithm>

#include "kernels/ops.h"
#include "model/modules/attention_core.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

class Attention final : public Module {
 public:
  Attention(const ModuleSpec& spec, const Config& cfg)
      : Module(spec),
        dim_(cfg.hidden_size),
        heads_(cfg.num_attention_heads),
        kv_heads_(cfg.num_key_value_heads),
        head_dim_(cfg.head_dim),
        window_(opt_int(spec.options, "window")),
        kv_dtype_(kv_dtype_for(cfg)),
        rope_(opt_bool(spec.options, "rope") ? RopeTable::get(cfg) : nullptr) {}

  std::vector<ParamDecl> params() const override {
    const int64_t qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_;
    return {{prefix() + ".q_proj.weight", {qd, dim_}},
            {prefix() + ".k_proj.weight", {kvd, dim_}},
            {prefix() + ".v_proj.weight", {kvd, dim_}},
            residual_out({prefix() + ".o_proj.weight", {dim_, qd}})};
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    wq_ = b.get(p[0]);
    wk_ = b.get(p[1]);
    wv_ = b.get(p[2]);
    wo_ = b.get(p[3]);
    kv_dtype_ = kv_dtype_for(wq_.dtype);
  }
  int64_t out_width() const override { return dim_; }

  std::unique_ptr<LayerState> make_state() const override {
    auto s = std::make_unique<KvCache>();
    s->k_width = s->v_width = kv_heads_ * head_dim_;
    s->window = window_;
    s->dtype = kv_dtype_;
    return s;
  }
  StateSize state_size() const override { return {0, 2 * kv_heads_ * head_dim_ * kv_bytes(kv_dtype_), window_}; }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) override {
    const int64_t rows = batch.rows, qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_;
    if (ctx.training && states) fail(kind(), " ", prefix(), ": training forward runs without decode states");
    float* q_all = ctx.scratch.floats(0, static_cast<size_t>(rows * qd));
    float* k_all = ctx.scratch.floats(1, static_cast<size_t>(rows * kvd));
    float* v_all = ctx.scratch.floats(2, static_cast<size_t>(rows * kvd));
    float* att = ctx.scratch.floats(3, static_cast<size_t>(rows * qd));
    linear(ctx, x, rows, wq_, q_all);
    linear(ctx, x, rows, wk_, k_all);
    linear(ctx, x, rows, wv_, v_all);
    caches_.begin(batch, states, kvd, kvd, window_, kv_dtype_, kind() + " " + prefix());
    if (rope_) {
      rope_->rotate(ctx.kt(), q_all, rows, qd, heads_, caches_.row_pos());
      rope_->rotate(ctx.kt(), k_all, rows, kvd, kv_heads_, caches_.row_pos());
    }
    caches_.add(batch, k_all, v_all);
    AttnLayout L = layout();
    if (rope_ && ctx.self_extend.active()) {
      L.self_extend = ctx.self_extend;
      L.rope = rope_.get();
    }
    attention_forward(ctx.exec, L, sequences(batch, q_all, att));
    caches_.commit(batch);
    if (ctx.training) {
      saved_x_.assign(x, x + rows * dim_);
      saved_q_.assign(q_all, q_all + rows * qd);
      saved_att_.assign(att, att + rows * qd);
    }
    linear(ctx, att, rows, wo_, y);
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
  void backward(const float* dy, float* dx, const Batch& batch, Context& ctx) override {
    const int64_t rows = batch.rows, qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_;
    const Exec& ex = ctx.exec;
    float* dO = ctx.scratch.floats(0, static_cast<size_t>(rows * qd));
    float* dq = ctx.scratch.floats(1, static_cast<size_t>(rows * qd));
    float* dk = ctx.scratch.floats(2, static_cast<size_t>(rows * kvd));
    float* dv = ctx.scratch.floats(3, static_cast<size_t>(rows * kvd));
    float* tmp = ctx.scratch.floats(4, static_cast<size_t>(rows * dim_));
    ops::matmul_nn(ex, dy, rows, dim_, wo_.f32(), qd, dO);
    ops::matmul_tn_acc(ex, dy, rows, dim_, saved_att_.data(), qd, dwo_);
    std::fill(dk, dk + rows * kvd, 0.0f);
    std::fill(dv, dv + rows * kvd, 0.0f);
    auto seqs = sequences(batch, saved_q_.data(), nullptr);
    std::vector<AttnSeqGrad> grads;
    for (const SeqSpan& sp : batch.seqs)
      grads.push_back({dO + sp.row * qd, dq + sp.row * qd, dk + sp.row * kvd, dv + sp.row * kvd});
    attention_backward(ex, layout(), seqs, grads);
    if (rope_) {
      rope_->rotate(ctx.kt(), dq, rows, qd, heads_, caches_.row_pos(), /*inverse=*/true);
      rope_->rotate(ctx.kt(), dk, rows, kvd, kv_heads_, caches_.row_pos(), /*inverse=*/true);
    }
    qkv_projection_backward(ex, saved_x_.data(), rows, dim_, dq, wq_, dwq_, dk, wk_, dwk_, dv, wv_, dwv_, dx, tmp);
  }

 private:
  AttnLayout layout() const {
    const int64_t qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_;
    return {heads_, kv_heads_, head_dim_, head_dim_, qd, head_dim_, kvd, head_dim_, kvd, head_dim_, qd, head_dim_, window_};
  }
  // Each sequence's queries (packed rows) against its keys.
  std::vector<AttnSeq> sequences(const Batch& batch, const float* q_all, float* out) {
    const int64_t qd = heads_ * head_dim_;
    std::vector<AttnSeq> r;
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const SeqSpan& sp = batch.seqs[s];
      r.push_back(caches_.seq(s, batch, q_all + sp.row * qd, out ? out + sp.row * qd : nullptr));
    }
    return r;
  }

  int64_t dim_, heads_, kv_heads_, head_dim_, window_;
  DType kv_dtype_;
  std::shared_ptr<const RopeTable> rope_;  // null: no RoPE
  Tensor wq_, wk_, wv_, wo_;
  float *dwq_ = nullptr, *dwk_ = nullptr, *dwv_ = nullptr, *dwo_ = nullptr;
  std::vector<float> saved_x_, saved_q_, saved_att_;  // training: inputs, rotated queries, head outputs
  CallCaches caches_;  // training: the temporaries hold the rotated keys and the values for backward
};

}  // namespace

ModuleType attention_module() {
  return ModuleType{
      .kind = "attention",
      .name = "self_attn",
      .summary = "causal GQA attention with RoPE, optionally over a sliding window",
      .options = {int_option("window", 0, 0, int64_t{1} << 30,
                             "keys each query sees, itself included (0: every earlier position); the decode state is "
                             "then a ring of this many positions"),
                  bool_option("rope", true, "rotary position embedding on q and k (false: NoPE)")},
      .make = make_as<Attention>,
      .aliases = {{"attn", {}}, {"swa", {{"window", int64_t{2048}}}}},
  };
}

}  // namespace strata
