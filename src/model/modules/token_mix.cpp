// Token mixing: a causal depthwise convolution over the last k rows
// (docs/context-modules.md), PyTorch Conv1d layout weight [D, 1, k]:
//   y[t, c] = bias[c] + sum_j weight[c, 0, j] · u[t - (k-1) + j, c],  u[τ < 0] = 0.
// Tap k-1 multiplies the current row. Decode state: the last k-1 inputs of
// the sequence (oldest first, zeros before the start). The Dirac init
// (tap k-1 = 1, others and bias 0) passes the input through exactly:
// 0 + 0·u + ... + 1·u = u in IEEE arithmetic.
#include "model/modules/causal_conv.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

struct ConvWindow final : StateOf<ConvWindow> {
  static constexpr const char* kKind = "conv-window";
  std::vector<float> rows;  // [k-1, D], oldest first
  int64_t count = 0;        // rows seen so far
  std::string shape() const { return cat(rows.size(), " values"); }
  int64_t bytes() const { return static_cast<int64_t>(rows.size() * sizeof(float) + sizeof(count)); }
};

class TokenMix final : public Module {
 public:
  TokenMix(const ModuleSpec& spec, const Config& cfg)
      : Module(spec), prefix_(spec.prefix), dim_(cfg.hidden_size), taps_(opt_int(spec.options, "kernel")),
        conv_(dim_, taps_) {}

  std::vector<ParamDecl> params() const override {
    return {{prefix_ + ".weight", {dim_, 1, taps_}, Init::DiracLast, false},
            {prefix_ + ".bias", {dim_}, Init::Zeros, false}};
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    w_ = b.get(p[0]);
    bias_ = b.get(p[1]);
  }
  int64_t out_width() const override { return dim_; }

  std::unique_ptr<LayerState> make_state() const override {
    auto s = std::make_unique<ConvWindow>();
    s->rows = conv_.zero_window();
    return s;
  }
  StateSize state_size() const override {
    return {static_cast<int64_t>(conv_.zero_window().size() * sizeof(float) + sizeof(int64_t)), 0, 0};
  }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) override {
    const int64_t D = dim_, k = taps_;
    if (ctx.training && states) fail(prefix_, ": training forward runs without decode states");
    std::vector<ConvWindow*> st(batch.seqs.size(), nullptr);
    std::vector<const float*> windows(batch.seqs.size(), nullptr);
    for (size_t s = 0; s < batch.seqs.size() && states; ++s) {
      st[s] = &state_of<ConvWindow>(states[s]);
      if (static_cast<int64_t>(st[s]->rows.size()) != (k - 1) * D)
        fail(prefix_, ": sequence ", s, " has no token-mixing state of width ", D);
      if (st[s]->count != batch.seqs[s].pos)
        fail(prefix_, ": state holds ", st[s]->count, " positions but the batch starts at ", batch.seqs[s].pos);
      windows[s] = st[s]->rows.data();
    }
    conv_.forward(ctx.kt(), w_.f32(), bias_.f32(), x, D, y, D, batch, windows.data(), false);
    for (size_t s = 0; s < batch.seqs.size() && states; ++s) {
      conv_.advance(st[s]->rows.data(), x, D, batch.seqs[s]);
      st[s]->count += batch.seqs[s].len;
    }
    if (ctx.training) saved_u_.assign(x, x + batch.rows * D);
  }

  void free_saved() override { release(saved_u_); }
  void bind_grads(GradBinder& gb) override {
    dw_ = gb.get(prefix_ + ".weight");
    dbias_ = gb.get(prefix_ + ".bias");
  }

  void backward(const float* dy, float* dx, const Batch& batch, Context&) override {
    conv_.backward(w_.f32(), dy, dim_, saved_u_.data(), dim_, dx, dim_, dw_, dbias_, batch);
  }

 private:
  std::string prefix_;
  int64_t dim_, taps_;
  CausalConv conv_;
  Tensor w_, bias_;
  float *dw_ = nullptr, *dbias_ = nullptr;
  std::vector<float> saved_u_;  // training: the inputs
};

}  // namespace

ModuleType token_mix_module() {
  return ModuleType{
      .kind = "token-mix",
      .name = "token_mixing",
      .summary = "token mixing: causal depthwise convolution over the last `kernel` rows",
      .options = {int_option("kernel", 4, 1, 8, "taps of the convolution (the current row and kernel-1 before it)")},
      .make = make_as<TokenMix>,
  };
}

}  // namespace strata
