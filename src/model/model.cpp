// Model assembly: embedding -> blocks (x += Post(Mixer(Norm(x)))) -> final norm -> head.
#include "strata/model.h"

#include <algorithm>
#include <map>

#include "core/parallel.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "kernels/ops.h"
#include "model/block.h"
#include "model/module.h"
#include "model/recipe.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {

State::~State() = default;

std::unique_ptr<State> State::clone() const {
  std::unique_ptr<State> s(new State());
  s->n_past_ = n_past_;
  s->history_ = history_;
  for (const auto& l : layers_) s->layers_.push_back(l ? l->clone() : nullptr);
  return s;
}

Model::Model(const Config& cfg) : cfg_(cfg), scratch_(std::make_unique<Scratch>()) {}
Model::~Model() = default;

void Model::build() {
  cfg_.validate("config");
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    for (const BlockSpec& spec : layer_blocks(cfg_, l)) {
      auto b = std::make_unique<Block>();
      b->norm = make_module(spec.norm, cfg_, spec.norm_prefix);
      b->mixer = make_module(spec.mixer, cfg_, spec.mixer_prefix);
      if (!spec.post.empty()) b->post = make_module(spec.post, cfg_, spec.post_prefix);
      for (int i = 0; i < Block::kSlots; ++i)
        if (b->slot(i) && !b->slot(i)->causal()) causal_ = false;
      blocks_.push_back(std::move(b));
    }
  }
  final_norm_ = make_module("rmsnorm", cfg_, "model.norm");
}

namespace {

// Declared parameters of the whole model in load/save order.
std::vector<ParamDecl> all_params(const Config& cfg, const std::vector<std::unique_ptr<Block>>& blocks,
                                  const Module& final_norm) {
  std::vector<ParamDecl> p;
  p.push_back({"model.embed_tokens.weight", {cfg.vocab_size, cfg.hidden_size}});
  for (const auto& b : blocks)
    for (int i = 0; i < Block::kSlots; ++i)
      if (const Module* m = b->slot(i))
        for (auto& d : m->params()) p.push_back(d);
  for (auto& d : final_norm.params()) p.push_back(d);
  if (!cfg.tie_word_embeddings) p.push_back({"lm_head.weight", {cfg.vocab_size, cfg.hidden_size}});
  return p;
}

bool ignorable_tensor(const std::string& name, const Config& cfg) {
  if (name.size() > 21 && name.compare(name.size() - 21, 21, "rotary_emb.inv_freq") == 0) return true;
  return name == "lm_head.weight" && cfg.tie_word_embeddings;  // a tied head may also be stored
}

}  // namespace

void Model::bind(const WeightSet& weights) {
  ParamBinder binder(weights, /*relocate=*/true);
  auto decls = all_params(cfg_, blocks_, *final_norm_);
  embed_ = binder.get(decls.front());
  for (auto& b : blocks_)
    for (int i = 0; i < Block::kSlots; ++i)
      if (Module* m = b->slot(i)) m->bind(binder);
  final_norm_->bind(binder);
  head_ = cfg_.tie_word_embeddings ? embed_ : binder.get(decls.back());
  bound_.clear();
  trainable_.clear();
  for (const auto& d : decls) {
    bound_.emplace_back(d.name, binder.bound().at(d.name));
    trainable_[d.name] = d.trainable;
  }

  for (const auto& [name, t] : weights.tensors)
    if (!binder.bound().count(name) && !ignorable_tensor(name, cfg_))
      fail(weights.source_of(name), ": unexpected tensor '", name, "' (not a parameter of a '", cfg_.recipe,
           "' model with this config)");
}

std::unique_ptr<Model> Model::from_weights(const Config& cfg, const WeightSet& weights) {
  std::unique_ptr<Model> m(new Model(cfg));
  m->build();
  m->bind(weights);
  return m;
}

std::unique_ptr<Model> Model::load(const std::string& path) {
  Checkpoint ck = load_checkpoint(path);
  if (ck.weights.origin.empty()) ck.weights.origin = path;
  return from_weights(ck.config, ck.weights);
}

std::unique_ptr<Model> Model::random(const Config& cfg, uint64_t seed, DType dtype) {
  std::unique_ptr<Model> m(new Model(cfg));
  m->build();
  WeightSet w;
  auto decls = all_params(m->cfg_, m->blocks_, *m->final_norm_);
  for (size_t pi = 0; pi < decls.size(); ++pi) {
    const ParamDecl& d = decls[pi];
    Tensor t = Tensor::alloc(d.matrix ? dtype : DType::F32, d.shape);
    const int64_t n = t.numel();
    const int64_t chunk = 1 << 16;  // each chunk has its own stream: same values for any thread count
    const float std_dev = static_cast<float>(cfg.initializer_range);
    parallel_for((n + chunk - 1) / chunk, 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        uint64_t s = seed ^ (0x9e3779b97f4a7c15ull * (pi + 1));
        Rng rng(Rng::splitmix64(s) + static_cast<uint64_t>(c));
        for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) {
          const float v = declared_value(d, i, rng, std_dev);
          if (t.dtype == DType::F32) t.f32()[i] = v;
          else if (t.dtype == DType::BF16) t.u16()[i] = f32_to_bf16(v);
          else t.u16()[i] = f32_to_f16(v);
        }
      }
    });
    w.add(d.name, std::move(t), "<random init>");
  }
  m->bind(w);
  return m;
}

