#include "model/attention_core.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "strata/error.h"

namespace strata {

std::shared_ptr<const RopeTable> RopeTable::get(const Config& cfg) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, double, double, int64_t>, std::shared_ptr<const RopeTable>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_tuple(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling_factor, cfg.max_position_embeddings);
  auto& slot = cache[key];
  if (!slot) {
    auto t = std::make_shared<RopeTable>();
    t->head_dim = cfg.head_dim;
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

void RopeTable::rotate(float* x, int64_t rows, int64_t ld, int64_t heads, const int64_t* pos, bool inverse) const {
  const kernels::Table& kt = kernels::active();
  parallel_for(rows, 8, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> neg;
    neg.resize(static_cast<size_t>(half));
    for (int64_t r = b; r < e; ++r) {
      const float* c = &cos[pos[r] * half];
      const float* s = &sin[pos[r] * half];
      if (inverse) {  // rotating by -angle is RoPE with sin negated
        for (int64_t i = 0; i < half; ++i) neg[i] = -s[i];
        s = neg.data();
      }
      kt.rope(x + r * ld, heads, head_dim, c, s);
    }
  });
}

void KvCache::append(const float* k_rows, const float* v_rows, int64_t n) {
  const size_t need_k = static_cast<size_t>((len + n) * k_width), need_v = static_cast<size_t>((len + n) * v_width);
  if (k.size() < need_k || v.size() < need_v) {
    int64_t cap = std::max<int64_t>(64, len);
    while (cap < len + n) cap *= 2;
    k.resize(static_cast<size_t>(cap * k_width));
    v.resize(static_cast<size_t>(cap * v_width));
  }
  std::copy(k_rows, k_rows + n * k_width, k.begin() + len * k_width);
  std::copy(v_rows, v_rows + n * v_width, v.begin() + len * v_width);
  len += n;
}

void CallCaches::begin(const Batch& batch, LayerState* const* states, int64_t k_width, int64_t v_width,
                       const std::string& who) {
  row_pos_.resize(static_cast<size_t>(batch.rows));
  caches_.resize(batch.seqs.size());
  if (!states) temp_.resize(batch.seqs.size());
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SeqSpan& sp = batch.seqs[s];
    KvCache* c = states ? static_cast<KvCache*>(states[s]) : &temp_[s];
    if (!states) {
      c->k_width = k_width;
      c->v_width = v_width;
      c->len = 0;
    } else if (c->k_width != k_width || c->v_width != v_width) {
      fail(who, ": the decode state belongs to a different module shape");
    } else if (c->len != sp.pos) {
      fail(who, ": state holds ", c->len, " positions but the batch starts at ", sp.pos);
    }
    caches_[s] = c;
    for (int64_t i = 0; i < sp.len; ++i) row_pos_[sp.row + i] = sp.pos + i;
  }
}

void CallCaches::append(const Batch& batch, const float* k_rows, const float* v_rows) {
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SeqSpan& sp = batch.seqs[s];
    caches_[s]->append(k_rows + sp.row * caches_[s]->k_width, v_rows + sp.row * caches_[s]->v_width, sp.len);
  }
}

namespace {

constexpr int64_t kQueryBlock = 16;     // forward: query rows per work item
constexpr int64_t kBackwardBlock = 32;  // backward: query rows per step of an item

// Copies the query rows [i0, i0 + nq) of the `group` heads sharing KV head g
// into rows (i * group + j) of dst, `width` floats from column h * step.
void gather_heads(const float* src, int64_t ld, int64_t step, int64_t width, int64_t g, int64_t group, int64_t i0,
                  int64_t nq, float* dst) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < group; ++j) {
      const float* s = src + (i0 + i) * ld + (g * group + j) * step;
      std::copy(s, s + width, dst + (i * group + j) * width);
    }
}

