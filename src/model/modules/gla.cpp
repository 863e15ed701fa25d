// Gated linear attention (GLA), the mixer of the Sliding GLA baseline
// (docs/linear-attention.md), as flash-linear-attention defines it. For each
// row x, with H heads, Kd = expand_k d keys and Vd = expand_v d values:
//   q = W_q x, k = W_k x, v = W_v x, gate = W_g x        (no positional encoding)
//   log α = logsigmoid(W_gk1 (W_gk0 x) + b_gk) / τ      low-rank gate, τ = 16
//   per head: S_t = diag(α_t) S_{t-1} + k_tᵀ v_t,  o_t = dk^-1/2 q_t S_t
//   out = W_o concat_h( RMSNorm(o_h) w ⊙ SiLU(gate_h) )
// The recurrence runs in the chunked form for training and prefill and as a
// recurrence when decoding (kernels/linear_attention.h); the shared parts are
// in linear_attention_mixer.cpp. Decode state: H x dk x dv per sequence.
#include <cmath>

#include "core/parallel.h"
#include "kernels/ops.h"
#include "model/modules/linear_attention_mixer.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

// Sliding GLA's heads: d / 384.
LinAttnShape gla_shape(const Options& o, const Config& cfg) { return linattn_shape(o, cfg, cfg.hidden_size / 384); }

class Gla final : public LinearAttentionMixer {
 public:
  Gla(const ModuleSpec& spec, const Config& cfg)
      : LinearAttentionMixer(spec, cfg, gla_shape(spec.options, cfg)),
        rank_(opt_int(spec.options, "gate_low_rank_dim")),
        tau_(static_cast<float>(opt_float(spec.options, "gate_logit_normalizer"))) {}

 protected:
  std::vector<ParamDecl> gate_params() const override {
    return {weight("gk_proj.0.weight", rank_, sh_.d, false), weight("gk_proj.1.weight", sh_.Kd, rank_, false),
            {prefix() + ".gk_proj.1.bias", {sh_.Kd}, Init::Zeros, false}};
  }
  void bind_gate(ParamBinder& b, const std::vector<ParamDecl>& p) override {
    w0_ = b.get(p[0]);
    w1_ = b.get(p[1]);
    b1_ = b.get(p[2]);
  }
  void bind_gate_grads(GradBinder& g) override {
    const std::string p = prefix() + ".gk_proj.";
    dw0_ = g.get(p + "0.weight");
    dw1_ = g.get(p + "1.weight");
    db1_ = g.get(p + "1.bias");
  }
  bool scalar_gate() const override { return false; }

  void gates(const Context& ctx, const float* x, int64_t rows, float* g) override {
    const int64_t Kd = sh_.Kd;
    float* low = ctx.scratch.floats(9, static_cast<size_t>(rows * rank_));
    linear(ctx, x, rows, w0_, low);
    linear(ctx, low, rows, w1_, g);
    if (ctx.training) {
      saved_low_.assign(low, low + rows * rank_);
      saved_gk_.resize(static_cast<size_t>(rows * Kd));
    }
    const float* b = b1_.f32();
    parallel_for(rows, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r)
        for (int64_t c = 0; c < Kd; ++c) {
          const float z = g[r * Kd + c] + b[c];
          if (ctx.training) saved_gk_[r * Kd + c] = z;
          // logsigmoid(z) = min(z, 0) - log1p(e^{-|z|}), exact for either sign
          g[r * Kd + c] = (std::min(z, 0.0f) - std::log1p(std::exp(-std::fabs(z)))) / tau_;
        }
    });
  }

  void gates_backward(const Context& ctx, const float* x, const float* dg, int64_t rows, float* dx) override {
    const int64_t Kd = sh_.Kd, d = sh_.d;
    const Exec& ex = ctx.exec;
    // d(log α)/dz = σ(-z) / τ
    float* dz = ctx.scratch.floats(9, static_cast<size_t>(rows * Kd));
    float* dlow = ctx.scratch.floats(10, static_cast<size_t>(rows * rank_));
    parallel_for(rows, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo * Kd; i < hi * Kd; ++i) dz[i] = dg[i] / (1.0f + std::exp(saved_gk_[i])) / tau_;
    });
    parallel_for(Kd, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = lo; c < hi; ++c) db1_[c] += dz[r * Kd + c];
    });
    ops::matmul_tn_acc(ex, dz, rows, Kd, saved_low_.data(), rank_, dw1_);
    ops::matmul_nn(ex, dz, rows, Kd, w1_.f32(), rank_, dlow);
    ops::matmul_tn_acc(ex, dlow, rows, rank_, x, d, dw0_);
    ops::gemm(ex, rows, d, rank_, {dlow, rank_, 1}, {w0_.f32(), d, 1}, dx, d, true);
  }
  void free_gates() override { release(saved_low_, saved_gk_); }

 private:
  int64_t rank_;
  float tau_;
  Tensor w0_, w1_, b1_;
  float *dw0_ = nullptr, *dw1_ = nullptr, *db1_ = nullptr;
  std::vector<float> saved_low_, saved_gk_;  // training: W_gk0 x and the gate logits
};

void check_gla(const Options& o, const Config& cfg, const FieldName& field) {
  check_linattn_shape(gla_shape(o, cfg), field, false);
}

}  // namespace

ModuleType gla_module() {
  return ModuleType{
      .kind = "gla",
      .name = "gla",
      .summary = "gated linear attention (data-dependent per-channel decay, chunked form, SiLU output gate)",
      .options = linattn_options(
          "hidden_size / 384, at least 1", 0.5, 1.0,
          {int_option("gate_low_rank_dim", 16, 1, int64_t{1} << 16, "rank of the forget-gate projection"),
           float_option("gate_logit_normalizer", 16.0, 1e-6, 1e6, "log forget gate = logsigmoid(logit) / this")}),
      .make = make_as<Gla>,
      .check = check_gla,
  };
}

}  // namespace strata
