// Model assembly: embedding -> blocks (x += Post(Mixer(Norm(x)))) -> final norm -> head.
#include "strata/model.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/exec.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/hypernet.h"
#include "model/options.h"
#include "model/module.h"
#include "model/stack.h"
#include "strata/error.h"

namespace strata {

namespace {

// States carry a hash of their model's configuration (weights dtype aside: a
// layer state's own shape names its dtype), so a state of another model is refused.
uint64_t config_id(const Config& cfg) {
  Config c = cfg;
  c.torch_dtype = "float32";
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char ch : c.to_json_text()) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

std::string config_desc(const Config& c) {
  return cat("recipe ", c.recipe, ", ", c.num_hidden_layers, " layers ", describe_layer(c.layers.layer(0)), ", hidden ",
             c.hidden_size, ", heads ", c.num_attention_heads, "/", c.num_key_value_heads, ", vocab ", c.vocab_size);
}

bool ignorable_tensor(const std::string& name, const Config& cfg) {
  if (name.size() > 21 && name.compare(name.size() - 21, 21, "rotary_emb.inv_freq") == 0) return true;
  return name == kHeadName && cfg.tie_word_embeddings;  // a tied head may also be stored
}

}  // namespace

State::~State() = default;

std::unique_ptr<State> State::clone() const {
  std::unique_ptr<State> s(new State());
  s->model_id_ = model_id_;
  s->model_desc_ = model_desc_;
  s->n_past_ = n_past_;
  s->history_ = history_;
  for (const auto& l : layers_) s->layers_.push_back(l ? l->clone() : nullptr);
  return s;
}

void State::restore(const State& snap) {
  if (snap.model_id_ != model_id_ || snap.layers_.size() != layers_.size())
    fail("cannot restore a state snapshot of a model with another configuration (", snap.model_desc_,
         ") into a state of this model (", model_desc_, ")");
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!layers_[i] != !snap.layers_[i]) fail("state snapshot: layer state ", i, " does not match");
    if (layers_[i]) layers_[i]->copy_from(*snap.layers_[i]);
  }
  n_past_ = snap.n_past_;
  history_ = snap.history_;
}

int64_t State::bytes() const {
  int64_t n = static_cast<int64_t>(history_.capacity() * sizeof(float));
  for (const auto& l : layers_)
    if (l) n += l->bytes();
  return n;
}

std::map<std::string, int64_t> State::bytes_by_kind() const {
  std::map<std::string, int64_t> r;
  for (const auto& l : layers_)
    if (l) r[l->kind()] += l->bytes();
  if (!history_.empty()) r["input-history"] += static_cast<int64_t>(history_.capacity() * sizeof(float));
  return r;
}

int64_t SeqInput::size() const {
  int64_t n = 0;
  for (const Segment& s : segments) n += s.size();
  return n;
}

Model::Model(const Config& cfg)
    : cfg_(cfg), exec_(std::make_unique<Exec>(Exec::defaults())), scratch_(std::make_unique<Scratch>()) {}
Model::~Model() = default;

void Model::set_exec(const Exec& e) { *exec_ = e; }
bool Model::causal() const { return stack_->causal; }

void Model::build() {
  stack_ = std::make_unique<Stack>(build_stack(cfg_));
  if (cfg_.has_hypernet()) hypernet_ = std::make_unique<Hypernet>(cfg_);
  id_ = config_id(cfg_);
}

void Model::bind(const WeightSet& weights) {
  ParamBinder binder(weights, /*relocate=*/true);
  const std::vector<DeclaredParam>& decls = stack_->params;
  embed_ = binder.get(decls.front().decl);
  for (auto& b : stack_->blocks)
    for (int i = 0; i < Block::kSlots; ++i)
      if (Module* m = b->slot(i)) m->bind(binder);
  stack_->final_norm->bind(binder);
  head_ = embed_;
  if (!cfg_.tie_word_embeddings) {
    for (const DeclaredParam& d : decls)
      if (d.decl.name == kHeadName) head_ = binder.get(d.decl);
  }
  if (hypernet_) hypernet_->bind(binder);
  bound_.clear();
  for (const DeclaredParam& d : decls) bound_.emplace_back(d.decl.name, binder.bound().at(d.decl.name));

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
  return from_weights(ck.config, ck.weights);
}