void scatter_heads(const float* src, int64_t width, int64_t g, int64_t group, int64_t i0, int64_t nq, float* dst,
                   int64_t ld, int64_t step) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < group; ++j) {
      const float* s = src + (i * group + j) * width;
      std::copy(s, s + width, dst + (i0 + i) * ld + (g * group + j) * step);
    }
}

// Scores of m query rows over n_max keys -> causal probabilities: each row's
// visible keys scaled by 1/sqrt(d) and softmaxed; entries past them are left.
void softmax_rows(const kernels::Table& kt, float* p, int64_t m, int64_t n_max, const int64_t* n_keys, int64_t hd) {
  const float scale = std::sqrt(static_cast<float>(hd));
  for (int64_t r = 0; r < m; ++r) {
    float* row = p + r * n_max;
    for (int64_t t = 0; t < n_keys[r]; ++t) row[t] /= scale;
    kt.softmax(row, n_keys[r]);
  }
}

}  // namespace

void attention_forward(const AttnLayout& L, std::span<const AttnSeq> seqs) {
  struct Item {
    size_t seq;
    int64_t g, i0;
  };
  std::vector<Item> items;
  for (size_t s = 0; s < seqs.size(); ++s)
    for (int64_t g = 0; g < L.kv_heads; ++g)
      for (int64_t i0 = 0; i0 < seqs[s].n_q; i0 += kQueryBlock) items.push_back({s, g, i0});
  const int64_t group = L.heads / L.kv_heads, hd = L.head_dim, vd = L.v_dim;
  const kernels::Table& kt = kernels::active();
  parallel_for(static_cast<int64_t>(items.size()), 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> qg, p, out;
    thread_local std::vector<int64_t> n_keys;
    for (int64_t it = b; it < e; ++it) {
      const Item& item = items[it];
      const AttnSeq& sq = seqs[item.seq];
      const int64_t nq = std::min(kQueryBlock, sq.n_q - item.i0), m = nq * group;
      const int64_t n_max = sq.first + item.i0 + nq;  // keys visible to the block's last query
      qg.resize(static_cast<size_t>(m * hd));
      p.resize(static_cast<size_t>(m * n_max));
      out.resize(static_cast<size_t>(m * vd));
      n_keys.resize(static_cast<size_t>(m));
      gather_heads(sq.q, L.q_ld, L.q_step, hd, item.g, group, item.i0, nq, qg.data());
      for (int64_t r = 0; r < m; ++r) n_keys[r] = sq.first + item.i0 + r / group + 1;
      // Scores with the matmul kernel: each is the same dot product whatever the block.
      kt.matmul_f32(qg.data(), hd, m, hd, sq.k + item.g * L.k_step, L.k_ld, n_max, p.data(), n_max);
      softmax_rows(kt, p.data(), m, n_max, n_keys.data(), hd);
      kt.attn_pv(p.data(), n_max, m, n_keys.data(), sq.v + item.g * L.v_step, L.v_ld, vd, out.data(), vd);
      scatter_heads(out.data(), vd, item.g, group, item.i0, nq, sq.out, L.o_ld, L.o_step);
    }
  });
}

