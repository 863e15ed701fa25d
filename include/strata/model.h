// A model: token (or caller-given) embeddings, a stack of blocks built from the
// config's layer pattern, a final norm and a head.
//
//   auto m = strata::Model::load("path/to/model");      // HF dir, .safetensors, llama2.c .bin
//   auto st = m->new_state();
//   m->forward({{prompt_ids, st.get()}}, Logits::Last, logits);   // prefill
//   m->step(next_ids, {st.get()}, logits);                        // decode
//   auto snap = st->clone();  ...  st->restore(*snap);            // roll back
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "strata/config.h"
#include "strata/tensor.h"

namespace strata {

class LayerState;
class Exec;
class Hypernet;
struct WeightSet;
struct Stack;
struct Batch;

// Everything one sequence has seen: every module's decode state and the
// token count. A copy (clone) is a snapshot; restore() rolls a state back to
// one, so a prompt's state can be reused or a sequence rewound, for every
// architecture.
class State {
 public:
  ~State();
  int64_t n_past() const { return n_past_; }
  std::unique_ptr<State> clone() const;
  // Replaces this state's contents with `snapshot`'s. Refused (an error
  // naming both configurations) when the snapshot belongs to a model of
  // another configuration.
  void restore(const State& snapshot);
  int64_t bytes() const;  // memory the states hold now
  // Memory per kind of state ("kv-cache", "conv-window", ...).
  std::map<std::string, int64_t> bytes_by_kind() const;

 private:
  friend class Model;
  State() = default;
  uint64_t model_id_ = 0;     // a hash of the owning model's configuration
  std::string model_desc_;    // that configuration in words, for errors
  std::vector<std::unique_ptr<LayerState>> layers_;  // per block: norm, mixer, post (may be null)
  int64_t n_past_ = 0;
  std::vector<float> history_;  // non-causal models only: every input row so far
};

// A piece of one sequence's input: token ids, or rows given by the caller
// (e.g. a hypernetwork's soft prompt), which enter the model as they are.
struct Segment {
  std::span<const int32_t> tokens;
  const float* embeds = nullptr;  // [n_embeds, hidden_size]
  int64_t n_embeds = 0;
  // Training: receives grad_scale * d(mean loss)/d(embeds) (overwritten).
  float* d_embeds = nullptr;

  static Segment of_tokens(std::span<const int32_t> ids) { return {ids, nullptr, 0, nullptr}; }
  static Segment of_embeds(const float* rows, int64_t n, float* grad = nullptr) { return {{}, rows, n, grad}; }
  bool is_embeds() const { return embeds != nullptr; }
  int64_t size() const { return embeds ? n_embeds : static_cast<int64_t>(tokens.size()); }
};

// One sequence of a call: its segments in order, e.g. [BOS] [soft prompt]
// [query tokens], continuing from `state` (null: a fresh context).
struct SeqInput {
  std::vector<Segment> segments;
  State* state = nullptr;

  SeqInput() = default;
  SeqInput(std::span<const int32_t> tokens, State* st = nullptr) : segments{Segment::of_tokens(tokens)}, state(st) {}
  SeqInput(std::vector<Segment> segs, State* st = nullptr) : segments(std::move(segs)), state(st) {}
  int64_t size() const;
};

enum class Logits { None, Last, All };

struct ParamInfo {
  std::string name;
  Shape shape;
  DType dtype;
  bool trainable = true;  // false for buffers (saved, never updated)
};

// Parameter counts per module kind ("embed_tokens", "final_norm", "lm_head"
// for the model's own tensors) in first-appearance order. Buffers (declared
// not trainable, e.g. lambda_init) are counted apart: they are not parameters.
struct ParamCounts {
  std::vector<std::pair<std::string, int64_t>> by_group;  // trainable elements per group
  int64_t total = 0;                                      // trainable elements
  int64_t buffers = 0;                                    // buffer elements
};

class Model {
 public:
  // Loads an HF directory, a .safetensors file (config.json beside it) or a
  // llama2.c .bin. Throws strata::Error naming the file/tensor/field.
  static std::unique_ptr<Model> load(const std::string& path);
  // Builds a model from a config and tensors (all declared parameters must be
  // present with matching shapes).
  static std::unique_ptr<Model> from_weights(const Config& cfg, const WeightSet& weights);
  // Random initialisation with each parameter's declared init (normal with
  // the config's initializer_range unless the module says otherwise);
  // deterministic for a seed whatever the thread count.
  static std::unique_ptr<Model> random(const Config& cfg, uint64_t seed, DType dtype);
  ~Model();