std::unique_ptr<Model> Model::random(const Config& cfg, uint64_t seed, DType dtype) {
  std::unique_ptr<Model> m(new Model(cfg));
  m->build();
  WeightSet w;
  const std::vector<DeclaredParam>& decls = m->stack_->params;
  for (size_t pi = 0; pi < decls.size(); ++pi)
    w.add(decls[pi].decl.name, random_param(decls[pi].decl, pi, seed, dtype, static_cast<float>(cfg.initializer_range)),
          "<random init>");
  m->bind(w);
  return m;
}

Tensor random_param(const ParamDecl& d, size_t index, uint64_t seed, DType dtype, float default_std) {
  Tensor t = Tensor::alloc(d.matrix ? dtype : DType::F32, d.shape);
  const int64_t n = t.numel();
  const int64_t chunk = 1 << 16;  // each chunk has its own stream: same values for any thread count
  parallel_for((n + chunk - 1) / chunk, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      uint64_t s = seed ^ (0x9e3779b97f4a7c15ull * (index + 1));
      Rng rng(Rng::splitmix64(s) + static_cast<uint64_t>(c));
      for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) {
        const float v = declared_value(d, i, rng, default_std);
        if (t.dtype == DType::F32) t.f32()[i] = v;
        else if (t.dtype == DType::BF16) t.u16()[i] = f32_to_bf16(v);
        else t.u16()[i] = f32_to_f16(v);
      }
    }
  });
  return t;
}

void Model::set_hypernet_chunk(int64_t chunk) {
  if (chunk < 1) fail("hypernetwork chunk must be at least 1 (got ", chunk, ")");
  cfg_.hypernet.chunk = chunk;
}

void Model::embed_rows(std::span<const int32_t> ids, float* out) const {
  for (int32_t id : ids)
    if (id < 0 || id >= cfg_.vocab_size) fail("token id ", id, " is outside the vocabulary (", cfg_.vocab_size, ")");
  ops::embed(*exec_, embed_, ids.data(), static_cast<int64_t>(ids.size()), out);
}

void Model::add_embed_grad(std::span<const int32_t> ids, const float* d) {
  auto it = grads_.find(kEmbedName);
  if (it == grads_.end()) fail("add_embed_grad: training is not enabled");
  const int64_t D = cfg_.hidden_size;
  float* de = it->second.f32();
  for (size_t i = 0; i < ids.size(); ++i)  // serial: the same order for any thread count
    for (int64_t j = 0; j < D; ++j) de[ids[i] * D + j] += d[static_cast<int64_t>(i) * D + j];
}

std::unique_ptr<State> Model::new_state() const {
  std::unique_ptr<State> s(new State());
  s->model_id_ = id_;
  s->model_desc_ = config_desc(cfg_);
  for (const auto& b : stack_->blocks)
    for (int i = 0; i < Block::kSlots; ++i) s->layers_.push_back(b->slot(i) ? b->slot(i)->make_state() : nullptr);
  return s;
}

void Model::check_state(const State* s, size_t seq) const {
  if (s->model_id_ != id_)
    fail("sequence ", seq, ": its state belongs to a model with another configuration (", s->model_desc_,
         "), not to this one (", config_desc(cfg_), ")");
}

// Packs the sequences' rows into x_ (token embeddings or the given rows) and
// describes them as a batch.
Batch Model::embed_inputs(std::span<const SeqInput> seqs, bool with_states) {
  const int64_t D = cfg_.hidden_size;
  Batch batch;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (const Segment& seg : seqs[s].segments)
      if (seg.is_embeds() && seg.n_embeds <= 0) fail("sequence ", s, ": an embedding segment has no rows");
    const int64_t len = seqs[s].size();
    if (len <= 0) fail("sequence ", s, " has no input (no tokens and no embedding rows)");
    const int64_t pos = with_states ? seqs[s].state->n_past() : 0;
    batch.seqs.push_back({batch.rows, len, pos});
    batch.rows += len;
  }
  x_.resize(static_cast<size_t>(batch.rows * D));
  for (size_t s = 0; s < seqs.size(); ++s) {
    float* dst = &x_[batch.seqs[s].row * D];
    for (const Segment& seg : seqs[s].segments) {
      if (seg.is_embeds()) {
        std::copy(seg.embeds, seg.embeds + seg.n_embeds * D, dst);
      } else {
        for (int32_t id : seg.tokens)
          if (id < 0 || id >= cfg_.vocab_size)
            fail("token id ", id, " is outside the vocabulary (", cfg_.vocab_size, ")");
        ops::embed(*exec_, embed_, seg.tokens.data(), static_cast<int64_t>(seg.tokens.size()), dst);
      }
      dst += seg.size() * D;
    }
  }
  return batch;
}

