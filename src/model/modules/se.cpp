// Squeeze-and-excitation gate over channels (docs/context-modules.md):
//   s = context mean of f,  z = fc2(relu(fc1(s))),  out = f ⊙ 2σ(z).
// 2σ instead of σ makes the identity representable: fc2 = 0 gives z = 0,
// gate 2 · 0.5 = 1 exactly and out = f bit for bit. The gate lies in (0, 2).
#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "kernels/ops.h"
#include "model/modules/context_stats.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

// The reduction must divide the width.
void check_reduction(const Options& o, const Config& cfg, const FieldName& field) {
  const int64_t r = opt_int(o, "reduction");
  if (r < 1 || cfg.hidden_size % r != 0) fail(field("reduction"), ": ", r, " does not divide hidden_size ", cfg.hidden_size);
}

class SqueezeExcite final : public Module {
 public:
  SqueezeExcite(const ModuleSpec& spec, const Config& cfg)
      : Module(spec), prefix_(spec.prefix), dim_(cfg.hidden_size), ctx_(ctx_mode_of(spec.options), cfg.hidden_size, spec.prefix) {
    check_reduction(spec.options, cfg, [&](const std::string& o) { return cat(prefix_, ": option '", o, "'"); });
    hidden_ = cfg.hidden_size / opt_int(spec.options, "reduction");
  }