void attention_backward(const AttnLayout& L, std::span<const AttnSeq> seqs, std::span<const AttnSeqGrad> grads) {
  if (grads.size() != seqs.size()) fail("attention backward: ", grads.size(), " gradients for ", seqs.size(), " sequences");
  const int64_t group = L.heads / L.kv_heads, hd = L.head_dim, vd = L.v_dim;
  const float scale = std::sqrt(static_cast<float>(hd));
  const kernels::Table& kt = kernels::active();
  const int64_t n_items = static_cast<int64_t>(seqs.size()) * L.kv_heads;
  // The five products per block are GEMMs run on the item's thread (ops::gemm
  // nested in this parallel loop runs serially), in the training precision.
  const ops::Precision prec = ops::training_precision();
  parallel_for(n_items, 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> qg, dog, dqg, p, ds;
    thread_local std::vector<int64_t> n_keys;
    for (int64_t it = b; it < e; ++it) {
      const size_t s = static_cast<size_t>(it / L.kv_heads);
      const int64_t g = it % L.kv_heads;
      const AttnSeq& sq = seqs[s];
      const AttnSeqGrad& gr = grads[s];
      const float* k = sq.k + g * L.k_step;
      const float* v = sq.v + g * L.v_step;
      float* dk = gr.dk + g * L.k_step;
      float* dv = gr.dv + g * L.v_step;
      for (int64_t i0 = 0; i0 < sq.n_q; i0 += kBackwardBlock) {
        const int64_t nq = std::min(kBackwardBlock, sq.n_q - i0), m = nq * group, n_max = sq.first + i0 + nq;
        qg.resize(static_cast<size_t>(m * hd));
        dqg.resize(static_cast<size_t>(m * hd));
        dog.resize(static_cast<size_t>(m * vd));
        p.resize(static_cast<size_t>(m * n_max));
        ds.resize(static_cast<size_t>(m * n_max));
        n_keys.resize(static_cast<size_t>(m));
        gather_heads(sq.q, L.q_ld, L.q_step, hd, g, group, i0, nq, qg.data());
        gather_heads(gr.d_out, L.o_ld, L.o_step, vd, g, group, i0, nq, dog.data());
        for (int64_t r = 0; r < m; ++r) n_keys[r] = sq.first + i0 + r / group + 1;
        // S = Q Kᵀ and dP = dO Vᵀ (keys and values read transposed in place).
        ops::gemm(m, n_max, hd, {qg.data(), hd, 1}, {k, 1, L.k_ld}, p.data(), n_max, false, prec);
        ops::gemm(m, n_max, vd, {dog.data(), vd, 1}, {v, 1, L.v_ld}, ds.data(), n_max, false, prec);
        softmax_rows(kt, p.data(), m, n_max, n_keys.data(), hd);
        for (int64_t r = 0; r < m; ++r) {
          float* pr = &p[r * n_max];
          float* dr = &ds[r * n_max];
          const int64_t n = n_keys[r];
          const float sum = kt.dot(pr, dr, n);
          for (int64_t t = 0; t < n; ++t) dr[t] = pr[t] * (dr[t] - sum) / scale;
          // Masked keys take part in the products below with weight 0.
          std::fill(pr + n, pr + n_max, 0.0f);
          std::fill(dr + n, dr + n_max, 0.0f);
        }
        // dq = dS K;  dk += dSᵀ q;  dv += Pᵀ dO.
        ops::gemm(m, hd, n_max, {ds.data(), n_max, 1}, {k, L.k_ld, 1}, dqg.data(), hd, false, prec);
        ops::gemm(n_max, hd, m, {ds.data(), 1, n_max}, {qg.data(), hd, 1}, dk, L.k_ld, true, prec);
        ops::gemm(n_max, vd, m, {p.data(), 1, n_max}, {dog.data(), vd, 1}, dv, L.v_ld, true, prec);
        scatter_heads(dqg.data(), hd, g, group, i0, nq, gr.dq, L.q_ld, L.q_step);
      }
    }
  });
}

namespace {

// The probabilities of one query row over its n keys, plainly.
void reference_probs(const AttnLayout& L, const float* q, const float* k, int64_t n, std::vector<float>& p) {
  const float scale = std::sqrt(static_cast<float>(L.head_dim));
  p.resize(static_cast<size_t>(n));
  float mx = -INFINITY, sum = 0.0f;
  for (int64_t t = 0; t < n; ++t) {
    float d = 0.0f;
    for (int64_t i = 0; i < L.head_dim; ++i) d += q[i] * k[t * L.k_ld + i];
    p[t] = d / scale;
    mx = std::max(mx, p[t]);
  }
  for (int64_t t = 0; t < n; ++t) sum += (p[t] = std::exp(p[t] - mx));
  for (int64_t t = 0; t < n; ++t) p[t] /= sum;
}

}  // namespace