bool Model::length_limited() const {
  for (const StateUse& u : state_use(*stack_))
    if (u.each.bytes_per_token > 0 && u.each.max_tokens == 0) return true;
  return false;
}

int64_t Model::state_bytes(int64_t tokens) const {
  int64_t n = 0;
  for (const StateUse& u : state_use(*stack_)) n += u.modules * u.each.at(tokens);
  return n;
}

void Model::set_self_extend(int64_t group, int64_t window) {
  if (group < 1) fail("--self-extend: group size ", group, " must be at least 1");
  if (group > 1) {
    if (window < 1 || window % group != 0)
      fail("--self-extend: the neighbour window ", window, " must be a positive multiple of the group size ", group);
    bool rope_attention = false;
    for (const auto& b : stack_->blocks)
      if (b->mixer->kind() == "attention" && opt_bool(b->mixer->spec().options, "rope")) rope_attention = true;
    if (!rope_attention)
      fail("--self-extend: this model has no RoPE attention layer (", cfg_.recipe, "; Self-Extend regroups the "
           "positions of `attention` layers)");
  }
  se_group_ = group;
  se_window_ = group > 1 ? window : 0;
}

void Model::note_length(int64_t tokens) const {
  if (tokens <= cfg_.max_position_embeddings || warned_length_ || !length_limited()) return;
  warned_length_ = true;
  std::fprintf(stderr,
               "warning: %lld positions, beyond the training length max_position_embeddings=%lld of a model with "
               "full attention (positions past it are out of distribution)\n",
               static_cast<long long>(tokens), static_cast<long long>(cfg_.max_position_embeddings));
}

namespace {

// Rows [from, from + n) of a sequence's segments.
std::vector<Segment> segment_rows(const std::vector<Segment>& segs, int64_t from, int64_t n, int64_t width) {
  std::vector<Segment> r;
  int64_t start = 0;
  for (const Segment& seg : segs) {
    const int64_t len = seg.size(), lo = std::max(from, start), hi = std::min(from + n, start + len);
    if (lo < hi) {
      if (seg.is_embeds()) r.push_back(Segment::of_embeds(seg.embeds + (lo - start) * width, hi - lo));
      else r.push_back(Segment::of_tokens(seg.tokens.subspan(static_cast<size_t>(lo - start), static_cast<size_t>(hi - lo))));
    }
    start += len;
  }
  return r;
}

}  // namespace

// Long prompts with states run in rounds of at most kPrefillChunk rows per
// sequence, so activation memory stays bounded however long the prompt; the
// states carry everything between rounds, so the logits are the same.
void Model::forward_in_chunks(std::span<const SeqInput> seqs, Logits mode, std::vector<float>& logits) {
  const int64_t V = cfg_.vocab_size;
  std::vector<int64_t> size(seqs.size()), first_row(seqs.size());
  int64_t total = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    size[s] = seqs[s].size();
    first_row[s] = total;
    total += size[s];
  }
  logits.assign(static_cast<size_t>(mode == Logits::All ? total * V : mode == Logits::Last ? seqs.size() * V : 0), 0.0f);
  std::vector<float> part;
  for (int64_t from = 0;; from += kPrefillChunk) {
    std::vector<SeqInput> round;
    std::vector<size_t> which;
    for (size_t s = 0; s < seqs.size(); ++s) {
      if (from >= size[s]) continue;
      round.emplace_back(segment_rows(seqs[s].segments, from, std::min(kPrefillChunk, size[s] - from), cfg_.hidden_size),
                         seqs[s].state);
      which.push_back(s);
    }
    if (round.empty()) break;
    forward(round, mode, part);
    int64_t row = 0;
    for (size_t i = 0; i < which.size(); ++i) {
      const size_t s = which[i];
      const int64_t n = round[i].size();
      if (mode == Logits::All)
        std::copy(part.begin() + row * V, part.begin() + (row + n) * V, logits.begin() + (first_row[s] + from) * V);
      else if (mode == Logits::Last && from + n == size[s])
        std::copy(part.begin() + i * V, part.begin() + (i + 1) * V, logits.begin() + s * V);
      row += n;
    }
  }
}

