// A model: token (or caller-given) embeddings, a stack of blocks built from the
// config's layer recipe, a final norm and a head.
//
//   auto m = strata::Model::load("path/to/model");      // HF dir, .safetensors, llama2.c .bin
//   auto st = m->new_state();
//   m->forward({{prompt_ids, st.get()}}, Logits::Last, logits);   // prefill
//   m->step(next_ids, {st.get()}, logits);                        // decode
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "strata/config.h"
#include "strata/tensor.h"

namespace strata {

class LayerState;
struct WeightSet;
struct Block;

// Everything one sequence has seen: per-module caches and the token count.
// Copyable (clone), so a prompt's state can be reused or a sequence rolled back.
class State {
 public:
  ~State();
  int64_t n_past() const { return n_past_; }
  std::unique_ptr<State> clone() const;

 private:
  friend class Model;
  State() = default;
  std::vector<std::unique_ptr<LayerState>> layers_;  // per block: norm, mixer, post (may be null)
  int64_t n_past_ = 0;
  std::vector<float> history_;  // non-causal models only: every input row so far
};

struct SeqInput {
  std::span<const int32_t> tokens;  // token ids, or
  const float* embeds = nullptr;    // [n_embeds, hidden_size] input embeddings (e.g. soft prompts)
  int64_t n_embeds = 0;
  State* state = nullptr;  // continue from and update this state; null: a fresh context
};

enum class Logits { None, Last, All };

struct ParamInfo {
  std::string name;
  Shape shape;
  DType dtype;
  bool trainable = true;  // false for buffers (saved, never updated)
};

class Model {
 public:
  // Loads an HF directory, a .safetensors file (config.json beside it) or a
  // llama2.c .bin. Throws strata::Error naming the file/tensor/field.
  static std::unique_ptr<Model> load(const std::string& path);
  // Builds a model from a config and tensors (all declared parameters must be
  // present with matching shapes).
  static std::unique_ptr<Model> from_weights(const Config& cfg, const WeightSet& weights);
  // Random initialisation: normal(0, initializer_range) for matrices, ones for
  // norms; deterministic for a seed whatever the thread count.
  static std::unique_ptr<Model> random(const Config& cfg, uint64_t seed, DType dtype);
  ~Model();

  const Config& config() const { return cfg_; }
  // False when some module looks at later positions (`global` context mode):
  // decoding then recomputes the prefix at every step instead of using caches.
  bool causal() const { return causal_; }
  std::unique_ptr<State> new_state() const;

  // Runs full sequences (prefill / scoring). `logits` receives [n_seqs, vocab]
  // for Logits::Last (each sequence's last position), [total rows, vocab] for
  // Logits::All, nothing for Logits::None.
  void forward(std::span<const SeqInput> seqs, Logits mode, std::vector<float>& logits);
  // One new token per sequence, each with its state; logits [n, vocab].
  void step(std::span<const int32_t> tokens, std::span<State* const> states, std::vector<float>& logits);

  // Declared parameters in order with their dtypes in memory, and the tensors
  // themselves (for saving and inspection).
  std::vector<ParamInfo> param_info() const;
  std::vector<std::pair<std::string, Tensor>> named_tensors() const;
  // Per-module parameter counts for `strata info`: (group, count), grouped by kind.
  std::vector<std::pair<std::string, int64_t>> param_counts() const;
  int64_t num_params() const;

  // ---- training (src/model/model_train.cpp) ----
  // Makes every parameter an owned, writable F32 tensor (the master weights)
  // and allocates zeroed F32 gradients of the same shapes.
  void enable_training();
  bool training_enabled() const { return !grads_.empty(); }
  struct LossSum {
    double sum = 0;     // summed token cross-entropy (natural log)
    int64_t count = 0;  // targets that counted (target >= 0)
  };
  // inputs/targets are [B, T]; a target of -1 is ignored. Forward, the mean
  // cross-entropy over counted targets, and backward: adds grad_scale * d(mean
  // loss)/dθ into the gradient buffers. A batch with no counted target is an
  // error. If d_embeds is given, inputs are taken from `embeds` [B*T, hidden]
  // instead of the ids and d(loss)/d(embeds) is written there.
  LossSum train_batch(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T, float grad_scale,
                      const float* embeds = nullptr, float* d_embeds = nullptr);
  // The same loss without gradients (validation).
  LossSum eval_batch(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T);
  void zero_grads();
  // Activation checkpointing: keep only every block's input in the forward
  // and recompute the block's activations just before its backward (about
  // one extra forward of compute for a fraction of the memory).
  void set_checkpoint_activations(bool on) { checkpoint_ = on; }
  // Parameters and their gradients, in declaration order (training enabled);
  // a buffer (not trainable) comes with an empty gradient tensor.
  std::vector<std::pair<std::string, Tensor>> named_grads() const;

 private:
  explicit Model(const Config& cfg);
  void build();
  void bind(const WeightSet& weights);
  void run(const float* input, const struct Batch& batch, State* const* states, bool decode, Logits mode,
           std::vector<float>& logits);
  void run_block(size_t b, float* x, const struct Batch& batch, LayerState* const* const* slot_states, bool decode);
  void block_backward(size_t b, const struct Batch& batch);
  void free_block_saved(size_t b);
  void run_recompute(const float* input, const struct Batch& batch, State* const* states, Logits mode,
                     std::vector<float>& logits);

  Config cfg_;
  bool causal_ = true;
  std::vector<std::unique_ptr<Block>> blocks_;
  std::unique_ptr<class Module> final_norm_;
  Tensor embed_, head_;
  std::string embed_name_ = "model.embed_tokens.weight", head_name_ = "lm_head.weight";
  std::vector<std::pair<std::string, Tensor>> bound_;  // every parameter, in declaration order
  std::map<std::string, bool> trainable_;              // per parameter name
  LossSum head_loss(const int32_t* targets, int64_t rows, float grad_scale, bool backward);
  void set_training(bool on);

  std::vector<float> x_, h_, o_, last_;                // activations reused between calls
  std::map<std::string, Tensor> grads_;                // training: gradient per parameter
  std::vector<float> dx_, dtmp_, dnorm_;               // training: backward buffers
  std::vector<float> block_inputs_;                    // training with checkpointing: [blocks, rows, hidden]
  std::vector<float> logits_;                          // classifier: a chunk of logits
  bool checkpoint_ = false;
  std::unique_ptr<class Scratch> scratch_;             // module temporaries, shared by all blocks
};

}  // namespace strata
