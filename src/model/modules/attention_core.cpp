#include "model/modules/attention_core.h"

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
    t->positions = n;
    t->cos.resize(static_cast<size_t>(n * t->half));
    t->sin.resize(static_cast<size_t>(n * t->half));
    const float theta = static_cast<float>(cfg.rope_theta);
    t->scale = static_cast<float>(cfg.rope_scaling_factor);
    t->freq.resize(static_cast<size_t>(t->half));
    for (int64_t i = 0; i < t->half; ++i)
      t->freq[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(cfg.head_dim));
    for (int64_t p = 0; p < n; ++p) t->angles(p, &t->cos[p * t->half], &t->sin[p * t->half]);
    slot = t;
  }
  return slot;
}

void RopeTable::rotate(const kernels::Table& kt, float* x, int64_t rows, int64_t ld, int64_t heads, const int64_t* pos,
                       bool inverse) const {
  parallel_for(rows, 8, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> neg, far_cos, far_sin;
    neg.resize(static_cast<size_t>(half));
    far_cos.resize(static_cast<size_t>(half));
    far_sin.resize(static_cast<size_t>(half));
    for (int64_t r = b; r < e; ++r) {
      const float* c = &far_cos[0];
      const float* s = &far_sin[0];
      if (pos[r] < positions) {
        c = &cos[pos[r] * half];
        s = &sin[pos[r] * half];
      } else {
        angles(pos[r], far_cos.data(), far_sin.data());
      }
      if (inverse) {  // rotating by -angle is RoPE with sin negated
        for (int64_t i = 0; i < half; ++i) neg[i] = -s[i];
        s = neg.data();
      }
      kt.rope(x + r * ld, heads, head_dim, c, s);
    }
  });
}

void RopeTable::angles(int64_t p, float* c, float* s) const {
  for (int64_t i = 0; i < half; ++i) {
    const float angle = (static_cast<float>(p) / scale) * freq[i];
    c[i] = std::cos(angle);
    s[i] = std::sin(angle);
  }
}

void RopeTable::shift(const kernels::Table& kt, float* x, int64_t heads, int64_t by) const {
  if (by == 0) return;
  // The table's row for |by| (the values angles() would compute), or the formula past it.
  thread_local std::vector<float> c, s;
  const int64_t p = by < 0 ? -by : by;
  c.resize(static_cast<size_t>(half));
  s.resize(static_cast<size_t>(half));
  if (p < positions) {
    std::copy(cos.begin() + p * half, cos.begin() + (p + 1) * half, c.begin());
    std::copy(sin.begin() + p * half, sin.begin() + (p + 1) * half, s.begin());
  } else {
    angles(p, c.data(), s.data());
  }
  if (by < 0)  // rotating by -angle is RoPE with sin negated
    for (float& v : s) v = -v;
  kt.rope(x, heads, head_dim, c.data(), s.data());
}

std::string KvCache::shape() const {
  return cat("k ", k_width, ", v ", v_width, ", window ", window, ", ", dtype_name(dtype));
}

namespace {

// Row slot of a cache's storage <- one F32 row (BF16 storage: rounded, which
// is exact for rows CallCaches::add already rounded).
void put_row(std::vector<float>& dst, int64_t slot, int64_t width, const float* src) {
  std::copy(src, src + width, dst.begin() + slot * width);
}
void put_row(std::vector<uint16_t>& dst, int64_t slot, int64_t width, const float* src) {
  for (int64_t i = 0; i < width; ++i) dst[static_cast<size_t>(slot * width + i)] = f32_to_bf16(src[i]);
}

// Appends n rows to one storage (F32 or BF16) of a cache that held `len`.
template <class T>
void append_rows(std::vector<T>& dst, int64_t len, int64_t window, int64_t width, const float* rows, int64_t n) {
  if (window > 0) {  // only the last `window` rows can ever be seen again
    if (static_cast<int64_t>(dst.size()) < window * width) dst.resize(static_cast<size_t>(window * width));
    for (int64_t i = std::max<int64_t>(0, n - window); i < n; ++i) put_row(dst, (len + i) % window, width, rows + i * width);
    return;
  }
  if (static_cast<int64_t>(dst.size()) < (len + n) * width) {
    int64_t cap = std::max<int64_t>(64, len);
    while (cap < len + n) cap *= 2;
    dst.resize(static_cast<size_t>(cap * width));
  }
  for (int64_t i = 0; i < n; ++i) put_row(dst, len + i, width, rows + i * width);
}

}  // namespace

