#include "extra/running_mean.h"

#include <cmath>

#include "core/parallel.h"
#include "kernels/ops.h"
#include "model/registry.h"

namespace strata::test {
namespace {

// Decode state: the F32 sum of every row so far and their count.
struct RunningSumState final : StateOf<RunningSumState> {
  static constexpr const char* kKind = "running-mean";
  std::vector<float> sum;
  int64_t count = 0;
  std::string shape() const { return cat("width ", sum.size()); }
  int64_t bytes() const { return static_cast<int64_t>(sum.size() * sizeof(float) + sizeof(count)); }
};

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

class RunningMean final : public Module {
 public:
  RunningMean(const ModuleSpec& spec, const Config& cfg)
      : Module(spec), dim_(cfg.hidden_size), gate_init_(static_cast<float>(opt_float(spec.options, "gate_init"))) {}

  std::vector<ParamDecl> params() const override {
    return {{prefix() + ".gate", {dim_}, Init::Constant, false, -1.0f, gate_init_},
            {prefix() + ".proj.weight", {dim_, dim_}}};
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    gate_ = b.get(p[0]);
    w_ = b.get(p[1]);
  }
  int64_t out_width() const override { return dim_; }
  std::unique_ptr<LayerState> make_state() const override {
    auto s = std::make_unique<RunningSumState>();
    s->sum.assign(static_cast<size_t>(dim_), 0.0f);
    return s;
  }
  StateSize state_size() const override { return {static_cast<int64_t>(dim_ * sizeof(float) + sizeof(int64_t)), 0, 0}; }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) override {
    const int64_t D = dim_, rows = batch.rows;
    float* m = ctx.scratch.floats(0, static_cast<size_t>(rows * D));
    float* p = ctx.scratch.floats(1, static_cast<size_t>(rows * D));
    // Prefix means, the sum carried left to right (from the state when there is one).
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const SeqSpan& sp = batch.seqs[s];
      RunningSumState* st = states ? &state_of<RunningSumState>(states[s]) : nullptr;
      if (st && st->count != sp.pos) fail(prefix(), ": state holds ", st->count, " rows, the batch starts at ", sp.pos);
      std::vector<float> sum = st ? st->sum : std::vector<float>(static_cast<size_t>(D), 0.0f);
      int64_t n = st ? st->count : 0;
      for (int64_t t = 0; t < sp.len; ++t) {
        const float* xr = x + (sp.row + t) * D;
        float* mr = m + (sp.row + t) * D;
        ++n;
        for (int64_t i = 0; i < D; ++i) mr[i] = (sum[i] += xr[i]) / static_cast<float>(n);
      }
      if (st) {
        st->sum = sum;
        st->count = n;
      }
    }
    linear(ctx, m, rows, w_, p);
    const float* g = gate_.f32();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < D; ++i) y[r * D + i] = sigmoid(g[i]) * p[r * D + i];
    if (ctx.training) {
      saved_m_.assign(m, m + rows * D);
      saved_p_.assign(p, p + rows * D);
    }
  }

  void free_saved() override { release(saved_m_, saved_p_); }
  void bind_grads(GradBinder& gb) override {
    dgate_ = gb.get(prefix() + ".gate");
    dw_ = gb.get(prefix() + ".proj.weight");
  }

  // y = σ(g) ⊙ p, p = m Wᵀ:  dg += Σ dy ⊙ p σ'(g), dp = dy σ(g), dW += dpᵀ m,
  // dm = dp W, and dx_s = Σ_{t ≥ s} dm_t / (t + 1) within each sequence.
  void backward(const float* dy, float* dx, const Batch& batch, Context& ctx) override {
    const int64_t D = dim_, rows = batch.rows;
    float* dp = ctx.scratch.floats(0, static_cast<size_t>(rows * D));
    float* dm = ctx.scratch.floats(1, static_cast<size_t>(rows * D));
    const float* g = gate_.f32();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < D; ++i) {
        const float s = sigmoid(g[i]);
        dgate_[i] += dy[r * D + i] * saved_p_[r * D + i] * s * (1.0f - s);
        dp[r * D + i] = dy[r * D + i] * s;
      }
    ops::matmul_tn_acc(ctx.exec, dp, rows, D, saved_m_.data(), D, dw_);
    ops::matmul_nn(ctx.exec, dp, rows, D, w_.f32(), D, dm);
    for (const SeqSpan& sp : batch.seqs) {
      std::vector<float> acc(static_cast<size_t>(D), 0.0f);
      for (int64_t t = sp.len - 1; t >= 0; --t)
        for (int64_t i = 0; i < D; ++i) {
          acc[i] += dm[(sp.row + t) * D + i] / static_cast<float>(t + 1);
          dx[(sp.row + t) * D + i] = acc[i];
        }
    }
  }

 private:
  int64_t dim_;
  float gate_init_;
  Tensor gate_, w_;
  float *dgate_ = nullptr, *dw_ = nullptr;
  std::vector<float> saved_m_, saved_p_;  // training: prefix means, projections
};

}  // namespace

void register_running_mean() {
  static const bool done = [] {
    register_module_type(ModuleType{
        .kind = "running-mean",
        .name = "running_mean",
        .summary = "causal running mean of the inputs, projected and gated",
        .options = {float_option("gate_init", 0.0, -20.0, 20.0,
                                 "initial gate logit (sigmoid(gate_init) at the start)")},
        .make = make_as<RunningMean>,
    });
    return true;
  }();
  (void)done;
}

}  // namespace strata::test
