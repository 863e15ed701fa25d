// Causal multi-head attention with grouped KV heads and rotate_half RoPE
// (HF LlamaAttention). Decode state: a per-sequence KV cache of the rotated
// keys and the values, one row of kv_dim floats per position.
#include <algorithm>
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
    linear(x, rows, wq_, q_all);
    linear(x, rows, wk_, k_all);
    linear(x, rows, wv_, v_all);

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

    // Work items: (sequence, KV head, block of up to kQueryBlock query rows).
    // An item handles the `group` query heads that share the KV head together,
    // so each key and value row is read once for all of them: scores S = Q Kᵀ
    // with the matmul kernel (each score is the same dot product as in decode),
    // a causal softmax per row, then the rows' weighted sums of values.
    const int64_t group = heads_ / kv_heads_;
    const float scale = std::sqrt(static_cast<float>(head_dim_));
    items_.clear();
    for (size_t s = 0; s < batch.seqs.size(); ++s)
      for (int64_t g = 0; g < kv_heads_; ++g)
        for (int64_t i0 = 0; i0 < batch.seqs[s].len; i0 += kQueryBlock) items_.push_back({s, g, i0});
    parallel_for(static_cast<int64_t>(items_.size()), 1, [&](int64_t b, int64_t e) {
      thread_local std::vector<float> qg, scores, out;
      thread_local std::vector<int64_t> n_keys;
      for (int64_t it = b; it < e; ++it) {
        const Item& item = items_[it];
        const SeqSpan& sp = batch.seqs[item.seq];
        const KvCache* c = caches_[item.seq];
        const int64_t first = c->len - sp.len;  // cache position of the sequence's first row in this call
        const int64_t nq = std::min(kQueryBlock, sp.len - item.i0), m = nq * group;
        const int64_t n_max = first + item.i0 + nq;  // keys visible to the block's last query
        qg.resize(static_cast<size_t>(m * head_dim_));
        scores.resize(static_cast<size_t>(m * n_max));
        out.resize(static_cast<size_t>(m * head_dim_));
        n_keys.resize(static_cast<size_t>(m));
        for (int64_t i = 0; i < nq; ++i)
          for (int64_t j = 0; j < group; ++j) {
            const float* q = q_all + (sp.row + item.i0 + i) * qd + (item.g * group + j) * head_dim_;
            std::copy(q, q + head_dim_, &qg[(i * group + j) * head_dim_]);
            n_keys[i * group + j] = first + item.i0 + i + 1;
          }
        const int64_t koff = item.g * head_dim_;
        kt.matmul_f32(qg.data(), head_dim_, m, head_dim_, c->k.data() + koff, kvd, n_max, scores.data(), n_max);
        for (int64_t r = 0; r < m; ++r) {
          float* row = &scores[r * n_max];
          for (int64_t t = 0; t < n_keys[r]; ++t) row[t] /= scale;
          kt.softmax(row, n_keys[r]);
        }
        kt.attn_pv(scores.data(), n_max, m, n_keys.data(), c->v.data() + koff, kvd, head_dim_, out.data(), head_dim_);
        for (int64_t i = 0; i < nq; ++i)
          for (int64_t j = 0; j < group; ++j) {
            const float* o = &out[(i * group + j) * head_dim_];
            std::copy(o, o + head_dim_, att + (sp.row + item.i0 + i) * qd + (item.g * group + j) * head_dim_);
          }
      }
    });
    if (training_) {
      if (states) fail("attention ", prefix_, ": training forward runs without decode states");
      saved_x_.assign(x, x + rows * dim_);
      saved_q_.assign(q_all, q_all + rows * qd);
      saved_att_.assign(att, att + rows * qd);
    }
    linear(att, rows, wo_, y);
  }

  void bind_grads(GradBinder& gb) override {
    auto p = params();
    dwq_ = gb.get(p[0].name);
    dwk_ = gb.get(p[1].name);
    dwv_ = gb.get(p[2].name);
    dwo_ = gb.get(p[3].name);
  }

  // Per (sequence, KV head): recompute P = softmax(q kᵀ / sqrt(d)) row by row;
  // dP = dO vᵀ, dS = P * (dP - sum(P * dP)), dq = dS k / sqrt(d),
  // dk += dSᵀ q / sqrt(d), dv += Pᵀ dO; RoPE is a rotation, so its backward
  // rotates back; then the projections' products.
  void backward(const float* dy, float* dx, const Batch& batch, Scratch& scratch) override {
    const int64_t rows = batch.rows, qd = heads_ * head_dim_, kvd = kv_heads_ * head_dim_, hd = head_dim_;
    float* dO = scratch.floats(0, static_cast<size_t>(rows * qd));
    float* dq = scratch.floats(1, static_cast<size_t>(rows * qd));
    float* dk = scratch.floats(2, static_cast<size_t>(rows * kvd));
    float* dv = scratch.floats(3, static_cast<size_t>(rows * kvd));
    float* tmp = scratch.floats(4, static_cast<size_t>(rows * dim_));
    ops::matmul_nn(dy, rows, dim_, wo_.f32(), qd, dO);
    ops::matmul_tn_acc(dy, rows, dim_, saved_att_.data(), qd, dwo_);
    std::fill(dk, dk + rows * kvd, 0.0f);
    std::fill(dv, dv + rows * kvd, 0.0f);
    const int64_t group = heads_ / kv_heads_;
    const float scale = std::sqrt(static_cast<float>(hd));
    const kernels::Table& kt = kernels::active();
    const int64_t n_items = static_cast<int64_t>(batch.seqs.size()) * kv_heads_;
    parallel_for(n_items, 1, [&](int64_t b, int64_t e) {
      thread_local std::vector<float> p, dp;
      for (int64_t it = b; it < e; ++it) {
        const size_t s = static_cast<size_t>(it / kv_heads_);
        const int64_t g = it % kv_heads_;
        const SeqSpan& sp = batch.seqs[s];
        const KvCache& c = tmp_[s];
        p.resize(static_cast<size_t>(sp.len));
        dp.resize(static_cast<size_t>(sp.len));
        for (int64_t j = 0; j < group; ++j) {
          const int64_t h = g * group + j;
          for (int64_t i = 0; i < sp.len; ++i) {
            const int64_t r = sp.row + i, n = i + 1;
            const float* q = &saved_q_[r * qd + h * hd];
            const float* dOi = dO + r * qd + h * hd;
            for (int64_t t = 0; t < n; ++t) p[t] = kt.dot(q, &c.k[t * kvd + g * hd], hd) / scale;
            kt.softmax(p.data(), n);
            double sum = 0;
            for (int64_t t = 0; t < n; ++t) {
              dp[t] = kt.dot(dOi, &c.v[t * kvd + g * hd], hd);
              sum += static_cast<double>(p[t]) * dp[t];
            }
            float* dqi = dq + r * qd + h * hd;
            std::fill(dqi, dqi + hd, 0.0f);
            for (int64_t t = 0; t < n; ++t) {
              const float ds = p[t] * (dp[t] - static_cast<float>(sum)) / scale;
              kt.axpy(ds, &c.k[t * kvd + g * hd], dqi, hd);
              kt.axpy(ds, q, dk + (sp.row + t) * kvd + g * hd, hd);
              kt.axpy(p[t], dOi, dv + (sp.row + t) * kvd + g * hd, hd);
            }
          }
        }
      }
    });
    // Undo the rotations: rotating by -angle is RoPE with sin negated.
    parallel_for(rows, 8, [&](int64_t lo, int64_t hi) {
      thread_local std::vector<float> neg;
      neg.resize(static_cast<size_t>(rope_->half));
      for (int64_t r = lo; r < hi; ++r) {
        const float* c = &rope_->cos[row_pos_[r] * rope_->half];
        const float* sn = &rope_->sin[row_pos_[r] * rope_->half];
        for (int64_t i = 0; i < rope_->half; ++i) neg[i] = -sn[i];
        kt.rope(dq + r * qd, heads_, hd, c, neg.data());
        kt.rope(dk + r * kvd, kv_heads_, hd, c, neg.data());
      }
    });
    const float* x = saved_x_.data();
    ops::matmul_tn_acc(dq, rows, qd, x, dim_, dwq_);
    ops::matmul_tn_acc(dk, rows, kvd, x, dim_, dwk_);
    ops::matmul_tn_acc(dv, rows, kvd, x, dim_, dwv_);
    ops::matmul_nn(dq, rows, qd, wq_.f32(), dim_, dx);
    ops::matmul_nn(dk, rows, kvd, wk_.f32(), dim_, tmp);
    for (int64_t i = 0; i < rows * dim_; ++i) dx[i] += tmp[i];
    ops::matmul_nn(dv, rows, kvd, wv_.f32(), dim_, tmp);
    for (int64_t i = 0; i < rows * dim_; ++i) dx[i] += tmp[i];
  }

 private:
  std::string prefix_;
  int64_t dim_, heads_, kv_heads_, head_dim_;
  std::shared_ptr<const RopeTable> rope_;
  Tensor wq_, wk_, wv_, wo_;
  float *dwq_ = nullptr, *dwk_ = nullptr, *dwv_ = nullptr, *dwo_ = nullptr;
  std::vector<float> saved_x_, saved_q_, saved_att_;  // training: inputs, rotated queries, head outputs
  std::vector<int32_t> row_seq_;
  std::vector<int64_t> row_pos_;
  std::vector<KvCache> tmp_;  // caches for calls without state (training, --no-cache)
  std::vector<KvCache*> caches_;
  struct Item {
    size_t seq;
    int64_t g, i0;
  };
  std::vector<Item> items_;
  static constexpr int64_t kQueryBlock = 16;
};

}  // namespace

std::unique_ptr<Module> make_attention(const Config& cfg, const std::string& prefix) {
  return std::make_unique<Attention>(cfg, prefix);
}

}  // namespace strata