void KvCache::append(const float* k_rows, const float* v_rows, int64_t n) {
  if (dtype == DType::BF16) {
    append_rows(kb, len, window, k_width, k_rows, n);
    append_rows(vb, len, window, v_width, v_rows, n);
  } else {
    append_rows(k, len, window, k_width, k_rows, n);
    append_rows(v, len, window, v_width, v_rows, n);
  }
  len += n;
}

std::vector<std::pair<std::string, Tensor>> KvCache::export_tensors() const {
  const int64_t held = window > 0 ? std::min(len, window) : len, first = len - held;
  Tensor tk = Tensor::alloc(DType::F32, {held, k_width}), tv = Tensor::alloc(DType::F32, {held, v_width});
  const bool half = dtype == DType::BF16;
  for (int64_t i = 0; i < held; ++i) {  // a ring keeps position p in slot p % window
    const int64_t slot = window > 0 ? (first + i) % window : first + i;
    if (half) {
      to_f32(DType::BF16, kb.data() + slot * k_width, tk.f32() + i * k_width, k_width);
      to_f32(DType::BF16, vb.data() + slot * v_width, tv.f32() + i * v_width, v_width);
    } else {
      std::copy(k.begin() + slot * k_width, k.begin() + (slot + 1) * k_width, tk.f32() + i * k_width);
      std::copy(v.begin() + slot * v_width, v.begin() + (slot + 1) * v_width, tv.f32() + i * v_width);
    }
  }
  return {{"k", tk}, {"v", tv}};
}

void CallCaches::begin(const Batch& batch, LayerState* const* states, int64_t k_width, int64_t v_width,
                       int64_t window, DType kv_dtype, const std::string& who) {
  kv_dtype_ = kv_dtype, k_width_ = k_width, v_width_ = v_width;
  row_pos_.resize(static_cast<size_t>(batch.rows));
  caches_.resize(batch.seqs.size());
  if (!states) temp_.resize(batch.seqs.size());
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SeqSpan& sp = batch.seqs[s];
    KvCache* c = states ? &state_cast<KvCache>(states[s], who) : &temp_[s];
    if (!states) {  // a fresh context: every row kept (training needs them all for backward)
      c->k_width = k_width;
      c->v_width = v_width;
      c->window = 0;
      c->len = 0;
      c->dtype = DType::F32;  // rows rounded by add() still, when kv_dtype is BF16
    } else if (c->k_width != k_width || c->v_width != v_width || c->window != window || c->dtype != kv_dtype) {
      fail(who, ": the decode state (", c->shape(), ") belongs to a module of another shape (k ", k_width, ", v ",
           v_width, ", window ", window, ", ", dtype_name(kv_dtype), ")");
    } else if (c->len != sp.pos) {
      fail(who, ": state holds ", c->len, " positions but the batch starts at ", sp.pos);
    }
    caches_[s] = c;
    for (int64_t i = 0; i < sp.len; ++i) row_pos_[sp.row + i] = sp.pos + i;
  }
}

void CallCaches::add(const Batch& batch, float* k_rows, float* v_rows) {
  if (kv_dtype_ == DType::BF16) {  // the values a BF16 cache will hold, on every path
    for (int64_t i = 0; i < batch.rows * k_width_; ++i) k_rows[i] = bf16_to_f32(f32_to_bf16(k_rows[i]));
    for (int64_t i = 0; i < batch.rows * v_width_; ++i) v_rows[i] = bf16_to_f32(f32_to_bf16(v_rows[i]));
  }
  k_new_ = k_rows;
  v_new_ = v_rows;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    KvCache& c = *caches_[s];
    if (c.window == 0) c.append(k_rows + batch.seqs[s].row * c.k_width, v_rows + batch.seqs[s].row * c.v_width, batch.seqs[s].len);
  }
}

