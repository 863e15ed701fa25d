// The hypernetwork of recursive soft prompting (docs/hypernet.md): a
// bidirectional pre-norm Llama-style encoder at the model's width D that maps
// a soft prompt S [P, D] and the embedded tokens x [n, D] of a chunk to the
// next soft prompt:
//   Z = [S ; x]                                      positions 0 .. P+n-1 (RoPE)
//   Z = Z + Attn_i(RMSNorm(Z));  Z = Z + MLP_i(RMSNorm(Z))      i < layers
//   H(S, x) = S + out_proj(RMSNorm(Z[:P]))
// Attention is bidirectional within an example; the examples of a call are
// separate sequences (no padding), so an example's result never depends on
// the others. With out_proj = 0 (its init), H(S, x) = S exactly.
#pragma once
#include <memory>
#include <span>
#include <vector>

#include "io/safetensors.h"
#include "model/module.h"
#include "model/stack.h"

namespace strata {

inline constexpr const char* kSoftPromptName = "hypernet.sp0";

// The hypernetwork's parameters (group "hypernet", names hypernet.*), in
// load/save order. embed_std: the spread of the token embeddings at init,
// which sp0 is drawn with (so the initial soft prompt looks like tokens).
std::vector<DeclaredParam> hypernet_params(const Config& cfg, float embed_std);

// A freshly initialised hypernetwork for `base` (which must have none):
// cfg (the base's config) gets `shape` as its strata_hypernet, and the
// result holds the base's tensors followed by the hypernetwork's, drawn for
// `seed` (sp0 with the measured spread of the base's embedding entries,
// out_proj = 0, so the model starts out as the base behaves with the fixed
// prefix sp0).
NamedTensors add_hypernet(const Model& base, const Config::Hypernet& shape, uint64_t seed, Config* cfg);

// The soft prompt the model's hypernetwork writes from a query: S(1) =
// H(sp0, E[query]) [P, D] (inference).
std::vector<float> first_soft_prompt(const Model& model, std::span<const int32_t> query);

class Hypernet {
 public:
  explicit Hypernet(const Config& cfg);
  ~Hypernet();
  int64_t soft_tokens() const { return P_; }
  int64_t width() const { return D_; }
  // Its parameters in load/save order (hypernet_params).
  std::vector<DeclaredParam> params(float embed_std) const;
  void bind(ParamBinder& b);
  void bind_grads(GradBinder& g);
  // The learned initial soft prompt [P, D] (F32), and its gradient (training).
  const float* sp0() const { return sp0_.f32(); }
  float* sp0_grad() const { return dsp0_; }

  // One example of a call: its soft prompt [P, D] and the embedded tokens of
  // its chunk [n, D] (n may be 0).
  struct Input {
    const float* s = nullptr;
    const float* x = nullptr;
    int64_t n = 0;
  };
  // s_out [in.size(), P, D]: s_out[b] = H(in[b].s, in[b].x). A training call
  // keeps what backward needs (in its modules and here) and runs the
  // training products; the results are the same bits every time for the
  // same inputs and kind of call.
  void forward(std::span<const Input> in, float* s_out, const Exec& ex, bool training);
  // Backward of the last training forward: from ds_out [B, P, D] writes
  // ds_in [B, P, D] (the gradient of each example's S) and dx[b] [n_b, D]
  // (of its token rows; a null entry: not wanted), and adds the parameter
  // gradients into the buffers of bind_grads.
  void backward(const float* ds_out, float* ds_in, std::span<float* const> dx, const Exec& ex);
  void free_saved();

 private:
  struct Layer {
    std::unique_ptr<Module> attn_norm, attn, mlp_norm, mlp;
  };
  ParamDecl sp0_decl(float embed_std) const;
  ParamDecl out_proj_decl() const;
  Config cfg_;  // the model's, with the hypernetwork's heads, theta and eps
  int64_t P_, D_;
  std::vector<Layer> layers_;
  std::unique_ptr<Module> final_norm_;
  Tensor sp0_, out_proj_;
  float *dsp0_ = nullptr, *dout_proj_ = nullptr;
  Scratch scratch_;
  Batch batch_, head_batch_;                      // the last call's sequences; their first P rows
  std::vector<float> z_, h_, f_, dz_, dh_, dtmp_;  // activations and their gradients
  std::vector<float> saved_f_;                     // training: the normed soft rows out_proj read
};

}  // namespace strata
