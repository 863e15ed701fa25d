// Differential attention (Ye et al. 2024, "Differential Transformer"; spec in
// docs/diff-attention.md). For diff head h with KV group g = h / n_rep:
//   A_c = softmax(Q_c K_cᵀ / sqrt(d) + causal mask),   c = 1, 2
//   O_h = s · SubLN((A1 − λ A2) V_g),   out = concat_h(O_h) W_oᵀ
//   λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init
// Rows of q_proj / k_proj are interleaved sub-heads: sub-head 2h + c of width
// d at columns (2h + c)·d (k: 2g + c); v_proj holds one d_v-wide vector per
// group. (A1 − λA2)V is computed as A1V − λ·A2V: two problems of the shared
// attention core over the same V, so decode equals the full forward bit for
// bit and the backward is the core's backward twice plus dλ = −Σ dO ⊙ (A2V).
#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "kernels/ops.h"
#include "model/modules/attention_core.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

constexpr float kSublnEps = 1e-5f;

// The paper layout pairs heads: both head counts must be even.
void check_heads(const Options& o, const Config& cfg, const FieldName& field) {
  const int64_t H = cfg.num_attention_heads, KV = cfg.num_key_value_heads;
  if (opt_string(o, "layout") == "paper" && (H % 2 != 0 || KV % 2 != 0))
    fail(field("layout"), ": the paper layout pairs heads: num_attention_heads (", H, ") and num_key_value_heads (", KV,
         ") must be even");
}

class DiffAttention final : public Module {
 public:
  DiffAttention(const ModuleSpec& spec, const Config& cfg)
      : Module(spec),
        dim_(cfg.hidden_size),
        head_dim_(cfg.head_dim),
        subln_(opt_bool(spec.options, "subln")),
        out_scale_(opt_string(spec.options, "out_scale") == "one_minus_lambda_init"),
        rope_(RopeTable::get(cfg)),
        kv_dtype_(kv_dtype_for(cfg)) {
    check_heads(spec.options, cfg, [&](const std::string& o) { return cat(kind(), " ", prefix(), ": option '", o, "'"); });
    const int64_t H = cfg.num_attention_heads, KV = cfg.num_key_value_heads;
    if (KV <= 0 || H % KV != 0) fail(kind(), " ", prefix(), ": ", KV, " KV heads do not divide ", H, " heads");
    if (opt_string(spec.options, "layout") == "paper") {  // parameter-neutral: half the heads, values twice as wide
      heads_ = H / 2;
      kv_heads_ = KV / 2;
      v_dim_ = 2 * head_dim_;
    } else {  // expanded: one diff head per original head, extra q2/k2 rows
      heads_ = H;
      kv_heads_ = KV;
      v_dim_ = head_dim_;
    }
    // The paper's depth schedule, from the layer's index in the model.
    init_lambda_ = opt_string(spec.options, "lambda_init") == "zero"
                       ? 0.0f
                       : static_cast<float>(0.8 - 0.6 * std::exp(-0.3 * static_cast<double>(spec.layer)));
  }

  std::vector<ParamDecl> params() const override {
    const std::string p = prefix() + ".";
    std::vector<ParamDecl> r = {{p + "q_proj.weight", {q_width(), dim_}},
                                {p + "k_proj.weight", {k_width(), dim_}},
                                {p + "v_proj.weight", {v_width(), dim_}},
                                residual_out({p + "o_proj.weight", {dim_, o_width()}})};
    for (const char* name : {"lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"})
      r.push_back({p + name, {head_dim_}, Init::Normal, false, 0.1f});
    r.push_back({p + "lambda_init", {}, Init::Constant, false, -1.0f, init_lambda_, /*trainable=*/false});
    if (subln_) r.push_back({p + "subln.weight", {v_dim_}, Init::Ones, false});
    return r;
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    wq_ = b.get(p[0]);
    wk_ = b.get(p[1]);
    wv_ = b.get(p[2]);
    wo_ = b.get(p[3]);
    kv_dtype_ = kv_dtype_for(wq_.dtype);
    for (int i = 0; i < 4; ++i) lambda_vec_[i] = b.get(p[4 + i]);
    lambda_init_ = b.get(p[8]).f32()[0];  // the stored buffer, not the formula
    if (subln_) subln_w_ = b.get(p[9]);
  }
  int64_t out_width() const override { return dim_; }