AttnSeq CallCaches::seq(size_t s, const Batch& batch, const float* q, float* out, int64_t k_col, int64_t v_col) const {
  const SeqSpan& sp = batch.seqs[s];
  const KvCache& c = *caches_[s];
  AttnSeq a;
  a.q = q;
  a.n_q = sp.len;
  a.first = sp.pos;
  a.out = out;
  auto run = [&](int64_t pos, int64_t n, const float* k, const float* v) {
    if (n > 0) a.runs[a.n_runs++] = {pos, n, k + k_col, v + v_col};
  };
  auto cached = [&](int64_t pos, int64_t n, int64_t slot) {  // rows of the cache's own storage
    if (n <= 0) return;
    if (c.dtype == DType::BF16) a.runs[a.n_runs++] = {pos, n, nullptr, nullptr, c.kb.data() + slot * c.k_width + k_col,
                                                       c.vb.data() + slot * c.v_width + v_col};
    else run(pos, n, c.k.data() + slot * c.k_width, c.v.data() + slot * c.v_width);
  };
  if (c.window == 0) {  // every position, new rows included, one after another
    if (c.dtype == DType::BF16) {  // the earlier rows from the cache, the call's where the projections left them
      cached(0, sp.pos, 0);
      run(sp.pos, sp.len, k_new_ + sp.row * c.k_width, v_new_ + sp.row * c.v_width);
    } else {
      run(0, c.len, c.k.data(), c.v.data());
    }
    return a;
  }
  // The ring's positions the first new row can see (at most window - 1 of
  // them, oldest first: up to the ring's end, then from its start), then the
  // call's own rows where the projections left them.
  const int64_t lo = std::max<int64_t>(0, sp.pos - (c.window - 1));
  for (int64_t p = lo; p < sp.pos;) {
    const int64_t slot = p % c.window, n = std::min(sp.pos - p, c.window - slot);
    cached(p, n, slot);
    p += n;
  }
  run(sp.pos, sp.len, k_new_ + sp.row * c.k_width, v_new_ + sp.row * c.v_width);
  return a;
}

void CallCaches::commit(const Batch& batch) {
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    KvCache& c = *caches_[s];
    if (c.window > 0)
      c.append(k_new_ + batch.seqs[s].row * c.k_width, v_new_ + batch.seqs[s].row * c.v_width, batch.seqs[s].len);
  }
}

