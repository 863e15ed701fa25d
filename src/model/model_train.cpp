// Training passes of the model: forward with saved activations, the fused
// classifier + cross-entropy, and backward through the blocks in reverse.
#include <algorithm>
#include <cmath>
#include <optional>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "model/hypernet.h"
#include "model/module.h"
#include "model/stack.h"
#include "strata/error.h"
#include "strata/model.h"

namespace strata {
namespace {

// One row of logits, plainly: for the rare row whose target probability underflows.
void ops_row_logits(const float* h, const float* head, int64_t D, int64_t V, float* out) {
  for (int64_t v = 0; v < V; ++v) {
    float acc = 0.0f;
    for (int64_t k = 0; k < D; ++k) acc += h[k] * head[v * D + k];
    out[v] = acc;
  }
}

}  // namespace

void Model::enable_training() {
  if (!grads_.empty()) return;
  WeightSet owned;
  owned.origin = "training copy";
  for (const auto& [name, t] : bound_) owned.add(name, t.to(DType::F32), "<training>");  // to() always copies
  bind(owned);
  cfg_.torch_dtype = "float32";  // the master weights are F32 now, and a checkpoint says so
  for (size_t i = 0; i < bound_.size(); ++i)
    if (stack_->params[i].decl.trainable) grads_[bound_[i].first] = Tensor::alloc(DType::F32, bound_[i].second.shape);
  GradBinder gb(grads_);
  for (auto& b : stack_->blocks)
    for (int i = 0; i < Block::kSlots; ++i)
      if (Module* m = b->slot(i)) m->bind_grads(gb);
  stack_->final_norm->bind_grads(gb);
  if (hypernet_) hypernet_->bind_grads(gb);
}

void Model::zero_grads() {
  for (auto& [name, g] : grads_) std::fill(g.f32(), g.f32() + g.numel(), 0.0f);
}

std::vector<std::pair<std::string, Tensor>> Model::named_grads() const {
  std::vector<std::pair<std::string, Tensor>> r;
  for (const auto& [name, t] : bound_) {
    auto it = grads_.find(name);
    r.emplace_back(name, it == grads_.end() ? Tensor() : it->second);
  }
  return r;
}

// Logits are formed a chunk of rows at a time and never kept: each chunk's
// loss, d(logits) (softmax - onehot, scaled) and its products with the head
// are done before the next chunk, so memory is rows_per_chunk x vocab.
Model::LossSum Model::head_loss(const int32_t* targets, int64_t rows, float grad_scale, bool backward) {
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size, chunk = 256;
  LossSum r;
  for (int64_t i = 0; i < rows; ++i) {
    if (targets[i] >= V) fail("target id ", targets[i], " is outside the vocabulary (", V, ")");
    r.count += targets[i] >= 0;
  }
  if (r.count == 0) fail("a training batch has no target to predict (every target is masked)");
  const float scale = grad_scale / static_cast<float>(r.count);
  std::vector<float>& logits = logits_;  // kept between calls: no fresh pages per micro-batch
  logits.resize(static_cast<size_t>(std::min(rows, chunk) * V));
  std::vector<double> row_loss(static_cast<size_t>(chunk));
  float* dhead = backward ? grads_.at(cfg_.tie_word_embeddings ? kEmbedName : kHeadName).f32() : nullptr;
  const Exec& ex = *exec_;
  const kernels::Table& kt = ex.kernels();
  const float* head = head_.f32();
  // The head packed once for all chunks: as headᵀ [D, V] for the logits and
  // as head [V, D] for dh = dlogits · head.
  const ops::PackedB head_t(ex, D, V, {head, 1, D});
  std::optional<ops::PackedB> head_n;
  if (backward) head_n.emplace(ex, V, D, ops::MatRef{head, D, 1});
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    const float* h = h_.data() + r0 * D;
    ops::gemm(ex, n, {h, D, 1}, head_t, logits.data(), V, false);
    parallel_for(n, 8, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        float* l = logits.data() + i * V;
        const int32_t t = targets[r0 + i];
        row_loss[i] = 0;
        if (t < 0) {
          if (backward) std::fill(l, l + V, 0.0f);
          continue;
        }
        const float lt = l[t];
        kt.softmax(l, V);  // vectorised; loss = -log p[t]
        if (l[t] > 1e-30f) {
          row_loss[i] = -std::log(static_cast<double>(l[t]));
        } else {  // p[t] underflowed: log-sum-exp in double from the raw logits (recomputed)
          double mx = -1e300, sum = 0;
          std::vector<float> row(static_cast<size_t>(V));
          ops_row_logits(h + i * D, head, D, V, row.data());
          for (float v : row) mx = std::max(mx, static_cast<double>(v));
          for (float v : row) sum += std::exp(v - mx);
          row_loss[i] = std::log(sum) + mx - lt;
        }
        if (backward) {
          for (int64_t j = 0; j < V; ++j) l[j] *= scale;
          l[t] -= scale;
        }
      }
    });
    for (int64_t i = 0; i < n; ++i) r.sum += row_loss[i];
    if (backward) {
      ops::gemm(ex, n, {logits.data(), V, 1}, *head_n, dnorm_.data() + r0 * D, D, false);
      // dhead [V, D] += dlogitsᵀ · h: the tall side (vocabulary) is split over the threads.
      ops::gemm(ex, V, D, n, {logits.data(), 1, V}, {h, D, 1}, dhead, D, true);
    }
  }
  return r;
}