std::unique_ptr<State> Model::new_state() const {
  std::unique_ptr<State> s(new State());
  for (const auto& b : blocks_)
    for (int i = 0; i < Block::kSlots; ++i) s->layers_.push_back(b->slot(i) ? b->slot(i)->make_state() : nullptr);
  return s;
}

void Model::forward(std::span<const SeqInput> seqs, Logits mode, std::vector<float>& logits) {
  const int64_t D = cfg_.hidden_size;
  Batch batch;
  for (const SeqInput& in : seqs) {
    const int64_t len = in.embeds ? in.n_embeds : static_cast<int64_t>(in.tokens.size());
    if (len <= 0) fail("forward: a sequence has no tokens");
    const int64_t pos = in.state ? in.state->n_past_ : 0;
    batch.seqs.push_back({batch.rows, len, pos});
    batch.rows += len;
  }
  x_.resize(static_cast<size_t>(batch.rows * D));
  for (size_t s = 0; s < seqs.size(); ++s) {
    const SeqInput& in = seqs[s];
    float* dst = &x_[batch.seqs[s].row * D];
    if (in.embeds) {
      std::copy(in.embeds, in.embeds + in.n_embeds * D, dst);
    } else {
      for (int32_t id : in.tokens)
        if (id < 0 || id >= cfg_.vocab_size) fail("token id ", id, " is outside the vocabulary (", cfg_.vocab_size, ")");
      ops::embed(embed_, in.tokens.data(), static_cast<int64_t>(in.tokens.size()), dst);
    }
  }
  std::vector<State*> states;
  for (const SeqInput& in : seqs) states.push_back(in.state);
  const bool stateful = std::all_of(states.begin(), states.end(), [](State* s) { return s != nullptr; });
  if (!stateful && std::any_of(states.begin(), states.end(), [](State* s) { return s != nullptr; }))
    fail("forward: either every sequence has a state or none has");
  run(x_.data(), batch, stateful ? states.data() : nullptr, false, mode, logits);
}

void Model::step(std::span<const int32_t> tokens, std::span<State* const> states, std::vector<float>& logits) {
  if (tokens.size() != states.size()) fail("step: ", tokens.size(), " tokens for ", states.size(), " states");
  const int64_t D = cfg_.hidden_size;
  Batch batch;
  for (size_t s = 0; s < tokens.size(); ++s) {
    if (!states[s]) fail("step: sequence ", s, " has no state");
    if (tokens[s] < 0 || tokens[s] >= cfg_.vocab_size)
      fail("token id ", tokens[s], " is outside the vocabulary (", cfg_.vocab_size, ")");
    batch.seqs.push_back({static_cast<int64_t>(s), 1, states[s]->n_past_});
  }
  batch.rows = static_cast<int64_t>(tokens.size());
  x_.resize(static_cast<size_t>(batch.rows * D));
  ops::embed(embed_, tokens.data(), batch.rows, x_.data());
  run(x_.data(), batch, states.data(), true, Logits::Last, logits);
}

void Model::run(const float* input, const Batch& batch, State* const* states, bool decode, Logits mode,
                std::vector<float>& logits) {
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size, rows = batch.rows;
  for (size_t s = 0; s < batch.seqs.size(); ++s)
    if (batch.seqs[s].pos + batch.seqs[s].len > cfg_.max_position_embeddings)
      fail("sequence ", s, " would reach ", batch.seqs[s].pos + batch.seqs[s].len,
           " tokens, beyond the model's context of max_position_embeddings=", cfg_.max_position_embeddings);
  if (states && !causal_) return run_recompute(input, batch, states, mode, logits);
  if (input != x_.data()) {  // e.g. the whole prefix from run_recompute: more rows than x_ holds
    x_.resize(static_cast<size_t>(rows * D));
    std::copy(input, input + rows * D, x_.data());
  }
  float* x = x_.data();
  h_.resize(static_cast<size_t>(rows * D));
  o_.resize(static_cast<size_t>(rows * D));
  std::vector<LayerState*> slot_states(Block::kSlots * batch.seqs.size());
  for (size_t b = 0; b < blocks_.size(); ++b) {
    LayerState* const* ls[Block::kSlots] = {nullptr, nullptr, nullptr};
    if (states) {
      for (int i = 0; i < Block::kSlots; ++i) {
        LayerState** dst = &slot_states[i * batch.seqs.size()];
        for (size_t s = 0; s < batch.seqs.size(); ++s) dst[s] = states[s]->layers_[b * Block::kSlots + i].get();
        ls[i] = dst;
      }
    }
    run_block(b, x, batch, ls, decode);
  }
  if (states)
    for (size_t s = 0; s < batch.seqs.size(); ++s) states[s]->n_past_ += batch.seqs[s].len;

  if (mode == Logits::None) return;
  Batch head_batch;
  const float* head_in = x;
  if (mode == Logits::Last) {
    last_.resize(batch.seqs.size() * D);
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const float* src = x + (batch.seqs[s].row + batch.seqs[s].len - 1) * D;
      std::copy(src, src + D, &last_[s * D]);
    }
    head_in = last_.data();
    head_batch.rows = static_cast<int64_t>(batch.seqs.size());
  } else {
    head_batch.rows = rows;
  }
  h_.resize(static_cast<size_t>(std::max(rows, head_batch.rows) * D));
  final_norm_->forward(head_in, h_.data(), head_batch, nullptr, *scratch_);
  logits.resize(static_cast<size_t>(head_batch.rows * V));
  ops::matmul(h_.data(), head_batch.rows, head_, logits.data());
}