namespace {

constexpr int64_t kQueryBlock = 16;     // forward: query rows per work item
constexpr int64_t kBackwardBlock = 32;  // backward: query rows per step of an item
constexpr int64_t kWidenBlock = 128;    // forward: BF16 cache rows widened at a time

// Rows [r0, r0 + n) of a run's keys or values, `width` columns from column
// col: F32 rows where they are, BF16 rows widened into buf. Returns the rows
// and their stride.
std::pair<const float*, int64_t> head_rows(const kernels::Table& kt, const float* f32, const uint16_t* bf16, int64_t r0,
                                           int64_t n, int64_t ld, int64_t col, int64_t width, std::vector<float>& buf) {
  if (!bf16) return {f32 + r0 * ld + col, ld};
  buf.resize(static_cast<size_t>(n * width));
  for (int64_t i = 0; i < n; ++i) kt.bf16_to_f32(bf16 + (r0 + i) * ld + col, buf.data() + i * width, width);
  return {buf.data(), width};
}

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

// The keys a block of query rows sees: positions [lo, hi) as columns of its
// score rows, and for each row r (query position first + r / group) the
// columns [begin[r], end[r]) of its own keys.
struct KeySpan {
  int64_t lo = 0, hi = 0;
  std::vector<int64_t> begin, end;
  void set(const AttnLayout& L, int64_t first, int64_t nq, int64_t group) {
    lo = L.window > 0 ? std::max<int64_t>(0, first - L.window + 1) : 0;
    hi = first + nq;
    begin.resize(static_cast<size_t>(nq * group));
    end.resize(static_cast<size_t>(nq * group));
    for (int64_t r = 0; r < nq * group; ++r) {
      const int64_t p = first + r / group;
      begin[r] = (L.window > 0 ? std::max<int64_t>(0, p - L.window + 1) : 0) - lo;
      end[r] = p + 1 - lo;
    }
  }
  int64_t cols() const { return hi - lo; }
};

// Scores of m query rows -> probabilities: each row's own keys scaled by
// 1/sqrt(d) and softmaxed; entries outside them are left as they are.
void softmax_rows(const kernels::Table& kt, float* p, int64_t m, const KeySpan& ks, int64_t hd) {
  const float scale = std::sqrt(static_cast<float>(hd));
  const int64_t n = ks.cols();
  for (int64_t r = 0; r < m; ++r) {
    float* row = p + r * n + ks.begin[r];
    const int64_t len = ks.end[r] - ks.begin[r];
    for (int64_t t = 0; t < len; ++t) row[t] /= scale;
    kt.softmax(row, len);
  }
}

// Self-Extend: the scores of keys at distance >= W from their query,
// recomputed at the grouped positions over p (rows of ks.cols() columns). The
// rows hold keys rotated at their position j and queries at i, so the key is
// turned by j / G - j and the query by P_q(i) - i: each score is then one dot
// product of the same two rows whatever the block, as in the plain path.
void grouped_scores(const kernels::Table& kt, const AttnLayout& L, const AttnSeq& sq, int64_t g, int64_t i0,
                    int64_t nq, const float* qg, const KeySpan& ks, float* p, std::vector<float>& wide) {
  const SelfExtend& se = L.self_extend;
  const int64_t group = L.heads / L.kv_heads, hd = L.head_dim, n = ks.cols(), m = nq * group;
  const int64_t last_key = sq.first + i0 + nq - 1 - se.window;  // the farthest query's last grouped key
  if (last_key < ks.lo) return;
  thread_local std::vector<float> qs, keys, s;
  qs.assign(qg, qg + m * hd);
  for (int64_t r = 0; r < m; ++r) {
    const int64_t i = sq.first + i0 + r / group;
    L.rope->shift(kt, qs.data() + r * hd, 1, se.query_pos(i) - i);
  }
  const int64_t c0 = ks.lo, c1 = last_key + 1;
  keys.resize(static_cast<size_t>((c1 - c0) * hd));
  for (int k = 0; k < sq.n_runs; ++k) {
    const KvRun& run = sq.runs[k];
    const int64_t a = std::max(c0, run.pos), b = std::min(c1, run.pos + run.n);
    if (a >= b) continue;
    const auto [rows, ld] = head_rows(kt, run.k, run.kb, a - run.pos, b - a, L.k_ld, g * L.k_step, hd, wide);
    for (int64_t j = a; j < b; ++j) {
      float* dst = keys.data() + (j - c0) * hd;
      std::copy(rows + (j - a) * ld, rows + (j - a) * ld + hd, dst);
      L.rope->shift(kt, dst, 1, se.key_pos(j) - j);
    }
  }
  s.resize(static_cast<size_t>(m * (c1 - c0)));
  kt.matmul_f32(qs.data(), hd, m, hd, keys.data(), hd, c1 - c0, s.data(), c1 - c0);
  for (int64_t r = 0; r < m; ++r) {
    const int64_t i = sq.first + i0 + r / group;
    for (int64_t j = std::max(c0, ks.lo + ks.begin[r]); j <= i - se.window; ++j)
      p[r * n + (j - ks.lo)] = s[r * (c1 - c0) + (j - c0)];
  }
}

}  // namespace

