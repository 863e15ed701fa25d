// AdamW with parameter groups, global-norm clipping and finiteness checks.
//
// The update is PyTorch 1.13's torch.optim.AdamW (_single_tensor_adamw, no
// amsgrad) operation for operation, in F32 with the scalars formed in double as
// Python does, and the multiply-adds fused where PyTorch's AVX2/AVX-512 CPU
// kernels fuse them (verified bit for bit against Debian's torch 1.13.1):
//
//   w  = w * f32(1 - lr*wd)                          param.mul_(1 - lr * weight_decay)
//   m  = fma(g, f32(1 - b1), m * f32(b1))            exp_avg.mul_(beta1).add_(grad, alpha=1-beta1)
//   v  = fma(f32(1 - b2) * g, g, v * f32(b2))        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1-beta2)
//   bc1 = 1 - b1^t, bc2 = 1 - b2^t                   (double)
//   denom = sqrt(v) / f32(sqrt(bc2)) + f32(eps)      (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
//   w  = w + (f32(-lr/bc1) * m) / denom              param.addcdiv_(exp_avg, denom, value=-step_size)
//
// fma is correctly rounded, so the result is the same on every ISA and thread count.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/weights.h"
#include "io/safetensors.h"
#include "strata/tensor.h"

namespace strata {

// An F32 master weight and its gradient, both owned by the caller. `g` may be
// null only for a frozen parameter.
struct TrainParam {
  std::string name;
  float* w = nullptr;
  float* g = nullptr;
  int64_t n = 0;
  Shape shape;
  bool buffer = false;  // never updated, whatever the rules say (e.g. lambda_init)
};

// Settings for the parameters whose full name matches `pattern` (a glob: `*`
// any run of characters including '.', `?` one character). Unset fields keep
// the defaults.
struct ParamGroupRule {
  std::string pattern;
  std::optional<double> lr_scale;
  std::optional<double> weight_decay;
  bool frozen = false;
};

// Hyper-parameters in double, like PyTorch's Python floats (they are rounded to
// F32 exactly where PyTorch rounds them).
struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  // Default: parameters of 2+ dimensions decay with `weight_decay`, vectors
  // (norms, biases) do not, unless decay_vectors (every parameter decays, as
  // Samba's pretrain.py does); lr_scale 1. Only the LAST rule matching a name
  // applies (its unset fields fall back to those defaults), so "*:frozen"
  // followed by "model.layers.0.*:lr_scale=1" trains layer 0 only.
  std::vector<ParamGroupRule> rules;
  bool decay_vectors = false;
};

// What a parameter resolves to. `rule` is the index of the applied rule, or -1.
struct ParamSettings {
  double lr_scale = 1.0;
  double weight_decay = 0.0;
  bool frozen = false;
  int rule = -1;
};

bool glob_match(std::string_view pattern, std::string_view name);
ParamSettings resolve_param(const std::string& name, const Shape& shape, const AdamWConfig& cfg);

// Parses "PATTERN:opt,opt,..." with options lr_scale=X (alias lr=X),
// wd=X (alias weight_decay=X) and frozen. Throws strata::Error naming the spec.
ParamGroupRule parse_param_group(const std::string& spec);

// The elements [lo, hi) of a parameter that this optimizer updates and keeps
// moments for. With ZeRO-1 each rank owns a slice of every parameter
// (train/grad_sync.h); alone, the slice is the whole parameter.
struct ParamSlice {
  int64_t lo = 0, hi = 0;
  int64_t size() const { return hi - lo; }
};

class AdamW {
 public:
  // Validates the params (unique names, n == numel(shape), gradients present)
  // and the rules (each must match at least one parameter, to catch typos).
  // `slices`: one per parameter, or empty for whole parameters.
  AdamW(std::vector<TrainParam> params, AdamWConfig cfg, std::vector<ParamSlice> slices = {});

  // One update with base rate `lr` (scaled per group) at step t >= 1 (bias
  // correction) of every owned slice. Frozen parameters are untouched.
  void step(double lr, int64_t t);
  bool sliced() const { return sliced_; }
  const ParamSlice& slice(size_t i) const { return slices_.at(i); }
  // The moments of parameter i's slice (null for a frozen one).
  float* m(size_t i) const { return m_.at(i).f32(); }
  float* v(size_t i) const { return v_.at(i).f32(); }
  int64_t moment_bytes() const;  // held by this optimizer

  const std::vector<TrainParam>& params() const { return params_; }
  const ParamSettings& settings(size_t i) const { return settings_.at(i); }
  const AdamWConfig& config() const { return cfg_; }
  // The non-frozen parameters, for global_grad_norm / clip_grads / all_finite.
  std::vector<TrainParam> trainable_params() const;
  int64_t num_trainable() const;  // elements

  // The moments as F32 tensors "optim.m.<name>", "optim.v.<name>" (frozen
  // parameters have none). The tensors share the optimizer's buffers. Whole
  // parameters only (a sliced optimizer's are gathered by the trainer).
  NamedTensors state() const;
  // Replaces the moments (of the owned slices) from whole-parameter tensors;
  // every expected tensor must be present as F32 with the parameter's shape
  // and no other "optim." tensor may appear. All or nothing.
  void load_state(const WeightSet& ws);
  void load_state(const NamedTensors& ts);
  // Parameter i's moments from whole-parameter buffers (the owned slice is copied).
  void load_param_state(size_t i, const float* m_whole, const float* v_whole);

 private:
  std::vector<TrainParam> params_;
  AdamWConfig cfg_;
  std::vector<ParamSettings> settings_;
  std::vector<ParamSlice> slices_;
  bool sliced_ = false;
  std::vector<Tensor> m_, v_;  // the owned slices' moments; empty for frozen parameters
};

// sqrt of the sum of squares of every gradient, accumulated in double over
// fixed blocks in a fixed order: the same bits for any thread count. Params
// with a null gradient are skipped.
double global_grad_norm(const std::vector<TrainParam>& params);
// The sum of squares under that square root (for a norm over ranks' slices).
double grad_sum_squares(const std::vector<TrainParam>& params);

// torch.nn.utils.clip_grad_norm_: coef = max_norm * (1 / (f32(norm) + 1e-6)) in
// F32; when coef < 1 every gradient is multiplied by it. Returns the factor
// applied (1 when none).
float clip_grads(const std::vector<TrainParam>& params, double norm, float max_norm);

// True when no gradient holds a NaN or infinity.
bool all_finite(const std::vector<TrainParam>& params);

}  // namespace strata