  const Config& config() const { return cfg_; }
  // How this model's arithmetic runs (kernels, training precision, GEMM
  // library); starts from the process defaults (STRATA_ISA, STRATA_GEMM).
  const Exec& exec() const { return *exec_; }
  void set_exec(const Exec& e);
  // False when some module looks at later positions (`global` context mode):
  // decoding then recomputes the prefix at every step instead of using caches.
  bool causal() const;
  // True when some layer's decode state grows with the sequence (full
  // attention): running past max_position_embeddings (the training length)
  // then works but warns, and memory grows. Models whose layers are all
  // recurrent or windowed have no length limit.
  bool length_limited() const;
  // Self-Extend for inference (docs/long-context.md): every RoPE attention
  // layer scores keys at distance >= window at grouped positions (query
  // i / group + window - window / group, key j / group). group 1 turns it off
  // (plain attention, bit for bit). Throws unless group divides window and
  // the model has RoPE attention layers. Training ignores it.
  void set_self_extend(int64_t group, int64_t window);
  // Prefill with states runs in rounds of at most this many rows per sequence.
  static constexpr int64_t kPrefillChunk = 512;
  // Warns once per model when `tokens` exceeds the training length of a
  // length-limited model.
  void note_length(int64_t tokens) const;
  std::unique_ptr<State> new_state() const;
  // Bytes of one sequence's decode state after `tokens` positions.
  int64_t state_bytes(int64_t tokens) const;

  // The hypernetwork of recursive soft prompting (docs/hypernet.md), or null
  // when the config has none (strata_hypernet).
  Hypernet* hypernet() const { return hypernet_.get(); }
  // The answer tokens per chunk the config records (strata_hypernet.chunk),
  // e.g. the chunk a run trained with, so that generation uses it.
  void set_hypernet_chunk(int64_t chunk);
  // Rows of the token embedding table (F32) for ids, as the model's input
  // sees them; and, training, rows d added into the table's gradient.
  void embed_rows(std::span<const int32_t> ids, float* out) const;
  void add_embed_grad(std::span<const int32_t> ids, const float* d);

  // Runs full sequences (prefill / scoring). `logits` receives [n_seqs, vocab]
  // for Logits::Last (each sequence's last position), [total rows, vocab] for
  // Logits::All, nothing for Logits::None. Sequences with states continue
  // from them; either every sequence has one or none has.
  void forward(std::span<const SeqInput> seqs, Logits mode, std::vector<float>& logits);
  // One new token per sequence, each with its state; logits [n, vocab].
  void step(std::span<const int32_t> tokens, std::span<State* const> states, std::vector<float>& logits);
  // One new row per sequence (a token or an embedding row), each with its state.
  void step(std::span<const SeqInput> rows, std::vector<float>& logits);

  // Declared parameters in order with their dtypes in memory, and the tensors
  // themselves (for saving and inspection).
  std::vector<ParamInfo> param_info() const;
  std::vector<std::pair<std::string, Tensor>> named_tensors() const;
  ParamCounts param_counts() const;
  int64_t num_params() const;  // trainable parameters (param_counts().total)