void attention_forward(const Exec& ex, const AttnLayout& L, std::span<const AttnSeq> seqs) {
  struct Item {
    size_t seq;
    int64_t g, i0;
  };
  std::vector<Item> items;
  for (size_t s = 0; s < seqs.size(); ++s)
    for (int64_t g = 0; g < L.kv_heads; ++g)
      for (int64_t i0 = 0; i0 < seqs[s].n_q; i0 += kQueryBlock) items.push_back({s, g, i0});
  const int64_t group = L.heads / L.kv_heads, hd = L.head_dim, vd = L.v_dim;
  const kernels::Table& kt = ex.kernels();
  parallel_for(static_cast<int64_t>(items.size()), 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> qg, p, out, wide;
    thread_local KeySpan ks;
    thread_local std::vector<int64_t> rb, re;
    for (int64_t it = b; it < e; ++it) {
      const Item& item = items[it];
      const AttnSeq& sq = seqs[item.seq];
      const int64_t nq = std::min(kQueryBlock, sq.n_q - item.i0), m = nq * group;
      ks.set(L, sq.first + item.i0, nq, group);
      const int64_t n = ks.cols();
      qg.resize(static_cast<size_t>(m * hd));
      p.resize(static_cast<size_t>(m * n));
      out.resize(static_cast<size_t>(m * vd));
      rb.resize(static_cast<size_t>(m));
      re.resize(static_cast<size_t>(m));
      gather_heads(sq.q, L.q_ld, L.q_step, hd, item.g, group, item.i0, nq, qg.data());
      // Scores run by run with the matmul kernel: each is the same dot
      // product whatever the block or the run its key sits in. BF16 runs are
      // widened a block of keys at a time (exactly: BF16 -> F32 is exact).
      for (int k = 0; k < sq.n_runs; ++k) {
        const KvRun& run = sq.runs[k];
        const int64_t c0 = std::max(ks.lo, run.pos), c1 = std::min(ks.hi, run.pos + run.n);
        for (int64_t b0 = c0; b0 < c1; b0 += run.kb ? kWidenBlock : c1 - c0) {
          const int64_t b1 = run.kb ? std::min(c1, b0 + kWidenBlock) : c1;
          const auto [keys, ld] = head_rows(kt, run.k, run.kb, b0 - run.pos, b1 - b0, L.k_ld, item.g * L.k_step, hd, wide);
          kt.matmul_f32(qg.data(), hd, m, hd, keys, ld, b1 - b0, p.data() + (b0 - ks.lo), n);
        }
      }
      if (L.self_extend.active()) grouped_scores(kt, L, sq, item.g, item.i0, nq, qg.data(), ks, p.data(), wide);
      softmax_rows(kt, p.data(), m, ks, hd);
      // P V run by run (block by block), each continuing the sums of the ones before it.
      bool first_run = true;
      for (int k = 0; k < sq.n_runs; ++k) {
        const KvRun& run = sq.runs[k];
        const int64_t c0 = std::max(ks.lo, run.pos), c1 = std::min(ks.hi, run.pos + run.n);
        for (int64_t b0 = c0; b0 < c1; b0 += run.vb ? kWidenBlock : c1 - c0) {
          const int64_t b1 = run.vb ? std::min(c1, b0 + kWidenBlock) : c1;
          const int64_t off = b0 - ks.lo, width = b1 - b0;
          for (int64_t r = 0; r < m; ++r) {
            rb[r] = std::clamp<int64_t>(ks.begin[r] - off, 0, width);
            re[r] = std::clamp<int64_t>(ks.end[r] - off, rb[r], width);
          }
          const auto [vals, ld] = head_rows(kt, run.v, run.vb, b0 - run.pos, width, L.v_ld, item.g * L.v_step, vd, wide);
          kt.attn_pv(p.data() + off, n, m, rb.data(), re.data(), vals, ld, vd, out.data(), vd, !first_run);
          first_run = false;
        }
      }
      scatter_heads(out.data(), vd, item.g, group, item.i0, nq, sq.out, L.o_ld, L.o_step);
    }
  });
}

