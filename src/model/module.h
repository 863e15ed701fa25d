// The module interface every norm, mixer and post-module implements (see
// docs/architecture.md). Activations are packed rows: the sequences of a batch
// are stored one after another, `Batch` says where each starts, how long it is
// and at which absolute position its first row sits.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/weights.h"
#include "kernels/exec.h"
#include "model/state.h"
#include "strata/config.h"
#include "strata/tensor.h"

namespace strata {

namespace kernels {
struct Table;
}

struct SeqSpan {
  int64_t row = 0;  // first row of this sequence in the packed activations
  int64_t len = 0;  // rows (tokens) of this sequence in this call
  int64_t pos = 0;  // absolute position of the first row (tokens already in the state)
};

struct Batch {
  std::vector<SeqSpan> seqs;
  int64_t rows = 0;
};

// One module of a built model, as the layer pattern declares it.
struct ModuleSpec {
  std::string kind;    // registered kind, e.g. "attention"
  std::string prefix;  // parameter-name prefix, e.g. "model.layers.3.self_attn"
  int64_t layer = 0;   // index of its layer
  Options options;     // every option its type declares (defaults filled in)
};

// Temporary buffers shared by all modules of a model: a module may use them
// only within one forward/step call, so one set serves the whole stack.
class Scratch {
 public:
  float* floats(size_t slot, size_t n) {
    if (bufs_.size() <= slot) bufs_.resize(slot + 1);
    if (bufs_[slot].size() < n) bufs_[slot].resize(n);
    return bufs_[slot].data();
  }

 private:
  std::vector<std::vector<float>> bufs_;
};

// Self-Extend (grouped attention for distant tokens, docs/long-context.md),
// an inference-time setting of RoPE attention: a query at position i scores
// a key at j as usual when i - j < window (its neighbours), and a farther one
// with the query rotated at i / group + window - window / group and the key
// at j / group (integer division; group divides window). group 1: off.
struct SelfExtend {
  int64_t group = 1, window = 0;
  bool active() const { return group > 1; }
  int64_t query_pos(int64_t i) const { return i / group + window - window / group; }
  int64_t key_pos(int64_t j) const { return j / group; }
};

// What a module call may use besides its inputs: the execution context
// (kernels, precision, GEMM library), the shared temporaries, and whether
// this is a training forward (keep what backward needs, training products).
struct Context {
  const Exec& exec;
  Scratch& scratch;
  bool training = false;
  SelfExtend self_extend{};  // RoPE attention's grouped positions (inference only)
  const kernels::Table& kt() const { return exec.kernels(); }
};

// How Model::random initialises a parameter.
//   Normal: N(0, std²), std = ParamDecl::init_std, or, when init_std < 0, the
//           config's init scheme decides (strata_init: N(0, initializer_range)
//           by default; docs/samba.md has the Mamba and NeoX schemes).
//   Uniform: U(-init_value, init_value).
//   Constant: every element = init_value (Ones/Zeros are the common cases).
//   DiracLast: 1 at the last index of the last dimension, 0 elsewhere (a
//           depthwise convolution that passes its current input through).
//   Custom: element i = fill(i, rng) (e.g. Mamba's A_log and dt bias).
enum class Init { Normal, Ones, Zeros, Constant, DiracLast, Uniform, Custom };

class Rng;

struct ParamDecl {
  std::string name;  // full HF-style name, e.g. model.layers.3.self_attn.q_proj.weight
  Shape shape;
  Init init = Init::Normal;
  bool matrix = true;  // used by matmuls: kept in its stored dtype (F32/BF16)
  float init_std = -1.0f;
  float init_value = 0.0f;
  bool trainable = true;  // false: a buffer (saved and loaded, never updated by the optimizer)
  // Writes into the residual stream (o_proj, down_proj, out_proj): init
  // schemes scale it down with depth.
  bool residual_out = false;
  std::function<float(int64_t i, Rng& rng)> fill;  // Init::Custom
};

// `d` marked as writing into the residual stream.
inline ParamDecl residual_out(ParamDecl d) {
  d.residual_out = true;
  return d;
}

// Element i of `d`'s declared init (Normal values drawn from rng with
// d.init_std, or default_std when that is negative).
float declared_value(const ParamDecl& d, int64_t i, Rng& rng, float default_std);

// Hands declared tensors to modules, checking shape and dtype and naming the
// file and tensor in every error.
class ParamBinder {
 public:
  // relocate: matrices that are views into a file mapping are moved into
  // huge-page memory (Tensor::relocate releases the mapped pages as it copies,
  // so there is still one copy). Kernels that read many weight rows at once
  // (AMX tiles, GEMV) lose 8-25% to TLB misses on 4 KB page-cache pages.
  explicit ParamBinder(const WeightSet& w, bool relocate = false) : w_(w), relocate_(relocate) {}
  Tensor get(const ParamDecl& decl);
  // Every tensor handed out so far, as handed out (F32 copies where converted).
  const std::map<std::string, Tensor>& bound() const { return bound_; }