  // ---- training (src/model/model_train.cpp) ----
  // Makes every parameter an owned, writable F32 tensor (the master weights,
  // so torch_dtype becomes float32) and allocates zeroed F32 gradients.
  void enable_training();
  bool training_enabled() const { return !grads_.empty(); }
  struct LossSum {
    double sum = 0;     // summed token cross-entropy (natural log)
    int64_t count = 0;  // targets that counted (target >= 0)
  };
  // Sequences of any lengths (no states), targets one per row in order (-1:
  // ignored). Forward, the mean cross-entropy over counted targets, and
  // backward: adds grad_scale * d(mean loss)/dθ into the gradient buffers and
  // writes the gradient of every embedding segment that asks for it. A batch
  // with no counted target is an error.
  LossSum train(std::span<const SeqInput> seqs, std::span<const int32_t> targets, float grad_scale);
  // The same loss without gradients (validation).
  LossSum evaluate(std::span<const SeqInput> seqs, std::span<const int32_t> targets);
  // [B, T] token batches: train / evaluate on B sequences of T tokens. With
  // embeds [B*T, hidden] the inputs are those rows instead of the ids, and
  // d_embeds receives their gradient.
  LossSum train_batch(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T, float grad_scale,
                      const float* embeds = nullptr, float* d_embeds = nullptr);
  LossSum eval_batch(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T);
  void zero_grads();
  // Activation checkpointing: keep only every block's input in the forward
  // and recompute the block's activations just before its backward (about
  // one extra forward of compute for a fraction of the memory).
  void set_checkpoint_activations(bool on) { checkpoint_ = on; }
  // Parameters and their gradients, in declaration order (training enabled);
  // a buffer (not trainable) comes with an empty gradient tensor.
  std::vector<std::pair<std::string, Tensor>> named_grads() const;
  // Backward stages, so that data-parallel training can reduce a layer's
  // gradients while the backward of earlier layers runs: during train(), the
  // hook is called with num_blocks() once the head and final norm are done,
  // with b once block b is done, and with -1 at the end. grad_stages()[i] is
  // the stage after which parameter i (declaration order) is final: its
  // block's index, num_blocks() for the head and final norm, -1 for the rest
  // (embeddings, hypernetwork). An empty hook turns this off.
  using BackwardHook = std::function<void(int stage)>;
  void set_backward_hook(BackwardHook hook) { backward_hook_ = std::move(hook); }
  std::vector<int> grad_stages() const;
  int num_blocks() const;

 private:
  explicit Model(const Config& cfg);
  void build();
  void bind(const WeightSet& weights);
  Batch embed_inputs(std::span<const SeqInput> seqs, bool with_states);
  void check_state(const State* s, size_t seq) const;
  void run(const float* input, const Batch& batch, State* const* states, bool decode, Logits mode,
           std::vector<float>& logits);
  void forward_in_chunks(std::span<const SeqInput> seqs, Logits mode, std::vector<float>& logits);
  void run_block(size_t b, float* x, const Batch& batch, LayerState* const* const* slot_states, bool decode,
                 bool training);
  void block_backward(size_t b, const Batch& batch);
  void free_block_saved(size_t b);
  void run_recompute(const float* input, const Batch& batch, State* const* states, Logits mode,
                     std::vector<float>& logits);
  LossSum head_loss(const int32_t* targets, int64_t rows, float grad_scale, bool backward);
  LossSum train_or_eval(std::span<const SeqInput> seqs, std::span<const int32_t> targets, float grad_scale,
                        bool backward);

  Config cfg_;
  std::unique_ptr<Exec> exec_;
  std::unique_ptr<Stack> stack_;
  std::unique_ptr<Hypernet> hypernet_;
  uint64_t id_ = 0;  // hash of the configuration, stamped on its states
  mutable bool warned_length_ = false;
  int64_t se_group_ = 1, se_window_ = 0;  // set_self_extend
  Tensor embed_, head_;
  std::vector<std::pair<std::string, Tensor>> bound_;  // every parameter, in declaration order

  std::vector<float> x_, h_, o_, last_;                // activations reused between calls
  std::map<std::string, Tensor> grads_;                // training: gradient per parameter
  std::vector<float> dx_, dtmp_, dnorm_;               // training: backward buffers
  std::vector<float> block_inputs_;                    // training with checkpointing: [blocks, rows, hidden]
  std::vector<float> logits_;                          // classifier: a chunk of logits
  bool checkpoint_ = false;
  BackwardHook backward_hook_;
  std::unique_ptr<class Scratch> scratch_;             // module temporaries, shared by all blocks
};

}  // namespace strata
