// Causal multi-head attention with grouped KV heads and rotate_half RoPE
// (HF LlamaAttention). Decode state: a per-sequence KV cache of the rotated
// keys and the values, one row of kv_dim floats per position.
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

// cos/sin of p * theta^(-2i/d) for every position up to max_pos, computed in
// F32 exactly as the reference implementations do (llama2.c, HF).
struct RopeTable {
  int64_t half = 0;
  std::vector<float> cos, sin;  // [max_pos, half]

  static std::shared_ptr<const RopeTable> get(const Config& cfg) {
    static std::mutex mu;
    static std::map<std::tuple<int64_t, double, double, int64_t>, std::shared_ptr<const RopeTable>> cache;
    std::lock_guard<std::mutex> lock(mu);
    auto key = std::make_tuple(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling_factor, cfg.max_position_embeddings);
    auto& slot = cache[key];
    if (!slot) {
      auto t = std::make_shared<RopeTable>();
      t->half = cfg.head_dim / 2;
      const int64_t n = cfg.max_position_embeddings;
      t->cos.resize(static_cast<size_t>(n * t->half));
      t->sin.resize(static_cast<size_t>(n * t->half));
      const float theta = static_cast<float>(cfg.rope_theta);
      const float scale = static_cast<float>(cfg.rope_scaling_factor);
      for (int64_t i = 0; i < t->half; ++i) {
        const float freq = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(cfg.head_dim));
        for (int64_t p = 0; p < n; ++p) {
          const float angle = (static_cast<float>(p) / scale) * freq;
          t->cos[p * t->half + i] = std::cos(angle);
          t->sin[p * t->half + i] = std::sin(angle);
        }
      }
      slot = t;
    }
    return slot;
  }
};

struct KvCache final : LayerState {
  int64_t width = 0;  // kv_dim
  int64_t len = 0;
  std::vector<float> k, v;

  std::unique_ptr<LayerState> clone() const override { return std::make_unique<KvCache>(*this); }
  void append(const float* krows, const float* vrows, int64_t n) {
    const size_t need = static_cast<size_t>((len + n) * width);
    if (k.size() < need) {
      size_t cap = k.size() ? k.size() : static_cast<size_t>(64 * width);
      while (cap < need) cap *= 2;
      k.resize(cap);
      v.resize(cap);
    }
    std::copy(krows, krows + n * width, k.begin() + len * width);
    std::copy(vrows, vrows + n * width, v.begin() + len * width);
    len += n;
  }
};

class Attention final : public Module {
 public:
  Attention(const Config& cfg, const std::string& prefix)
      : prefix_(prefix),
        dim_(cfg.hidden_size),
        heads_(cfg.num_attention_heads),
        kv_heads_(cfg.num_key_value_heads),
        head_dim_(cfg.head_dim),
        rope_(RopeTable::get(cfg)) {}

  const char* kind() const override { return "attn"; }
  std::vector<ParamDecl> params() const override {
    const int64_t qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_;
    return {{prefix_ + ".q_proj.weight", {qd, dim_}},
            {prefix_ + ".k_proj.weight", {kvd, dim_}},
            {prefix_ + ".v_proj.weight", {kvd, dim_}},
            {prefix_ + ".o_proj.weight", {dim_, qd}}};
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    wq_ = b.get(p[0]);
    wk_ = b.get(p[1]);
    wv_ = b.get(p[2]);
    wo_ = b.get(p[3]);
  }
  int64_t out_width() const override { return dim_; }