void attention_forward_reference(const AttnLayout& L, std::span<const AttnSeq> seqs) {
  const int64_t group = L.heads / L.kv_heads;
  std::vector<float> p;
  for (const AttnSeq& sq : seqs)
    for (int64_t h = 0; h < L.heads; ++h)
      for (int64_t i = 0; i < sq.n_q; ++i) {
        const int64_t g = h / group, n = sq.first + i + 1;
        reference_probs(L, sq.q + i * L.q_ld + h * L.q_step, sq.k + g * L.k_step, n, p);
        float* o = sq.out + i * L.o_ld + h * L.o_step;
        for (int64_t d = 0; d < L.v_dim; ++d) {
          float acc = 0.0f;
          for (int64_t t = 0; t < n; ++t) acc += p[t] * sq.v[t * L.v_ld + g * L.v_step + d];
          o[d] = acc;
        }
      }
}

void attention_backward_reference(const AttnLayout& L, std::span<const AttnSeq> seqs,
                                  std::span<const AttnSeqGrad> grads) {
  const int64_t group = L.heads / L.kv_heads, hd = L.head_dim;
  const float scale = std::sqrt(static_cast<float>(hd));
  std::vector<float> p, dp;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const AttnSeq& sq = seqs[s];
    const AttnSeqGrad& gr = grads[s];
    for (int64_t h = 0; h < L.heads; ++h)
      for (int64_t i = 0; i < sq.n_q; ++i) {
        const int64_t g = h / group, n = sq.first + i + 1;
        const float* q = sq.q + i * L.q_ld + h * L.q_step;
        const float* dO = gr.d_out + i * L.o_ld + h * L.o_step;
        const float* k = sq.k + g * L.k_step;
        const float* v = sq.v + g * L.v_step;
        reference_probs(L, q, k, n, p);
        dp.assign(static_cast<size_t>(n), 0.0f);
        float sum = 0.0f;
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t d = 0; d < L.v_dim; ++d) dp[t] += dO[d] * v[t * L.v_ld + d];
          sum += p[t] * dp[t];
        }
        float* dq = gr.dq + i * L.q_ld + h * L.q_step;
        for (int64_t d = 0; d < hd; ++d) dq[d] = 0.0f;
        for (int64_t t = 0; t < n; ++t) {
          const float ds = p[t] * (dp[t] - sum) / scale;
          for (int64_t d = 0; d < hd; ++d) {
            dq[d] += ds * k[t * L.k_ld + d];
            gr.dk[t * L.k_ld + g * L.k_step + d] += ds * q[d];
          }
          for (int64_t d = 0; d < L.v_dim; ++d) gr.dv[t * L.v_ld + g * L.v_step + d] += p[t] * dO[d];
        }
      }
  }
}

void qkv_projection_backward(const float* x, int64_t rows, int64_t dim, const float* dq, const Tensor& wq, float* dwq,
                             const float* dk, const Tensor& wk, float* dwk, const float* dv, const Tensor& wv,
                             float* dwv, float* dx, float* tmp) {
  ops::matmul_tn_acc(dq, rows, wq.dim(0), x, dim, dwq);
  ops::matmul_tn_acc(dk, rows, wk.dim(0), x, dim, dwk);
  ops::matmul_tn_acc(dv, rows, wv.dim(0), x, dim, dwv);
  ops::matmul_nn(dq, rows, wq.dim(0), wq.f32(), dim, dx);
  ops::matmul_nn(dk, rows, wk.dim(0), wk.f32(), dim, tmp);
  for (int64_t i = 0; i < rows * dim; ++i) dx[i] += tmp[i];
  ops::matmul_nn(dv, rows, wv.dim(0), wv.f32(), dim, tmp);
  for (int64_t i = 0; i < rows * dim; ++i) dx[i] += tmp[i];
}

}  // namespace strata
