// Bidirectional multi-head self-attention, an encoder's: every row of a
// sequence attends to every row of the same sequence, before and after it.
//   q, k, v = x Wqᵀ, x Wkᵀ, x Wvᵀ   (H heads of head_dim, no bias)
//   q, k rotated (rotate-half RoPE) at the row's position in its sequence
//   o_h = softmax(q_h k_hᵀ / sqrt(head_dim)) v_h,   y = [o_1 .. o_H] Woᵀ
// The sequences of a batch are separate (ragged rows, no padding), so a
// sequence's output never depends on its batch neighbours. It is the
// attention of the hypernetwork's encoder (docs/hypernet.md); in a language
// model's stack it makes the model non-causal (decoding then recomputes the
// prefix, as for any module that looks ahead).
#include <array>
#include <cmath>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "model/modules/attention_core.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

class BidirAttention final : public Module {
 public:
  BidirAttention(const ModuleSpec& spec, const Config& cfg)
      : Module(spec),
        dim_(cfg.hidden_size),
        heads_(cfg.num_attention_heads),
        hd_(cfg.head_dim),
        width_(heads_ * hd_),
        rope_(RopeTable::get(cfg)) {}

  std::vector<ParamDecl> params() const override {
    return {{prefix() + ".q_proj.weight", {width_, dim_}},
            {prefix() + ".k_proj.weight", {width_, dim_}},
            {prefix() + ".v_proj.weight", {width_, dim_}},
            residual_out({prefix() + ".o_proj.weight", {dim_, width_}})};
  }
  void bind(ParamBinder& b) override {
    const auto p = params();
    for (size_t i = 0; i < p.size(); ++i) *weights()[i] = b.get(p[i]);
  }
  int64_t out_width() const override { return dim_; }
  bool causal() const override { return false; }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) override {
    if (states) fail(kind(), " ", prefix(), ": bidirectional attention has no decode state (the model recomputes)");
    const int64_t rows = batch.rows;
    const bool train = ctx.training;
    float* q = rows_of(train ? saved_q_ : tmp_q_, rows * width_);
    float* k = rows_of(train ? saved_k_ : tmp_k_, rows * width_);
    float* v = rows_of(train ? saved_v_ : tmp_v_, rows * width_);
    float* o = rows_of(train ? saved_o_ : tmp_o_, rows * width_);
    linear(ctx, x, rows, wq_, q);
    linear(ctx, x, rows, wk_, k);
    linear(ctx, x, rows, wv_, v);
    rotate(ctx, batch, q, k, false);
    index(batch);
    if (train) {
      saved_x_.assign(x, x + rows * dim_);
      saved_p_.resize(static_cast<size_t>(p_total_));
    }
    const kernels::Table& kt = ctx.kt();
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd_));
    each_item(batch, [&](const Item& item, int64_t T, int64_t off) {
      thread_local std::vector<float> local;
      float* p = train ? saved_p_.data() + item.p_offset : rows_of(local, T * T);
      // Scores, softmax over every key of the sequence, weighted sum of values.
      kt.matmul_f32(q + off, width_, T, hd_, k + off, width_, T, p, T);
      for (int64_t i = 0; i < T; ++i) {
        for (int64_t j = 0; j < T; ++j) p[i * T + j] *= scale;
        kt.softmax(p + i * T, T);
      }
      ops::gemm(ctx.exec, T, hd_, T, {p, T, 1}, {v + off, width_, 1}, o + off, width_, false);
    });
    linear(ctx, o, rows, wo_, y);
  }

  void free_saved() override { release(saved_x_, saved_q_, saved_k_, saved_v_, saved_o_, saved_p_); }
  void bind_grads(GradBinder& gb) override {
    const auto p = params();
    float** grads[] = {&dwq_, &dwk_, &dwv_, &dwo_};
    for (size_t i = 0; i < p.size(); ++i) *grads[i] = gb.get(p[i].name);
  }

  // do = dy Wo, dWo += dyᵀ o; per (sequence, head): dv = Pᵀ do, dP = do vᵀ,
  // dS = P * (dP - rowsum(P * dP)) / sqrt(hd), dq = dS k, dk = dSᵀ q; the
  // rotation undone on dq, dk; then the projections' gradients and dx.
  void backward(const float* dy, float* dx, const Batch& batch, Context& ctx) override {
    const int64_t rows = batch.rows;
    const Exec& ex = ctx.exec;
    float* dout = ctx.scratch.floats(0, static_cast<size_t>(rows * width_));
    float* dq = ctx.scratch.floats(1, static_cast<size_t>(rows * width_));
    float* dk = ctx.scratch.floats(2, static_cast<size_t>(rows * width_));
    float* dv = ctx.scratch.floats(3, static_cast<size_t>(rows * width_));
    ops::matmul_nn(ex, dy, rows, dim_, wo_.f32(), width_, dout);
    ops::matmul_tn_acc(ex, dy, rows, dim_, saved_o_.data(), width_, dwo_);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd_));
    const float *q = saved_q_.data(), *k = saved_k_.data(), *v = saved_v_.data();
    each_item(batch, [&](const Item& item, int64_t T, int64_t off) {
      thread_local std::vector<float> dp_buf;
      const float* p = saved_p_.data() + item.p_offset;
      float* dp = rows_of(dp_buf, T * T);
      ops::gemm(ex, T, hd_, T, {p, 1, T}, {dout + off, width_, 1}, dv + off, width_, false);
      ops::gemm(ex, T, T, hd_, {dout + off, width_, 1}, {v + off, 1, width_}, dp, T, false);
      for (int64_t i = 0; i < T; ++i) {
        const float* pi = p + i * T;
        float* di = dp + i * T;
        double dot = 0;
        for (int64_t j = 0; j < T; ++j) dot += static_cast<double>(pi[j]) * di[j];
        for (int64_t j = 0; j < T; ++j) di[j] = pi[j] * (di[j] - static_cast<float>(dot)) * scale;
      }
      ops::gemm(ex, T, hd_, T, {dp, T, 1}, {k + off, width_, 1}, dq + off, width_, false);
      ops::gemm(ex, T, hd_, T, {dp, 1, T}, {q + off, width_, 1}, dk + off, width_, false);
    });
    rotate(ctx, batch, dq, dk, true);
    const float* x = saved_x_.data();
    ops::matmul_tn_acc(ex, dq, rows, width_, x, dim_, dwq_);
    ops::matmul_tn_acc(ex, dk, rows, width_, x, dim_, dwk_);
    ops::matmul_tn_acc(ex, dv, rows, width_, x, dim_, dwv_);
    ops::matmul_nn(ex, dq, rows, width_, wq_.f32(), dim_, dx);
    ops::gemm(ex, rows, dim_, width_, {dk, width_, 1}, {wk_.f32(), dim_, 1}, dx, dim_, true);
    ops::gemm(ex, rows, dim_, width_, {dv, width_, 1}, {wv_.f32(), dim_, 1}, dx, dim_, true);
  }

 private:
  struct Item {
    int64_t seq, head, p_offset;
  };

  std::array<Tensor*, 4> weights() { return {&wq_, &wk_, &wv_, &wo_}; }

  // fn(item, T, off) for every (sequence, head) item over the threads: T the
  // sequence's rows, off where its head starts in the q/k/v/o rows.
  template <class Fn>
  void each_item(const Batch& batch, Fn&& fn) const {
    parallel_for(static_cast<int64_t>(items_.size()), 1, [&](int64_t lo, int64_t hi) {
      for (int64_t it = lo; it < hi; ++it) {
        const Item& item = items_[it];
        const SeqSpan& s = batch.seqs[item.seq];
        fn(item, s.len, s.row * width_ + item.head * hd_);
      }
    });
  }

  static float* rows_of(std::vector<float>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
  }

  // RoPE on q and k at each row's position in its sequence (inverse: the
  // rotation's backward, on dq and dk).
  void rotate(const Context& ctx, const Batch& batch, float* q, float* k, bool inverse) {
    pos_.resize(static_cast<size_t>(batch.rows));
    for (const SeqSpan& s : batch.seqs)
      for (int64_t i = 0; i < s.len; ++i) pos_[s.row + i] = s.pos + i;
    const int64_t grain = 16;
    parallel_for(batch.rows, grain, [&](int64_t lo, int64_t hi) {
      rope_->rotate(ctx.kt(), q + lo * width_, hi - lo, width_, heads_, pos_.data() + lo, inverse);
      rope_->rotate(ctx.kt(), k + lo * width_, hi - lo, width_, heads_, pos_.data() + lo, inverse);
    });
  }

  // One work item per (sequence, head), with where its probabilities live.
  void index(const Batch& batch) {
    items_.clear();
    p_total_ = 0;
    for (int64_t s = 0; s < static_cast<int64_t>(batch.seqs.size()); ++s) {
      const int64_t T = batch.seqs[s].len;
      for (int64_t h = 0; h < heads_; ++h) {
        items_.push_back({s, h, p_total_});
        p_total_ += T * T;
      }
    }
  }

  int64_t dim_, heads_, hd_, width_;
  std::shared_ptr<const RopeTable> rope_;
  Tensor wq_, wk_, wv_, wo_;
  float *dwq_ = nullptr, *dwk_ = nullptr, *dwv_ = nullptr, *dwo_ = nullptr;
  std::vector<Item> items_;
  int64_t p_total_ = 0;
  std::vector<int64_t> pos_;
  std::vector<float> tmp_q_, tmp_k_, tmp_v_, tmp_o_;                              // inference
  std::vector<float> saved_x_, saved_q_, saved_k_, saved_v_, saved_o_, saved_p_;  // training
};

}  // namespace

ModuleType bidir_attention_module() {
  return ModuleType{
      .kind = "bidir-attention",
      .name = "self_attn",
      .summary = "bidirectional multi-head self-attention with RoPE (an encoder's; makes a model non-causal)",
      .options = {},
      .make = make_as<BidirAttention>,
  };
}

}  // namespace strata