void attention_backward(const Exec& ex, const AttnLayout& L, std::span<const AttnSeq> seqs,
                        std::span<const AttnSeqGrad> grads) {
  if (grads.size() != seqs.size()) fail("attention backward: ", grads.size(), " gradients for ", seqs.size(), " sequences");
  for (const AttnSeq& sq : seqs)
    if (sq.n_runs != 1 || sq.runs[0].pos != 0 || sq.runs[0].n != sq.first + sq.n_q || !sq.runs[0].k)
      fail("attention backward: the keys must be one run from position 0 (a training forward's)");
  const int64_t group = L.heads / L.kv_heads, hd = L.head_dim, vd = L.v_dim;
  const float scale = std::sqrt(static_cast<float>(hd));
  const kernels::Table& kt = ex.kernels();
  const int64_t n_items = static_cast<int64_t>(seqs.size()) * L.kv_heads;
  // The five products per block are GEMMs run on the item's thread (ops::gemm
  // nested in this parallel loop runs serially), in the training precision.
  parallel_for(n_items, 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> qg, dog, dqg, p, ds;
    thread_local KeySpan ks;
    for (int64_t it = b; it < e; ++it) {
      const size_t s = static_cast<size_t>(it / L.kv_heads);
      const int64_t g = it % L.kv_heads;
      const AttnSeq& sq = seqs[s];
      const AttnSeqGrad& gr = grads[s];
      for (int64_t i0 = 0; i0 < sq.n_q; i0 += kBackwardBlock) {
        const int64_t nq = std::min(kBackwardBlock, sq.n_q - i0), m = nq * group;
        ks.set(L, sq.first + i0, nq, group);
        const int64_t n = ks.cols();
        const float* k = sq.runs[0].k + ks.lo * L.k_ld + g * L.k_step;
        const float* v = sq.runs[0].v + ks.lo * L.v_ld + g * L.v_step;
        float* dk = gr.dk + ks.lo * L.k_ld + g * L.k_step;
        float* dv = gr.dv + ks.lo * L.v_ld + g * L.v_step;
        qg.resize(static_cast<size_t>(m * hd));
        dqg.resize(static_cast<size_t>(m * hd));
        dog.resize(static_cast<size_t>(m * vd));
        p.resize(static_cast<size_t>(m * n));
        ds.resize(static_cast<size_t>(m * n));
        gather_heads(sq.q, L.q_ld, L.q_step, hd, g, group, i0, nq, qg.data());
        gather_heads(gr.d_out, L.o_ld, L.o_step, vd, g, group, i0, nq, dog.data());
        // S = Q Kᵀ and dP = dO Vᵀ (keys and values read transposed in place).
        ops::gemm(ex, m, n, hd, {qg.data(), hd, 1}, {k, 1, L.k_ld}, p.data(), n, false);
        ops::gemm(ex, m, n, vd, {dog.data(), vd, 1}, {v, 1, L.v_ld}, ds.data(), n, false);
        softmax_rows(kt, p.data(), m, ks, hd);
        for (int64_t r = 0; r < m; ++r) {
          float* pr = &p[r * n];
          float* dr = &ds[r * n];
          const int64_t b0 = ks.begin[r], b1 = ks.end[r];
          const float sum = kt.dot(pr + b0, dr + b0, b1 - b0);
          for (int64_t t = b0; t < b1; ++t) dr[t] = pr[t] * (dr[t] - sum) / scale;
          // Keys outside the row's window take part in the products below with weight 0.
          std::fill(pr, pr + b0, 0.0f);
          std::fill(dr, dr + b0, 0.0f);
          std::fill(pr + b1, pr + n, 0.0f);
          std::fill(dr + b1, dr + n, 0.0f);
        }
        // dq = dS K;  dk += dSᵀ q;  dv += Pᵀ dO.
        ops::gemm(ex, m, hd, n, {ds.data(), n, 1}, {k, L.k_ld, 1}, dqg.data(), hd, false);
        ops::gemm(ex, n, hd, m, {ds.data(), 1, n}, {qg.data(), hd, 1}, dk, L.k_ld, true);
        ops::gemm(ex, n, vd, m, {p.data(), 1, n}, {dog.data(), vd, 1}, dv, L.v_ld, true);
        scatter_heads(dqg.data(), hd, g, group, i0, nq, gr.dq, L.q_ld, L.q_step);
      }
    }
  });
}

namespace {

// The key (or value) row of position t of a sequence, from its runs (a
// BF16 run's first `cols` values widened into a buffer that the next call
// reuses).
const float* row_at(const AttnSeq& sq, int64_t t, bool value, int64_t ld, int64_t cols) {
  thread_local std::vector<float> wide;
  for (int k = 0; k < sq.n_runs; ++k) {
    const KvRun& r = sq.runs[k];
    if (t < r.pos || t >= r.pos + r.n) continue;
    const uint16_t* half = value ? r.vb : r.kb;
    if (!half) return (value ? r.v : r.k) + (t - r.pos) * ld;
    wide.resize(static_cast<size_t>(cols));
    to_f32(DType::BF16, half + (t - r.pos) * ld, wide.data(), cols);
    return wide.data();
  }
  fail("attention: position ", t, " is in none of the sequence's key runs");
}

// The first key position query position p sees.
int64_t first_key(const AttnLayout& L, int64_t p) { return L.window > 0 ? std::max<int64_t>(0, p - L.window + 1) : 0; }

// The probabilities of one query row (at position p) over its keys, plainly.
void reference_probs(const AttnLayout& L, const AttnSeq& sq, const float* q, int64_t g, int64_t p,
                     std::vector<float>& pr) {
  const float scale = std::sqrt(static_cast<float>(L.head_dim));
  const int64_t lo = first_key(L, p), n = p + 1 - lo;
  pr.resize(static_cast<size_t>(n));
  float mx = -INFINITY, sum = 0.0f;
  for (int64_t t = 0; t < n; ++t) {
    const float* k = row_at(sq, lo + t, false, L.k_ld, g * L.k_step + L.head_dim) + g * L.k_step;
    float d = 0.0f;
    for (int64_t i = 0; i < L.head_dim; ++i) d += q[i] * k[i];
    pr[t] = d / scale;
    mx = std::max(mx, pr[t]);
  }
  for (int64_t t = 0; t < n; ++t) sum += (pr[t] = std::exp(pr[t] - mx));
  for (int64_t t = 0; t < n; ++t) pr[t] /= sum;
}

}  // namespace