void Model::free_block_saved(size_t b) {
  for (int i = 0; i < Block::kSlots; ++i)
    if (Module* m = stack_->blocks[b]->slot(i)) m->free_saved();
}

// dnorm_ = d(block b's branch input side): the branch's backward from dx_
// (the residual gradient), through post, mixer and norm.
void Model::block_backward(size_t b, const Batch& batch) {
  Block& blk = *stack_->blocks[b];
  Context ctx{*exec_, *scratch_, true};
  const float* dbranch = dx_.data();
  if (blk.post) {
    blk.post->backward(dx_.data(), dnorm_.data(), batch, ctx);
    dbranch = dnorm_.data();
  }
  blk.mixer->backward(dbranch, dtmp_.data(), batch, ctx);
  blk.norm->backward(dtmp_.data(), dnorm_.data(), batch, ctx);
}

Model::LossSum Model::train_or_eval(std::span<const SeqInput> seqs, std::span<const int32_t> targets, float grad_scale,
                                    bool backward) {
  if (backward && grads_.empty()) fail("train: call enable_training() first");
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].state) fail("train: sequence ", s, " has a decode state (training runs on fresh contexts)");
    note_length(seqs[s].size());
  }
  const int64_t D = cfg_.hidden_size;
  const Batch batch = embed_inputs(seqs, false);
  const int64_t rows = batch.rows;
  if (static_cast<int64_t>(targets.size()) != rows)
    fail("train: ", targets.size(), " targets for ", rows, " input rows");
  Context ctx{*exec_, *scratch_, backward};
  if (backward && checkpoint_) {  // only the block inputs are kept: each block's activations are freed as it finishes
    block_inputs_.resize(stack_->blocks.size() * static_cast<size_t>(rows * D));
    for (size_t b = 0; b < stack_->blocks.size(); ++b) {
      std::copy(x_.begin(), x_.begin() + rows * D, block_inputs_.begin() + static_cast<int64_t>(b) * rows * D);
      run_block(b, x_.data(), batch, nullptr, false, true);
      free_block_saved(b);
    }
  } else {
    for (size_t b = 0; b < stack_->blocks.size(); ++b) run_block(b, x_.data(), batch, nullptr, false, backward);
  }
  h_.resize(static_cast<size_t>(rows * D));
  stack_->final_norm->forward(x_.data(), h_.data(), batch, nullptr, ctx);
  if (!backward) return head_loss(targets.data(), rows, 0.0f, false);
  dnorm_.resize(static_cast<size_t>(rows * D));
  LossSum loss = head_loss(targets.data(), rows, grad_scale, true);

  // Backward: dx is the gradient of the residual stream.
  dx_.resize(static_cast<size_t>(rows * D));
  dtmp_.resize(static_cast<size_t>(rows * D));
  stack_->final_norm->backward(dnorm_.data(), dx_.data(), batch, ctx);
  if (backward_hook_) backward_hook_(num_blocks());
  for (size_t b = stack_->blocks.size(); b-- > 0;) {
    if (checkpoint_) {  // recompute this block's activations from its saved input (the same products)
      x_.assign(block_inputs_.begin() + static_cast<int64_t>(b) * rows * D,
                block_inputs_.begin() + static_cast<int64_t>(b + 1) * rows * D);
      run_block(b, x_.data(), batch, nullptr, false, true);
    }
    block_backward(b, batch);
    for (int64_t i = 0; i < rows * D; ++i) dx_[i] += dnorm_[i];
    if (checkpoint_) free_block_saved(b);
    if (backward_hook_) backward_hook_(static_cast<int>(b));
  }
  // The input side: token rows into the embedding gradient (serial: the same
  // order for any thread count), embedding rows to their segment's gradient.
  auto de_it = grads_.find(kEmbedName);
  float* de = de_it == grads_.end() ? nullptr : de_it->second.f32();
  for (size_t s = 0; s < seqs.size(); ++s) {
    int64_t row = batch.seqs[s].row;
    for (const Segment& seg : seqs[s].segments) {
      const float* d = dx_.data() + row * D;
      if (seg.is_embeds()) {
        if (seg.d_embeds) std::copy(d, d + seg.n_embeds * D, seg.d_embeds);
      } else if (de) {
        for (size_t i = 0; i < seg.tokens.size(); ++i)
          for (int64_t j = 0; j < D; ++j) de[seg.tokens[i] * D + j] += d[static_cast<int64_t>(i) * D + j];
      }
      row += seg.size();
    }
  }
  if (backward_hook_) backward_hook_(-1);
  return loss;
}