// x += Post(Mixer(Norm(x))) for block b, in place on x [batch.rows, hidden].
void Model::run_block(size_t b, float* x, const Batch& batch, LayerState* const* const* slot_states, bool decode) {
  const int64_t n = batch.rows * cfg_.hidden_size;
  h_.resize(static_cast<size_t>(n));
  o_.resize(static_cast<size_t>(n));
  Block& blk = *blocks_[b];
  auto apply = [&](Module& m, const float* in, float* out, LayerState* const* st) {
    if (decode) m.step(in, out, batch, st, *scratch_);
    else m.forward(in, out, batch, st, *scratch_);
  };
  apply(*blk.norm, x, h_.data(), slot_states ? slot_states[0] : nullptr);
  apply(*blk.mixer, h_.data(), o_.data(), slot_states ? slot_states[1] : nullptr);
  if (blk.post) {
    apply(*blk.post, o_.data(), h_.data(), slot_states ? slot_states[2] : nullptr);
    std::swap(h_, o_);
  }
  const float* o = o_.data();
  parallel_for(n, 1 << 14, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) x[i] += o[i];
  });
}

// Models with non-causal modules (`global` context statistics) cannot
// continue from cached states: an output row depends on rows that come later.
// Their states keep the input rows seen so far, and every call reruns the
// whole prefix without caches, returning the rows of the new positions.
void Model::run_recompute(const float* input, const Batch& batch, State* const* states, Logits mode,
                          std::vector<float>& logits) {
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size;
  Batch full;
  std::vector<float> rows_in;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SeqSpan& sp = batch.seqs[s];
    std::vector<float>& h = states[s]->history_;
    if (static_cast<int64_t>(h.size()) != states[s]->n_past_ * D)
      fail("state of sequence ", s, " does not belong to this model");
    h.insert(h.end(), input + sp.row * D, input + (sp.row + sp.len) * D);
    full.seqs.push_back({full.rows, static_cast<int64_t>(h.size()) / D, 0});
    full.rows += static_cast<int64_t>(h.size()) / D;
    rows_in.insert(rows_in.end(), h.begin(), h.end());
  }
  std::vector<float> all;
  run(rows_in.data(), full, nullptr, false, mode == Logits::All ? Logits::All : mode, all);
  for (size_t s = 0; s < batch.seqs.size(); ++s) states[s]->n_past_ += batch.seqs[s].len;
  if (mode != Logits::All) {
    logits.swap(all);
    return;
  }
  logits.resize(static_cast<size_t>(batch.rows * V));
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SeqSpan& sp = batch.seqs[s];
    const int64_t first_new = full.seqs[s].row + full.seqs[s].len - sp.len;
    std::copy(all.begin() + first_new * V, all.begin() + (first_new + sp.len) * V, logits.begin() + sp.row * V);
  }
}

std::vector<ParamInfo> Model::param_info() const {
  std::vector<ParamInfo> r;
  for (const auto& [name, t] : bound_) r.push_back({name, t.shape, t.dtype, trainable_.at(name)});
  return r;
}

std::vector<std::pair<std::string, Tensor>> Model::named_tensors() const { return bound_; }

int64_t Model::num_params() const {
  int64_t n = 0;
  for (const auto& [name, t] : bound_) n += t.numel();
  return n;
}

std::vector<std::pair<std::string, int64_t>> Model::param_counts() const {
  std::vector<std::pair<std::string, int64_t>> r;
  auto add = [&](const std::string& group, int64_t n) {
    for (auto& [g, c] : r)
      if (g == group) return void(c += n);
    r.emplace_back(group, n);
  };
  add("embed_tokens", embed_.numel());
  for (const auto& b : blocks_) {
    for (const Module* m : {b->norm.get(), b->mixer.get(), b->post.get()}) {
      if (!m) continue;
      int64_t n = 0;
      for (const auto& d : m->params()) n += shape_numel(d.shape);
      add(m->kind(), n);
    }
  }
  add("final_norm", cfg_.hidden_size);
  if (!cfg_.tie_word_embeddings) add("lm_head", head_.numel());
  return r;
}

}  // namespace strata