 private:
  const WeightSet& w_;
  bool relocate_;
  std::map<std::string, Tensor> bound_;
};

// Where a module's parameter gradients live (F32, the parameter's shape).
class GradBinder {
 public:
  explicit GradBinder(std::map<std::string, Tensor>& grads) : grads_(grads) {}
  float* get(const std::string& name);  // throws if the model has no gradient for `name`

 private:
  std::map<std::string, Tensor>& grads_;
};

class Module {
 public:
  explicit Module(ModuleSpec spec) : spec_(std::move(spec)) {}
  virtual ~Module() = default;
  const ModuleSpec& spec() const { return spec_; }
  const std::string& kind() const { return spec_.kind; }
  const std::string& prefix() const { return spec_.prefix; }

  virtual std::vector<ParamDecl> params() const = 0;
  virtual void bind(ParamBinder& binder) = 0;
  // Its per-sequence decode state (null: none) and how large that grows.
  virtual std::unique_ptr<LayerState> make_state() const { return nullptr; }
  virtual StateSize state_size() const { return {}; }
  // Full sequences: x, y are [batch.rows, width]. With states (one per
  // sequence) the forward continues from them and leaves them updated.
  // Temporaries come from ctx.scratch; nothing is kept there between calls.
  // A training forward (ctx.training, no states) keeps what backward needs.
  virtual void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) = 0;
  // One new row per sequence (every len == 1), states required.
  virtual void step(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) {
    forward(x, y, batch, states, ctx);
  }
  // Width of the output rows (the residual width for mixers).
  virtual int64_t out_width() const = 0;
  // False if an output row depends on later rows of its sequence (the
  // `global` context statistics): the model then cannot decode from cached
  // states and recomputes the whole prefix at every step.
  virtual bool causal() const { return true; }

  // Training: backward() writes dx (overwriting) from dy for the last
  // training forward and adds the parameter gradients into the buffers of
  // bind_grads().
  virtual void bind_grads(GradBinder& grads) = 0;
  virtual void backward(const float* dy, float* dx, const Batch& batch, Context& ctx) = 0;
  // Drops what training forwards kept for backward (activation checkpointing
  // frees a block's activations right after its forward and its backward).
  virtual void free_saved() {}

 protected:
  // Empties containers and returns their memory.
  template <class... Cs>
  static void release(Cs&... c) {
    (Cs().swap(c), ...);
  }
  // y = x · wᵀ: the training GEMM in a training call (fast for many rows),
  // else ops::matmul (whose sums match decode's, so prefill == decode bitwise).
  static void linear(const Context& ctx, const float* x, int64_t rows, const Tensor& w, float* y);
  // Its own state of each sequence, checked (state_cast names this module).
  template <class S>
  S& state_of(LayerState* s) const {
    return state_cast<S>(s, spec_.kind + " " + spec_.prefix);
  }

  ModuleSpec spec_;
};

}  // namespace strata