  std::unique_ptr<LayerState> make_state() const override {
    auto s = std::make_unique<KvCache>();
    s->width = kv_heads_ * head_dim_;
    return s;
  }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Scratch& scratch) override {
    const int64_t rows = batch.rows, qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_;
    float* q_all = scratch.floats(0, static_cast<size_t>(rows * qd));
    float* k_all = scratch.floats(1, static_cast<size_t>(rows * kvd));
    float* v_all = scratch.floats(2, static_cast<size_t>(rows * kvd));
    float* att = scratch.floats(3, static_cast<size_t>(rows * qd));
    ops::matmul(x, rows, wq_, q_all);
    ops::matmul(x, rows, wk_, k_all);
    ops::matmul(x, rows, wv_, v_all);

    // Which sequence and absolute position every row has; the cache of each sequence.
    row_seq_.resize(static_cast<size_t>(rows));
    row_pos_.resize(static_cast<size_t>(rows));
    if (!states) tmp_.resize(batch.seqs.size());
    caches_.resize(batch.seqs.size());
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const SeqSpan& sp = batch.seqs[s];
      KvCache* c = states ? static_cast<KvCache*>(states[s]) : &tmp_[s];
      if (!states) {
        c->width = kvd;
        c->len = 0;
      } else if (c->len != sp.pos) {
        fail("attention ", prefix_, ": state holds ", c->len, " positions but the batch starts at ", sp.pos);
      }
      caches_[s] = c;
      for (int64_t i = 0; i < sp.len; ++i) {
        row_seq_[sp.row + i] = static_cast<int32_t>(s);
        row_pos_[sp.row + i] = sp.pos + i;
      }
    }
    const kernels::Table& kt = kernels::active();
    parallel_for(rows, 8, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const float* c = &rope_->cos[row_pos_[r] * rope_->half];
        const float* s = &rope_->sin[row_pos_[r] * rope_->half];
        kt.rope(q_all + r * qd, heads_, head_dim_, c, s);
        kt.rope(k_all + r * kvd, kv_heads_, head_dim_, c, s);
      }
    });
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const SeqSpan& sp = batch.seqs[s];
      caches_[s]->append(k_all + sp.row * kvd, v_all + sp.row * kvd, sp.len);
    }

    // One work item per (row, head): scores over the visible keys, softmax,
    // weighted sum of values, in that order, as the reference does.
    const int64_t group = heads_ / kv_heads_;
    const float scale = std::sqrt(static_cast<float>(head_dim_));
    parallel_for(rows * heads_, 4, [&](int64_t b, int64_t e) {
      thread_local std::vector<float> scores;
      for (int64_t item = b; item < e; ++item) {
        const int64_t r = item / heads_, h = item % heads_;
        const int32_t s = row_seq_[r];
        const KvCache* c = caches_[s];
        const int64_t first = c->len - batch.seqs[s].len;  // cache position of the sequence's first row
        const int64_t n_keys = first + (r - batch.seqs[s].row) + 1;
        if (static_cast<int64_t>(scores.size()) < n_keys) scores.resize(static_cast<size_t>(n_keys));
        const float* q = q_all + r * qd + h * head_dim_;
        const int64_t kv_off = (h / group) * head_dim_;
        for (int64_t t = 0; t < n_keys; ++t) scores[t] = kt.dot(q, &c->k[t * kvd + kv_off], head_dim_) / scale;
        kt.softmax(scores.data(), n_keys);
        float* out = att + r * qd + h * head_dim_;
        for (int64_t i = 0; i < head_dim_; ++i) out[i] = 0.0f;
        for (int64_t t = 0; t < n_keys; ++t) kt.axpy(scores[t], &c->v[t * kvd + kv_off], out, head_dim_);
      }
    });
    ops::matmul(att, rows, wo_, y);
  }

 private:
  std::string prefix_;
  int64_t dim_, heads_, kv_heads_, head_dim_;
  std::shared_ptr<const RopeTable> rope_;
  Tensor wq_, wk_, wv_, wo_;
  std::vector<int32_t> row_seq_;
  std::vector<int64_t> row_pos_;
  std::vector<KvCache> tmp_;  // caches for calls without state (training, --no-cache)
  std::vector<KvCache*> caches_;
};

}  // namespace

std::unique_ptr<Module> make_attention(const Config& cfg, const std::string& prefix) {
  return std::make_unique<Attention>(cfg, prefix);
}

}  // namespace strata
