// Multi-scale retention (RetNet), the mixer of the Sliding RetNet baseline
// (docs/linear-attention.md), as flash-linear-attention defines it. For each
// row x at absolute position p, with H heads, Kd = expand_k d, Vd = expand_v d:
//   q, k = RoPE_p(W_q x), RoPE_p(W_k x)   (NeoX half-split over dk, rope_theta)
//   v = W_v x, gate = W_g x
//   per head h, fixed decay γ_h = 1 - 2^(-5-h):
//     S_t = γ_h S_{t-1} + k_tᵀ v_t,  o_t = dk^-1/2 q_t S_t
//   out = W_o concat_h( RMSNorm(o_h) w ⊙ SiLU(gate_h) )
// It is gated linear attention with the constant log gate log γ_h
// (kernels/linear_attention.h, scalar gate); the shared parts are in
// linear_attention_mixer.cpp. Decode state: H x dk x dv and the position.
#include <cmath>

#include "model/modules/attention_core.h"
#include "model/modules/linear_attention_mixer.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

// Sliding RetNet's heads: half the attention heads.
LinAttnShape retnet_shape(const Options& o, const Config& cfg) {
  return linattn_shape(o, cfg, cfg.num_attention_heads / 2);
}

// RoPE over one head's dk channels, at the model's theta.
std::shared_ptr<const RopeTable> head_rope(const Config& cfg, int64_t dk) {
  Config c = cfg;
  c.head_dim = dk;
  c.rope_scaling_factor = 1.0;
  return RopeTable::get(c);
}

class RetNet final : public LinearAttentionMixer {
 public:
  RetNet(const ModuleSpec& spec, const Config& cfg) : LinearAttentionMixer(spec, cfg, retnet_shape(spec.options, cfg)) {
    rope_ = head_rope(cfg, sh_.dk);
    for (int64_t h = 0; h < sh_.H; ++h)
      log_gamma_.push_back(static_cast<float>(std::log1p(-std::exp2(-5.0 - static_cast<double>(h)))));
  }

 protected:
  bool scalar_gate() const override { return true; }
  const float* head_gate(int64_t h) const override { return &log_gamma_[static_cast<size_t>(h)]; }
  void rotate(const Context& ctx, float* q, float* k, int64_t rows, const int64_t* pos, bool inverse) override {
    rope_->rotate(ctx.kt(), q, rows, sh_.Kd, sh_.H, pos, inverse);
    rope_->rotate(ctx.kt(), k, rows, sh_.Kd, sh_.H, pos, inverse);
  }

 private:
  std::shared_ptr<const RopeTable> rope_;
  std::vector<float> log_gamma_;  // log γ_h
};

void check_retnet(const Options& o, const Config& cfg, const FieldName& field) {
  check_linattn_shape(retnet_shape(o, cfg), field, true);
}

}  // namespace

ModuleType retnet_module() {
  return ModuleType{
      .kind = "retnet",
      .name = "retnet",
      .summary = "multi-scale retention (fixed per-head decay, RoPE, chunked form, SiLU output gate)",
      .options = linattn_options("half the attention heads, at least 1", 1.0, 2.0, {}),
      .make = make_as<RetNet>,
      .check = check_retnet,
  };
}

}  // namespace strata