  std::vector<ParamDecl> params() const override {
    const float std_dev = 1.0f / std::sqrt(static_cast<float>(dim_));
    return {{prefix_ + ".fc1.weight", {hidden_, dim_}, Init::Normal, true, std_dev},
            {prefix_ + ".fc1.bias", {hidden_}, Init::Zeros, false},
            {prefix_ + ".fc2.weight", {dim_, hidden_}, Init::Zeros, true},
            {prefix_ + ".fc2.bias", {dim_}, Init::Zeros, false}};
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    fc1_ = b.get(p[0]);
    b1_ = b.get(p[1]);
    fc2_ = b.get(p[2]);
    b2_ = b.get(p[3]);
  }
  int64_t out_width() const override { return dim_; }
  bool causal() const override { return ctx_.causal(); }
  std::unique_ptr<LayerState> make_state() const override { return ctx_.make_state(); }
  StateSize state_size() const override { return ctx_.state_size(); }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) override {
    const int64_t rows = batch.rows, D = dim_, H = hidden_, S = ctx_.rows(batch);
    if (ctx.training && states) fail(prefix_, ": training forward runs without decode states");
    Scratch& scratch = ctx.scratch;
    float* s = scratch.floats(0, static_cast<size_t>(S * D));
    float* p = scratch.floats(1, static_cast<size_t>(S * H));
    float* h = scratch.floats(2, static_cast<size_t>(S * H));
    float* gate = scratch.floats(3, static_cast<size_t>(S * D));
    ctx_.forward(x, s, batch, states);
    ops::matmul(ctx.exec, s, S, fc1_, p);
    for (int64_t i = 0; i < S * H; ++i) {
      p[i] += b1_.f32()[i % H];
      h[i] = std::max(p[i], 0.0f);
    }
    ops::matmul(ctx.exec, h, S, fc2_, gate);
    const float* b2 = b2_.f32();
    parallel_for(S * D, 1 << 14, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) gate[i] = 2.0f * (1.0f / (1.0f + std::exp(-(gate[i] + b2[i % D]))));
    });
    ctx_.stat_rows(batch, stat_);
    parallel_for(rows, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) {
        const float* gr = gate + stat_[row] * D;
        for (int64_t i = 0; i < D; ++i) y[row * D + i] = x[row * D + i] * gr[i];
      }
    });
    if (ctx.training) {
      saved_f_.assign(x, x + rows * D);
      saved_s_.assign(s, s + S * D);
      saved_p_.assign(p, p + S * H);
      saved_gate_.assign(gate, gate + S * D);
    }
  }

  void free_saved() override { release(saved_f_, saved_s_, saved_p_, saved_gate_); }
  void bind_grads(GradBinder& gb) override {
    dfc1_ = gb.get(prefix_ + ".fc1.weight");
    db1_ = gb.get(prefix_ + ".fc1.bias");
    dfc2_ = gb.get(prefix_ + ".fc2.weight");
    db2_ = gb.get(prefix_ + ".fc2.bias");
  }

  // df = dy ⊙ gate (+ the squeeze path); dgate = dy ⊙ f summed per statistic
  // row; dz = dgate · gate (1 - gate/2) (the derivative of 2σ); then the two
  // linear layers and the relu back to ds, and the context mean back to df.
  void backward(const float* dy, float* dx, const Batch& batch, Context& ctx) override {
    const int64_t rows = batch.rows, D = dim_, H = hidden_, S = ctx_.rows(batch);
    const Exec& ex = ctx.exec;
    Scratch& scratch = ctx.scratch;
    const float* f = saved_f_.data();
    const float* gate = saved_gate_.data();
    float* dz = scratch.floats(0, static_cast<size_t>(S * D));
    float* h = scratch.floats(1, static_cast<size_t>(S * H));
    float* dp = scratch.floats(2, static_cast<size_t>(S * H));
    float* ds = scratch.floats(3, static_cast<size_t>(S * D));
    std::fill(dz, dz + S * D, 0.0f);
    ctx_.stat_rows(batch, stat_);
    parallel_for(D, kChannelBlock, [&](int64_t lo, int64_t hi) {  // each block owns its channels of dz
      for (int64_t row = 0; row < rows; ++row) {
        const float* gr = gate + stat_[row] * D;
        float* dzr = dz + stat_[row] * D;
        for (int64_t i = lo; i < hi; ++i) {
          dx[row * D + i] = dy[row * D + i] * gr[i];
          dzr[i] += dy[row * D + i] * f[row * D + i];
        }
      }
    });
    for (int64_t i = 0; i < S * D; ++i) dz[i] *= gate[i] * (1.0f - 0.5f * gate[i]);
    for (int64_t i = 0; i < S * H; ++i) h[i] = std::max(saved_p_[i], 0.0f);
    add_column_sums(dz, S, D, db2_);
    ops::matmul_tn_acc(ex, dz, S, D, h, H, dfc2_);
    ops::matmul_nn(ex, dz, S, D, fc2_.f32(), H, dp);
    for (int64_t i = 0; i < S * H; ++i)
      if (saved_p_[i] <= 0.0f) dp[i] = 0.0f;
    add_column_sums(dp, S, H, db1_);
    ops::matmul_tn_acc(ex, dp, S, H, saved_s_.data(), D, dfc1_);
    ops::matmul_nn(ex, dp, S, H, fc1_.f32(), D, ds);
    ctx_.backward_add(ds, dx, batch);
  }

 private:
  std::string prefix_;
  int64_t dim_, hidden_ = 0;
  ContextMean ctx_;
  Tensor fc1_, b1_, fc2_, b2_;
  float *dfc1_ = nullptr, *db1_ = nullptr, *dfc2_ = nullptr, *db2_ = nullptr;
  // Training: inputs, squeezed means, fc1 outputs before the relu, gates.
  std::vector<float> saved_f_, saved_s_, saved_p_, saved_gate_;
  std::vector<int64_t> stat_;  // statistic row of every row of the current call
};

}  // namespace

ModuleType se_module() {
  return ModuleType{
      .kind = "se",
      .name = "se",
      .summary = "squeeze-and-excitation gate: f * 2 sigmoid(fc2(relu(fc1(context mean of f))))",
      .options = {int_option("reduction", 16, 1, int64_t{1} << 20, "hidden width = hidden_size / reduction"),
                  ctx_mode_option()},
      .make = make_as<SqueezeExcite>,
      .check = check_reduction,
  };
}

}  // namespace strata