  std::unique_ptr<LayerState> make_state() const override {
    auto s = std::make_unique<KvCache>();
    s->k_width = k_width();
    s->v_width = v_width();
    s->dtype = kv_dtype_;
    return s;
  }
  StateSize state_size() const override { return {0, (k_width() + v_width()) * kv_bytes(kv_dtype_), 0}; }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) override {
    const int64_t rows = batch.rows, qd = q_width(), kd = k_width(), vd = v_width(), od = o_width();
    if (ctx.training && states) fail(kind(), " ", prefix(), ": training forward runs without decode states");
    Scratch& scratch = ctx.scratch;
    float* q_all = scratch.floats(0, static_cast<size_t>(rows * qd));
    float* k_all = scratch.floats(1, static_cast<size_t>(rows * kd));
    float* v_all = scratch.floats(2, static_cast<size_t>(rows * vd));
    float* o1 = scratch.floats(3, static_cast<size_t>(rows * od));
    float* o2 = scratch.floats(4, static_cast<size_t>(rows * od));
    float* heads = scratch.floats(5, static_cast<size_t>(rows * od));
    linear(ctx, x, rows, wq_, q_all);
    linear(ctx, x, rows, wk_, k_all);
    linear(ctx, x, rows, wv_, v_all);
    caches_.begin(batch, states, kd, vd, 0, kv_dtype_, kind() + " " + prefix());
    rope_->rotate(ctx.kt(), q_all, rows, qd, 2 * heads_, caches_.row_pos());
    rope_->rotate(ctx.kt(), k_all, rows, kd, 2 * kv_heads_, caches_.row_pos());
    caches_.add(batch, k_all, v_all);
    attention_forward(ctx.exec, layout(), sequences(batch, q_all, 0, o1));
    attention_forward(ctx.exec, layout(), sequences(batch, q_all, 1, o2));
    caches_.commit(batch);

    // o1 becomes A1V − λ·A2V; then the optional per-head RMSNorm and the scale.
    const float lambda = lambda_value().lambda;
    parallel_for(rows * od, 1 << 14, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) o1[i] -= lambda * o2[i];
    });
    if (subln_) ops::rmsnorm(ctx.exec, o1, subln_w_.f32(), heads, rows * heads_, v_dim_, kSublnEps);
    else std::copy(o1, o1 + rows * od, heads);
    if (const float s = scale(); s != 1.0f)
      parallel_for(rows * od, 1 << 14, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) heads[i] *= s;
      });
    if (ctx.training) {
      saved_x_.assign(x, x + rows * dim_);
      saved_q_.assign(q_all, q_all + rows * qd);
      saved_o2_.assign(o2, o2 + rows * od);
      if (subln_) saved_diff_.assign(o1, o1 + rows * od);
      saved_heads_.assign(heads, heads + rows * od);
    }
    linear(ctx, heads, rows, wo_, y);
  }

  void free_saved() override {
    caches_.release();
    release(saved_x_, saved_q_, saved_o2_, saved_diff_, saved_heads_);
  }
  void bind_grads(GradBinder& gb) override {
    auto p = params();
    dwq_ = gb.get(p[0].name);
    dwk_ = gb.get(p[1].name);
    dwv_ = gb.get(p[2].name);
    dwo_ = gb.get(p[3].name);
    for (int i = 0; i < 4; ++i) dlambda_vec_[i] = gb.get(p[4 + i].name);
    if (subln_) dsubln_w_ = gb.get(p[9].name);
  }

  void backward(const float* dy, float* dx, const Batch& batch, Context& ctx) override {
    const int64_t rows = batch.rows, qd = q_width(), kd = k_width(), vd = v_width(), od = o_width();
    const Exec& ex = ctx.exec;
    Scratch& scratch = ctx.scratch;
    float* d_heads = scratch.floats(0, static_cast<size_t>(rows * od));
    float* d_o1 = scratch.floats(1, static_cast<size_t>(rows * od));  // gradient of A1V (= of A1V − λA2V)
    float* d_o2 = scratch.floats(2, static_cast<size_t>(rows * od));  // gradient of A2V
    float* dq = scratch.floats(3, static_cast<size_t>(rows * qd));
    float* dk = scratch.floats(4, static_cast<size_t>(rows * kd));
    float* dv = scratch.floats(5, static_cast<size_t>(rows * vd));
    float* tmp = scratch.floats(6, static_cast<size_t>(rows * dim_));
    ops::matmul_nn(ex, dy, rows, dim_, wo_.f32(), od, d_heads);
    ops::matmul_tn_acc(ex, dy, rows, dim_, saved_heads_.data(), od, dwo_);
    if (const float s = scale(); s != 1.0f)
      for (int64_t i = 0; i < rows * od; ++i) d_heads[i] *= s;
    if (subln_)
      ops::rmsnorm_backward(saved_diff_.data(), subln_w_.f32(), d_heads, d_o1, dsubln_w_, rows * heads_, v_dim_,
                            kSublnEps);
    else
      std::copy(d_heads, d_heads + rows * od, d_o1);

    // dλ = −Σ d(A1V − λA2V) ⊙ A2V, summed per row in parallel, then rows in order.
    const Lambda lam = lambda_value();
    std::vector<double> row_sums(static_cast<size_t>(rows));
    const float* o2 = saved_o2_.data();
    parallel_for(rows, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        double acc = 0;
        for (int64_t i = r * od; i < (r + 1) * od; ++i) {
          acc += static_cast<double>(d_o1[i]) * o2[i];
          d_o2[i] = -lam.lambda * d_o1[i];
        }
        row_sums[r] = acc;
      }
    });
    double d_lambda = 0;
    for (double v : row_sums) d_lambda -= v;

    std::fill(dk, dk + rows * kd, 0.0f);
    std::fill(dv, dv + rows * vd, 0.0f);
    for (int c = 0; c < 2; ++c) {
      std::vector<AttnSeqGrad> grads;
      for (const SeqSpan& sp : batch.seqs)
        grads.push_back({(c == 0 ? d_o1 : d_o2) + sp.row * od, dq + sp.row * qd + c * head_dim_,
                         dk + sp.row * kd + c * head_dim_, dv + sp.row * vd});
      attention_backward(ex, layout(), sequences(batch, saved_q_.data(), c, nullptr), grads);
    }
    rope_->rotate(ctx.kt(), dq, rows, qd, 2 * heads_, caches_.row_pos(), /*inverse=*/true);
    rope_->rotate(ctx.kt(), dk, rows, kd, 2 * kv_heads_, caches_.row_pos(), /*inverse=*/true);
    qkv_projection_backward(ex, saved_x_.data(), rows, dim_, dq, wq_, dwq_, dk, wk_, dwk_, dv, wv_, dwv_, dx, tmp);

    // λ = exp(q1·k1) − exp(q2·k2) + λ_init.
    const float g1 = static_cast<float>(d_lambda) * lam.exp1, g2 = -static_cast<float>(d_lambda) * lam.exp2;
    const float *q1 = lambda_vec_[0].f32(), *k1 = lambda_vec_[1].f32(), *q2 = lambda_vec_[2].f32(),
                *k2 = lambda_vec_[3].f32();
    for (int64_t i = 0; i < head_dim_; ++i) {
      dlambda_vec_[0][i] += g1 * k1[i];
      dlambda_vec_[1][i] += g1 * q1[i];
      dlambda_vec_[2][i] += g2 * k2[i];
      dlambda_vec_[3][i] += g2 * q2[i];
    }
  }

 private:
  int64_t q_width() const { return 2 * heads_ * head_dim_; }
  int64_t k_width() const { return 2 * kv_heads_ * head_dim_; }
  int64_t v_width() const { return kv_heads_ * v_dim_; }
  int64_t o_width() const { return heads_ * v_dim_; }
  float scale() const { return out_scale_ ? 1.0f - lambda_init_ : 1.0f; }

  struct Lambda {
    float lambda, exp1, exp2;
  };
  // In F32, the dot products summed in order.
  Lambda lambda_value() const {
    float dot1 = 0.0f, dot2 = 0.0f;
    for (int64_t i = 0; i < head_dim_; ++i) {
      dot1 += lambda_vec_[0].f32()[i] * lambda_vec_[1].f32()[i];
      dot2 += lambda_vec_[2].f32()[i] * lambda_vec_[3].f32()[i];
    }
    const float e1 = std::exp(dot1), e2 = std::exp(dot2);
    return {e1 - e2 + lambda_init_, e1, e2};
  }

  // Component c of every diff head: query sub-head 2h + c against key
  // sub-head 2g + c of its group, values of the group.
  AttnLayout layout() const {
    const int64_t d = head_dim_;
    return {heads_, kv_heads_, d, v_dim_, q_width(), 2 * d, k_width(), 2 * d, v_width(), v_dim_, o_width(), v_dim_, 0};
  }
  std::vector<AttnSeq> sequences(const Batch& batch, const float* q_all, int c, float* out) {
    std::vector<AttnSeq> r;
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const SeqSpan& sp = batch.seqs[s];
      r.push_back(caches_.seq(s, batch, q_all + sp.row * q_width() + c * head_dim_,
                              out ? out + sp.row * o_width() : nullptr, c * head_dim_, 0));
    }
    return r;
  }

  int64_t dim_, head_dim_;
  int64_t heads_ = 0, kv_heads_ = 0, v_dim_ = 0;  // diff heads, KV groups, value width per head
  bool subln_, out_scale_;
  float init_lambda_ = 0.0f;  // what Model::random stores in the lambda_init buffer
  float lambda_init_ = 0.0f;  // the bound buffer's value
  std::shared_ptr<const RopeTable> rope_;
  Tensor wq_, wk_, wv_, wo_, subln_w_;
  Tensor lambda_vec_[4];  // q1, k1, q2, k2
  float *dwq_ = nullptr, *dwk_ = nullptr, *dwv_ = nullptr, *dwo_ = nullptr, *dsubln_w_ = nullptr;
  float* dlambda_vec_[4] = {nullptr, nullptr, nullptr, nullptr};
  // Training: inputs, rotated queries, A2V, A1V − λA2V (before the norm), head outputs.
  std::vector<float> saved_x_, saved_q_, saved_o2_, saved_diff_, saved_heads_;
  CallCaches caches_;
  DType kv_dtype_ = DType::F32;
};

}  // namespace

ModuleType diff_attention_module() {
  return ModuleType{
      .kind = "diff-attn",
      .name = "self_attn",
      .summary = "differential attention (docs/diff-attention.md)",
      .options =
          {
              choice_option(
                  "layout", "paper", {"paper", "expanded"},
                  "paper: half the heads with values twice as wide (parameter-neutral); expanded: one diff head per "
                  "head with extra q2/k2 rows (exact conversion)"),
              bool_option("subln", true, "per-head RMSNorm of the differential output"),
              choice_option("out_scale", "one_minus_lambda_init", {"one_minus_lambda_init", "one"},
                            "scale of the head outputs"),
              choice_option("lambda_init", "paper", {"paper", "zero"},
                            "lambda_init buffer: 0.8 - 0.6 exp(-0.3 layer), or 0"),
          },
      .make = make_as<DiffAttention>,
      .check = check_heads,
  };
}

}  // namespace strata