void Model::forward(std::span<const SeqInput> seqs, Logits mode, std::vector<float>& logits) {
  std::vector<State*> states;
  for (const SeqInput& in : seqs) states.push_back(in.state);
  const bool stateful = std::all_of(states.begin(), states.end(), [](State* s) { return s != nullptr; });
  if (!stateful && std::any_of(states.begin(), states.end(), [](State* s) { return s != nullptr; }))
    fail("forward: either every sequence has a state or none has");
  if (stateful) {
    for (size_t s = 0; s < states.size(); ++s) check_state(states[s], s);
    if (stack_->causal && std::any_of(seqs.begin(), seqs.end(), [](const SeqInput& in) { return in.size() > kPrefillChunk; }))
      return forward_in_chunks(seqs, mode, logits);
  }
  const Batch batch = embed_inputs(seqs, stateful);
  run(x_.data(), batch, stateful ? states.data() : nullptr, false, mode, logits);
}

void Model::step(std::span<const int32_t> tokens, std::span<State* const> states, std::vector<float>& logits) {
  if (tokens.size() != states.size()) fail("step: ", tokens.size(), " tokens for ", states.size(), " states");
  std::vector<SeqInput> rows;
  for (size_t s = 0; s < tokens.size(); ++s) rows.emplace_back(tokens.subspan(s, 1), states[s]);
  step(rows, logits);
}

void Model::step(std::span<const SeqInput> rows, std::vector<float>& logits) {
  std::vector<State*> states;
  for (size_t s = 0; s < rows.size(); ++s) {
    if (!rows[s].state) fail("step: sequence ", s, " has no state");
    if (rows[s].size() != 1) fail("step: sequence ", s, " has ", rows[s].size(), " rows (one per step)");
    check_state(rows[s].state, s);
    states.push_back(rows[s].state);
  }
  const Batch batch = embed_inputs(rows, true);
  run(x_.data(), batch, states.data(), true, Logits::Last, logits);
}

void Model::run(const float* input, const Batch& batch, State* const* states, bool decode, Logits mode,
                std::vector<float>& logits) {
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size, rows = batch.rows;
  for (const SeqSpan& sp : batch.seqs) note_length(sp.pos + sp.len);
  if (states && !stack_->causal) return run_recompute(input, batch, states, mode, logits);
  if (input != x_.data()) {  // e.g. the whole prefix from run_recompute: more rows than x_ holds
    x_.resize(static_cast<size_t>(rows * D));
    std::copy(input, input + rows * D, x_.data());
  }
  float* x = x_.data();
  std::vector<LayerState*> slot_states(Block::kSlots * batch.seqs.size());
  for (size_t b = 0; b < stack_->blocks.size(); ++b) {
    LayerState* const* ls[Block::kSlots] = {nullptr, nullptr, nullptr};
    if (states) {
      for (int i = 0; i < Block::kSlots; ++i) {
        LayerState** dst = &slot_states[i * batch.seqs.size()];
        for (size_t s = 0; s < batch.seqs.size(); ++s) dst[s] = states[s]->layers_[b * Block::kSlots + i].get();
        ls[i] = dst;
      }
    }
    run_block(b, x, batch, ls, decode, false);
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
  Context ctx{*exec_, *scratch_, false};
  stack_->final_norm->forward(head_in, h_.data(), head_batch, nullptr, ctx);
  logits.resize(static_cast<size_t>(head_batch.rows * V));
  ops::matmul(*exec_, h_.data(), head_batch.rows, head_, logits.data());
}

// x += Post(Mixer(Norm(x))) for block b, in place on x [batch.rows, hidden].
void Model::run_block(size_t b, float* x, const Batch& batch, LayerState* const* const* slot_states, bool decode,
                      bool training) {
  const int64_t n = batch.rows * cfg_.hidden_size;
  h_.resize(static_cast<size_t>(n));
  o_.resize(static_cast<size_t>(n));
  Block& blk = *stack_->blocks[b];
  Context ctx{*exec_, *scratch_, training, training ? SelfExtend{} : SelfExtend{se_group_, se_window_}};
  auto apply = [&](Module& m, const float* in, float* out, LayerState* const* st) {
    if (decode) m.step(in, out, batch, st, ctx);
    else m.forward(in, out, batch, st, ctx);
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
  for (size_t i = 0; i < bound_.size(); ++i)
    r.push_back({bound_[i].first, bound_[i].second.shape, bound_[i].second.dtype, stack_->params[i].decl.trainable});
  return r;
}

std::vector<std::pair<std::string, Tensor>> Model::named_tensors() const { return bound_; }

ParamCounts Model::param_counts() const { return count_params(stack_->params); }

int64_t Model::num_params() const { return param_counts().total; }

}  // namespace strata