int Model::num_blocks() const { return static_cast<int>(stack_->blocks.size()); }

std::vector<int> Model::grad_stages() const {
  // The declaration order of build_stack: embeddings, each block's modules,
  // the final norm, the head, the hypernetwork.
  std::vector<int> stage(bound_.size(), -1);
  size_t i = 0;
  auto mark = [&](const std::string& group, int s) {
    while (i < stage.size() && stack_->params[i].group == group) stage[i++] = s;
  };
  mark("embed_tokens", -1);
  for (size_t b = 0; b < stack_->blocks.size(); ++b)
    for (int k = 0; k < Block::kSlots; ++k)
      if (const Module* m = stack_->blocks[b]->slot(k))
        for (size_t n = m->params().size(); n > 0 && i < stage.size(); --n) stage[i++] = static_cast<int>(b);
  mark("final_norm", num_blocks());
  if (!cfg_.tie_word_embeddings) mark("lm_head", num_blocks());
  return stage;
}

Model::LossSum Model::train(std::span<const SeqInput> seqs, std::span<const int32_t> targets, float grad_scale) {
  return train_or_eval(seqs, targets, grad_scale, true);
}

Model::LossSum Model::evaluate(std::span<const SeqInput> seqs, std::span<const int32_t> targets) {
  return train_or_eval(seqs, targets, 0.0f, false);
}

namespace {

// B sequences of T rows each: token ids, or rows of `embeds` (with their gradient into d_embeds).
std::vector<SeqInput> rows_of(const int32_t* inputs, int64_t B, int64_t T, int64_t D, const float* embeds,
                              float* d_embeds) {
  std::vector<SeqInput> seqs;
  for (int64_t b = 0; b < B; ++b) {
    if (embeds)
      seqs.emplace_back(std::vector<Segment>{Segment::of_embeds(embeds + b * T * D, T, d_embeds ? d_embeds + b * T * D : nullptr)});
    else
      seqs.emplace_back(std::span<const int32_t>(inputs + b * T, static_cast<size_t>(T)));
  }
  return seqs;
}

}  // namespace

Model::LossSum Model::train_batch(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T,
                                  float grad_scale, const float* embeds, float* d_embeds) {
  const auto seqs = rows_of(inputs, B, T, cfg_.hidden_size, embeds, d_embeds);
  return train(seqs, {targets, static_cast<size_t>(B * T)}, grad_scale);
}

Model::LossSum Model::eval_batch(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T) {
  const auto seqs = rows_of(inputs, B, T, cfg_.hidden_size, nullptr, nullptr);
  return evaluate(seqs, {targets, static_cast<size_t>(B * T)});
}

}  // namespace strata