void attention_forward_reference(const AttnLayout& L, std::span<const AttnSeq> seqs) {
  const int64_t group = L.heads / L.kv_heads;
  std::vector<float> pr;
  for (const AttnSeq& sq : seqs)
    for (int64_t h = 0; h < L.heads; ++h)
      for (int64_t i = 0; i < sq.n_q; ++i) {
        const int64_t g = h / group, pos = sq.first + i, lo = first_key(L, pos);
        reference_probs(L, sq, sq.q + i * L.q_ld + h * L.q_step, g, pos, pr);
        float* o = sq.out + i * L.o_ld + h * L.o_step;
        for (int64_t d = 0; d < L.v_dim; ++d) {
          float acc = 0.0f;
          for (size_t t = 0; t < pr.size(); ++t)
            acc += pr[t] * row_at(sq, lo + static_cast<int64_t>(t), true, L.v_ld, g * L.v_step + L.v_dim)[g * L.v_step + d];
          o[d] = acc;
        }
      }
}

void attention_backward_reference(const AttnLayout& L, std::span<const AttnSeq> seqs,
                                  std::span<const AttnSeqGrad> grads) {
  const int64_t group = L.heads / L.kv_heads, hd = L.head_dim;
  const float scale = std::sqrt(static_cast<float>(hd));
  std::vector<float> pr, dp;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const AttnSeq& sq = seqs[s];
    const AttnSeqGrad& gr = grads[s];
    for (int64_t h = 0; h < L.heads; ++h)
      for (int64_t i = 0; i < sq.n_q; ++i) {
        const int64_t g = h / group, pos = sq.first + i, lo = first_key(L, pos);
        const float* q = sq.q + i * L.q_ld + h * L.q_step;
        const float* dO = gr.d_out + i * L.o_ld + h * L.o_step;
        reference_probs(L, sq, q, g, pos, pr);
        const int64_t n = static_cast<int64_t>(pr.size());
        dp.assign(static_cast<size_t>(n), 0.0f);
        float sum = 0.0f;
        for (int64_t t = 0; t < n; ++t) {
          const float* v = row_at(sq, lo + t, true, L.v_ld, g * L.v_step + L.v_dim) + g * L.v_step;
          for (int64_t d = 0; d < L.v_dim; ++d) dp[t] += dO[d] * v[d];
          sum += pr[t] * dp[t];
        }
        float* dq = gr.dq + i * L.q_ld + h * L.q_step;
        for (int64_t d = 0; d < hd; ++d) dq[d] = 0.0f;
        for (int64_t t = 0; t < n; ++t) {
          const float ds = pr[t] * (dp[t] - sum) / scale;
          const float* k = row_at(sq, lo + t, false, L.k_ld, g * L.k_step + L.head_dim) + g * L.k_step;
          for (int64_t d = 0; d < hd; ++d) {
            dq[d] += ds * k[d];
            gr.dk[(lo + t) * L.k_ld + g * L.k_step + d] += ds * q[d];
          }
          for (int64_t d = 0; d < L.v_dim; ++d) gr.dv[(lo + t) * L.v_ld + g * L.v_step + d] += pr[t] * dO[d];
        }
      }
  }
}

void qkv_projection_backward(const Exec& ex, const float* x, int64_t rows, int64_t dim, const float* dq,
                             const Tensor& wq, float* dwq, const float* dk, const Tensor& wk, float* dwk,
                             const float* dv, const Tensor& wv, float* dwv, float* dx, float* tmp) {
  ops::matmul_tn_acc(ex, dq, rows, wq.dim(0), x, dim, dwq);
  ops::matmul_tn_acc(ex, dk, rows, wk.dim(0), x, dim, dwk);
  ops::matmul_tn_acc(ex, dv, rows, wv.dim(0), x, dim, dwv);
  ops::matmul_nn(ex, dq, rows, wq.dim(0), wq.f32(), dim, dx);
  ops::matmul_nn(ex, dk, rows, wk.dim(0), wk.f32(), dim, tmp);
  for (int64_t i = 0; i < rows * dim; ++i) dx[i] += tmp[i];
  ops::matmul_nn(ex, dv, rows, wv.dim(0), wv.f32(), dim, tmp);
  for (int64_t i = 0; i < rows * dim; ++i) dx[i] += tmp[i];
}

}  // namespace strata
