// What the GLA and RetNet mixers share (docs/linear-attention.md): per head h
// of H, with dk = Kd / H key and dv = Vd / H value channels,
//   q = W_q x, k = W_k x, v = W_v x, gate = W_g x
//   o_h = the gated linear attention of (q_h, k_h, v_h) under the mixer's
//         log forget gates (kernels/linear_attention.h), q scaled by dk^-1/2
//   out = W_o concat_h( RMSNorm_dv(o_h) ⊙ w_norm ⊙ SiLU(gate_h) )
// with one RMSNorm weight w_norm [dv] shared by the heads. A mixer supplies
// its gates (GLA: from the input; RetNet: a fixed decay per head), may rotate
// q and k (RetNet's RoPE) and may add parameters (GLA's gate projection).
// Decode state per sequence: the H x dk x dv recurrent state, constant in the
// sequence's length, and the count of positions seen.
#pragma once
#include <string>
#include <vector>

#include "kernels/linear_attention.h"
#include "model/module.h"
#include "model/registry.h"

namespace strata {

struct LinAttnState final : StateOf<LinAttnState> {
  static constexpr const char* kKind = "linear-attention-state";
  int64_t H = 0, dk = 0, dv = 0;
  std::vector<float> S;  // [H, dk, dv]
  int64_t count = 0;     // positions seen
  std::string shape() const { return cat("heads ", H, ", dk ", dk, ", dv ", dv); }
  int64_t bytes() const { return static_cast<int64_t>(S.size() * sizeof(float) + sizeof(count)); }
  std::vector<std::pair<std::string, Tensor>> export_tensors() const override;
};

// The sizes of one mixer.
struct LinAttnShape {
  int64_t d = 0, H = 0, Kd = 0, Vd = 0, dk = 0, dv = 0;
  double eps = 1e-5;
  int64_t chunk = 64;
};

// The options both mixers declare, in order: num_heads (0: the mixer's rule,
// heads_help), expand_k, expand_v, then `own`, then norm_eps and chunk.
std::vector<OptionDecl> linattn_options(const std::string& heads_help, double expand_k, double expand_v,
                                        std::vector<OptionDecl> own);
// The sizes from a mixer's options (num_heads, expand_k, expand_v, norm_eps,
// chunk); num_heads 0 takes default_heads (the mixer's rule), at least 1.
LinAttnShape linattn_shape(const Options& o, const Config& cfg, int64_t default_heads);
// Checks the widths split into the heads (key heads of an even width when
// pairs_of_keys, for RoPE), naming field("expand_k") / field("expand_v").
void check_linattn_shape(const LinAttnShape& s, const FieldName& field, bool pairs_of_keys);

class LinearAttentionMixer : public Module {
 public:
  std::vector<ParamDecl> params() const override;
  void bind(ParamBinder& b) override;
  int64_t out_width() const override { return sh_.d; }
  std::unique_ptr<LayerState> make_state() const override;
  StateSize state_size() const override;
  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) override;
  void bind_grads(GradBinder& g) override;
  void backward(const float* dy, float* dx, const Batch& batch, Context& ctx) override;
  void free_saved() override;

 protected:
  LinearAttentionMixer(const ModuleSpec& spec, const Config& cfg, LinAttnShape shape);

  // The mixer's own parameters (declared between g_proj and o_proj), bound
  // in that order; their gradients.
  virtual std::vector<ParamDecl> gate_params() const { return {}; }
  virtual void bind_gate(ParamBinder&, const std::vector<ParamDecl>&) {}
  virtual void bind_gate_grads(GradBinder&) {}
  // The log forget gates of `rows` input rows: per channel into g [rows, Kd]
  // (a training call keeps what gates_backward needs), or, for scalar gates,
  // nothing here and head_gate() instead.
  virtual bool scalar_gate() const = 0;
  virtual void gates(const Context&, const float* /*x*/, int64_t /*rows*/, float* /*g*/) {}
  virtual const float* head_gate(int64_t /*h*/) const { return nullptr; }
  // dx += the input gradient through the gates, from dg [rows, Kd]; adds the
  // gate parameters' gradients.
  virtual void gates_backward(const Context&, const float* /*x*/, const float* /*dg*/, int64_t /*rows*/,
                              float* /*dx*/) {}
  virtual void free_gates() {}
  // Rotates q and k ([rows, Kd], row r at position pos[r]) in place; inverse:
  // the backward of the rotation. None by default.
  virtual void rotate(const Context&, float* /*q*/, float* /*k*/, int64_t /*rows*/, const int64_t* /*pos*/,
                      bool /*inverse*/) {}

  // Weight init: the scheme's draw, or, under the mamba scheme, the mixers'
  // own xavier-uniform (gain 2^-2.5), o_proj scaled down with depth.
  ParamDecl weight(const std::string& name, int64_t out, int64_t in, bool residual) const;

  LinAttnShape sh_;
  int64_t n_res_ = 1, layers_ = 1;
  std::string init_scheme_;

 private:
  // Runs the recurrence of every (sequence, head): from the states or zeros;
  // training keeps the chunk states.
  void run_heads(const Context& ctx, const Batch& batch, LinAttnState* const* st, const float* q, const float* k,
                 const float* v, const float* g, float* o, bool save);
  // gated = RMSNorm(o_h) w ⊙ SiLU(gate), per row and head; normed kept if non-null.
  void output_gate(const kernels::Table& kt, const float* o, const float* gate, int64_t rows, float* gated,
                   float* normed) const;
  ops::LinAttnHead head_args(const Batch& batch, size_t s, int64_t h, const float* q, const float* k,
                             const float* v, const float* g, float* o, float* S) const;

  Tensor wq_, wk_, wv_, wg_, wo_, norm_;
  float *dwq_ = nullptr, *dwk_ = nullptr, *dwv_ = nullptr, *dwg_ = nullptr, *dwo_ = nullptr, *dnorm_ = nullptr;
  // Training: what backward reads.
  std::vector<float> saved_x_, saved_q_, saved_k_, saved_v_, saved_gate_, saved_g_, saved_o_, saved_states_;
  std::vector<size_t> state_start_;  // per (sequence, head): its first chunk state in saved_states_
  std::vector<int64_t> pos_;          // per row: absolute position
};

}  // namespace strata
