// Squeeze-and-excitation gate over channels (docs/context-modules.md):
//   s = context mean of f,  z = fc2(relu(fc1(s))),  out = f ⊙ 2σ(z).
// 2σ instead of σ makes the identity representable: fc2 = 0 gives z = 0,
// gate 2 · 0.5 = 1 exactly and out = f bit for bit. The gate lies in (0, 2).
#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "kernels/ops.h"
#include "model/context_stats.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

class SqueezeExcite final : public Module {
 public:
  SqueezeExcite(const Config& cfg, const std::string& prefix)
      : prefix_(prefix), dim_(cfg.hidden_size), ctx_(ctx_mode_of(cfg), cfg.hidden_size, prefix) {
    if (cfg.se_reduction < 1 || cfg.hidden_size % cfg.se_reduction != 0)
      fail(prefix_, ": se_reduction ", cfg.se_reduction, " does not divide hidden_size ", cfg.hidden_size);
    hidden_ = cfg.hidden_size / cfg.se_reduction;
  }

  const char* kind() const override { return "se"; }
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

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Scratch& scratch) override {
    const int64_t rows = batch.rows, D = dim_, H = hidden_, S = ctx_.rows(batch);
    if (training_ && states) fail(prefix_, ": training forward runs without decode states");
    float* s = scratch.floats(0, static_cast<size_t>(S * D));
    float* p = scratch.floats(1, static_cast<size_t>(S * H));
    float* h = scratch.floats(2, static_cast<size_t>(S * H));
    float* gate = scratch.floats(3, static_cast<size_t>(S * D));
    ctx_.forward(x, s, batch, states);
    ops::matmul(s, S, fc1_, p);
    for (int64_t i = 0; i < S * H; ++i) {
      p[i] += b1_.f32()[i % H];
      h[i] = std::max(p[i], 0.0f);
    }
    ops::matmul(h, S, fc2_, gate);
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
    if (training_) {
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
  void backward(const float* dy, float* dx, const Batch& batch, Scratch& scratch) override {
    const int64_t rows = batch.rows, D = dim_, H = hidden_, S = ctx_.rows(batch);
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
    ops::matmul_tn_acc(dz, S, D, h, H, dfc2_);
    ops::matmul_nn(dz, S, D, fc2_.f32(), H, dp);
    for (int64_t i = 0; i < S * H; ++i)
      if (saved_p_[i] <= 0.0f) dp[i] = 0.0f;
    add_column_sums(dp, S, H, db1_);
    ops::matmul_tn_acc(dp, S, H, saved_s_.data(), D, dfc1_);
    ops::matmul_nn(dp, S, H, fc1_.f32(), D, ds);
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

std::unique_ptr<Module> make_se(const Config& cfg, const std::string& prefix) {
  return std::make_unique<SqueezeExcite>(cfg, prefix);
}

}  // namespace strata
