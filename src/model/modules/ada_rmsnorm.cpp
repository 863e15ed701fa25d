// Adaptive RMSNorm (docs/context-modules.md):
//   x̂ = x / sqrt(mean(x²) + eps),   c = context mean of x̂,
//   g = ctx_up(silu(ctx_down(c))),  y = (weight ⊙ x̂) ⊙ (1 + tanh(g)).
// x̂ and weight ⊙ x̂ come from the same kernel as the plain RMSNorm, so with
// ctx_up = 0 (g = 0, factor exactly 1) the output is the RMSNorm's, bit for
// bit. ada_rank = 0 leaves only `weight`: a plain RMSNorm.
#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "model/modules/context_stats.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

class AdaRmsNorm final : public Module {
 public:
  AdaRmsNorm(const ModuleSpec& spec, const Config& cfg)
      : Module(spec),
        prefix_(spec.prefix),
        dim_(cfg.hidden_size),
        rank_(opt_int(spec.options, "rank")),
        eps_(static_cast<float>(cfg.rms_norm_eps)),
        ctx_(ctx_mode_of(spec.options), cfg.hidden_size, spec.prefix),
        ones_(static_cast<size_t>(cfg.hidden_size), 1.0f) {}

  std::vector<ParamDecl> params() const override {
    std::vector<ParamDecl> p = {{prefix_ + ".weight", {dim_}, Init::Ones, false}};
    if (rank_ > 0) {
      const float std_dev = 1.0f / std::sqrt(static_cast<float>(dim_));
      p.push_back({prefix_ + ".ctx_down.weight", {rank_, dim_}, Init::Normal, true, std_dev});
      p.push_back({prefix_ + ".ctx_up.weight", {dim_, rank_}, Init::Zeros, true});
    }
    return p;
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    w_ = b.get(p[0]);
    if (rank_ > 0) {
      down_ = b.get(p[1]);
      up_ = b.get(p[2]);
    }
  }
  int64_t out_width() const override { return dim_; }
  bool causal() const override { return rank_ == 0 || ctx_.causal(); }
  std::unique_ptr<LayerState> make_state() const override { return rank_ > 0 ? ctx_.make_state() : nullptr; }
  StateSize state_size() const override { return rank_ > 0 ? ctx_.state_size() : StateSize{}; }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) override {
    const int64_t rows = batch.rows, D = dim_, r = rank_;
    if (ctx.training && states) fail(prefix_, ": training forward runs without decode states");
    Scratch& scratch = ctx.scratch;
    float* xhat = scratch.floats(0, static_cast<size_t>(rows * D));
    normalize(ctx.kt(), x, rows, xhat);
    // Context -> tanh(g), one row per statistic row (per row, or per sequence).
    const int64_t S = r > 0 ? ctx_.rows(batch) : 0;
    float* tanh_g = nullptr;
    if (r > 0) {
      float* c = scratch.floats(1, static_cast<size_t>(S * D));
      float* a = scratch.floats(2, static_cast<size_t>(S * r));
      float* h = scratch.floats(3, static_cast<size_t>(S * r));
      tanh_g = scratch.floats(4, static_cast<size_t>(S * D));
      ctx_.forward(xhat, c, batch, states);
      ops::matmul(ctx.exec, c, S, down_, a);
      for (int64_t i = 0; i < S * r; ++i) h[i] = a[i] / (1.0f + std::exp(-a[i]));
      ops::matmul(ctx.exec, h, S, up_, tanh_g);
      parallel_for(S * D, 1 << 14, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) tanh_g[i] = std::tanh(tanh_g[i]);
      });
      ctx_.stat_rows(batch, stat_);
      if (ctx.training) {
        saved_c_.assign(c, c + S * D);
        saved_a_.assign(a, a + S * r);
        saved_tanh_.assign(tanh_g, tanh_g + S * D);
      }
    }
    if (ctx.training) saved_x_.assign(x, x + rows * D);
    const float* w = w_.f32();
    parallel_for(rows, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) {
        const float* xr = xhat + row * D;
        float* yr = y + row * D;
        if (!tanh_g) {
          for (int64_t i = 0; i < D; ++i) yr[i] = w[i] * xr[i];
          continue;
        }
        const float* tg = tanh_g + stat_[row] * D;
        for (int64_t i = 0; i < D; ++i) yr[i] = (w[i] * xr[i]) * (1.0f + tg[i]);
      }
    });
  }

  void free_saved() override { release(saved_x_, saved_c_, saved_a_, saved_tanh_); }
  void bind_grads(GradBinder& gb) override {
    dw_ = gb.get(prefix_ + ".weight");
    if (rank_ > 0) {
      ddown_ = gb.get(prefix_ + ".ctx_down.weight");
      dup_ = gb.get(prefix_ + ".ctx_up.weight");
    }
  }

  // With m = 1 + tanh(g):  dweight += dy x̂ m,  dx̂ = dy weight m (+ the
  // context path), dg = dy weight x̂ (1 - tanh²g) summed per statistic row;
  // then through ctx_up, silu, ctx_down and the context mean, and finally the
  // RMS normalisation: dx = r dx̂ - x r³ (dx̂ · x) / D with r = 1/RMS(x).
  void backward(const float* dy, float* dx, const Batch& batch, Context& ctx) override {
    const int64_t rows = batch.rows, D = dim_, r = rank_;
    const Exec& ex = ctx.exec;
    Scratch& scratch = ctx.scratch;
    const int64_t S = r > 0 ? ctx_.rows(batch) : 0;
    const float* x = saved_x_.data();
    const float* w = w_.f32();
    float* xhat = scratch.floats(0, static_cast<size_t>(rows * D));
    float* dxhat = scratch.floats(1, static_cast<size_t>(rows * D));
    float* dg = scratch.floats(2, static_cast<size_t>(S * D));
    normalize(ctx.kt(), x, rows, xhat);  // cheaper to redo than to keep
    if (r > 0) ctx_.stat_rows(batch, stat_);
    std::fill(dg, dg + S * D, 0.0f);
    // Channel blocks over the threads: each owns its slice of dweight and dg.
    parallel_for(D, kChannelBlock, [&](int64_t lo, int64_t hi) {
      for (int64_t row = 0; row < rows; ++row) {
        const float* tg = r > 0 ? &saved_tanh_[stat_[row] * D] : nullptr;
        float* dgr = r > 0 ? dg + stat_[row] * D : nullptr;
        for (int64_t i = lo; i < hi; ++i) {
          const float d = dy[row * D + i], xh = xhat[row * D + i];
          const float m = tg ? 1.0f + tg[i] : 1.0f;
          dw_[i] += d * xh * m;
          dxhat[row * D + i] = d * w[i] * m;
          if (dgr) dgr[i] += d * w[i] * xh * (1.0f - tg[i] * tg[i]);
        }
      }
    });
    if (r > 0) {
      float* h = scratch.floats(3, static_cast<size_t>(S * r));
      float* dh = scratch.floats(4, static_cast<size_t>(S * r));
      float* dc = scratch.floats(5, static_cast<size_t>(S * D));
      const float* a = saved_a_.data();
      for (int64_t i = 0; i < S * r; ++i) h[i] = a[i] / (1.0f + std::exp(-a[i]));
      ops::matmul_tn_acc(ex, dg, S, D, h, r, dup_);
      ops::matmul_nn(ex, dg, S, D, up_.f32(), r, dh);
      for (int64_t i = 0; i < S * r; ++i) {  // silu'(a) = σ(a) (1 + a (1 - σ(a)))
        const float sg = 1.0f / (1.0f + std::exp(-a[i]));
        dh[i] *= sg * (1.0f + a[i] * (1.0f - sg));
      }
      ops::matmul_tn_acc(ex, dh, S, r, saved_c_.data(), D, ddown_);
      ops::matmul_nn(ex, dh, S, r, down_.f32(), D, dc);
      ctx_.backward_add(dc, dxhat, batch);
    }
    // x̂ = x / RMS(x) is an RMSNorm with unit weights: its backward from d(x̂).
    ops::rmsnorm_backward(x, nullptr, dxhat, dx, nullptr, rows, D, eps_);
  }

 private:
  // x̂ rows through the RMSNorm kernel with unit weights: w · (r · x) with
  // w = 1 is r · x exactly, the very value the plain RMSNorm multiplies by w.
  void normalize(const kernels::Table& kt, const float* x, int64_t rows, float* xhat) const {
    parallel_for(rows, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) kt.rmsnorm(x + i * dim_, ones_.data(), xhat + i * dim_, dim_, eps_);
    });
  }

  std::string prefix_;
  int64_t dim_, rank_;
  float eps_;
  ContextMean ctx_;
  std::vector<float> ones_;
  Tensor w_, down_, up_;
  float *dw_ = nullptr, *ddown_ = nullptr, *dup_ = nullptr;
  // Training: inputs, context means, ctx_down outputs and tanh(g).
  std::vector<float> saved_x_, saved_c_, saved_a_, saved_tanh_;
  std::vector<int64_t> stat_;  // statistic row of every row of the current call
};

}  // namespace

ModuleType ada_rmsnorm_module() {
  return ModuleType{
      .kind = "ada-rmsnorm",
      .name = "norm",
      .summary = "adaptive RMSNorm: RMSNorm scaled by 1 + tanh(ctx_up(silu(ctx_down(context mean))))",
      .options = {int_option("rank", 64, 0, int64_t{1} << 20, "context rank (0: a plain RMSNorm)"), ctx_mode_option()},
      .make = make_as<AdaRmsNorm>,
  };
}

}  // namespace strata
