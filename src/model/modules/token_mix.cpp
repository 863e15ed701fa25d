// Token mixing: a causal depthwise convolution over the last k rows
// (docs/context-modules.md), PyTorch Conv1d layout weight [D, 1, k]:
//   y[t, c] = bias[c] + sum_j weight[c, 0, j] · u[t - (k-1) + j, c],  u[τ < 0] = 0.
// Tap k-1 multiplies the current row. Decode state: the last k-1 inputs of
// the sequence (oldest first, zeros before the start). The Dirac init
// (tap k-1 = 1, others and bias 0) passes the input through exactly:
// 0 + 0·u + ... + 1·u = u in IEEE arithmetic.
#include <algorithm>

#include "core/parallel.h"
#include "model/modules/context_stats.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

struct ConvWindow final : StateOf<ConvWindow> {
  static constexpr const char* kKind = "conv-window";
  std::vector<float> rows;  // [k-1, D], oldest first
  int64_t count = 0;        // rows seen so far
  std::string shape() const { return cat(rows.size(), " values"); }
  int64_t bytes() const { return static_cast<int64_t>(rows.size() * sizeof(float) + sizeof(count)); }
};

class TokenMix final : public Module {
 public:
  TokenMix(const ModuleSpec& spec, const Config& cfg)
      : Module(spec), prefix_(spec.prefix), dim_(cfg.hidden_size), taps_(opt_int(spec.options, "kernel")) {
    zeros_.assign(static_cast<size_t>((taps_ - 1) * dim_), 0.0f);
  }

  std::vector<ParamDecl> params() const override {
    return {{prefix_ + ".weight", {dim_, 1, taps_}, Init::DiracLast, false},
            {prefix_ + ".bias", {dim_}, Init::Zeros, false}};
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    w_ = b.get(p[0]);
    bias_ = b.get(p[1]);
  }
  int64_t out_width() const override { return dim_; }

  std::unique_ptr<LayerState> make_state() const override {
    auto s = std::make_unique<ConvWindow>();
    s->rows = zeros_;
    return s;
  }
  StateSize state_size() const override {
    return {static_cast<int64_t>(zeros_.size() * sizeof(float) + sizeof(int64_t)), 0, 0};
  }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) override {
    const int64_t D = dim_, k = taps_, rows = batch.rows;
    if (ctx.training && states) fail(prefix_, ": training forward runs without decode states");
    // The window before each sequence's first row: its state, or zeros.
    windows_.assign(batch.seqs.size(), zeros_.data());
    std::vector<ConvWindow*> st(batch.seqs.size(), nullptr);
    for (size_t s = 0; s < batch.seqs.size() && states; ++s) {
      st[s] = &state_of<ConvWindow>(states[s]);
      if (static_cast<int64_t>(st[s]->rows.size()) != (k - 1) * D)
        fail(prefix_, ": sequence ", s, " has no token-mixing state of width ", D);
      if (st[s]->count != batch.seqs[s].pos)
        fail(prefix_, ": state holds ", st[s]->count, " positions but the batch starts at ", batch.seqs[s].pos);
      windows_[s] = st[s]->rows.data();
    }
    // Taps as [k, D] so the inner loop runs over contiguous channels.
    tap_major_.resize(static_cast<size_t>(k * D));
    for (int64_t c = 0; c < D; ++c)
      for (int64_t j = 0; j < k; ++j) tap_major_[j * D + c] = w_.f32()[c * k + j];
    index_rows(batch);
    const float* bias = bias_.f32();
    parallel_for(rows, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) {
        const size_t s = row_seq_[row];
        const int64_t t = row - batch.seqs[s].row;
        float* yr = y + row * D;
        std::copy(bias, bias + D, yr);
        for (int64_t j = 0; j < k; ++j) {
          const float* in = input_row(x, batch, s, t - (k - 1) + j);
          const float* wj = &tap_major_[j * D];
          for (int64_t c = 0; c < D; ++c) yr[c] += wj[c] * in[c];
        }
      }
    });
    // New windows: the last k-1 rows of [old window; this call's rows]. In
    // place, oldest first: row m comes from row m + len >= m, not yet overwritten.
    for (size_t s = 0; s < batch.seqs.size() && states; ++s) {
      for (int64_t m = 0; m < k - 1; ++m) {
        const float* in = input_row(x, batch, s, batch.seqs[s].len - (k - 1) + m);
        std::copy(in, in + D, st[s]->rows.begin() + m * D);
      }
      st[s]->count += batch.seqs[s].len;
    }
    if (ctx.training) saved_u_.assign(x, x + rows * D);
  }

  void free_saved() override { release(saved_u_); }
  void bind_grads(GradBinder& gb) override {
    dw_ = gb.get(prefix_ + ".weight");
    dbias_ = gb.get(prefix_ + ".bias");
  }

  // du[t, c] = sum_j dy[t + (k-1) - j, c] · w[c, j] over rows of the same
  // sequence; dw[c, j] += sum_t dy[t, c] · u[t - (k-1) + j, c]; dbias += sum_t dy.
  void backward(const float* dy, float* dx, const Batch& batch, Context&) override {
    const int64_t D = dim_, k = taps_, rows = batch.rows;
    const float* u = saved_u_.data();
    const float* w = w_.f32();
    index_rows(batch);
    parallel_for(rows, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) {
        const SeqSpan& sp = batch.seqs[row_seq_[row]];
        const int64_t t = row - sp.row;
        float* dxr = dx + row * D;
        std::fill(dxr, dxr + D, 0.0f);
        for (int64_t j = 0; j < k; ++j) {
          const int64_t out = t + (k - 1) - j;  // the output row this input feeds through tap j
          if (out >= sp.len) continue;
          const float* dyr = dy + (sp.row + out) * D;
          for (int64_t c = 0; c < D; ++c) dxr[c] += dyr[c] * w[c * k + j];
        }
      }
    });
    // Channel blocks over the threads: each owns its channels of dw and dbias.
    parallel_for(D, kChannelBlock, [&](int64_t lo, int64_t hi) {
      for (const SeqSpan& sp : batch.seqs)
        for (int64_t t = 0; t < sp.len; ++t) {
          const float* dyr = dy + (sp.row + t) * D;
          for (int64_t c = lo; c < hi; ++c) dbias_[c] += dyr[c];
          for (int64_t j = 0; j < k; ++j) {
            const int64_t src = t - (k - 1) + j;
            if (src < 0) continue;  // zero padding
            const float* ur = u + (sp.row + src) * D;
            for (int64_t c = lo; c < hi; ++c) dw_[c * k + j] += dyr[c] * ur[c];
          }
        }
    });
  }

 private:
  // row_seq_: the sequence of every row of the call.
  void index_rows(const Batch& batch) {
    row_seq_.resize(static_cast<size_t>(batch.rows));
    for (size_t s = 0; s < batch.seqs.size(); ++s)
      std::fill_n(row_seq_.begin() + batch.seqs[s].row, batch.seqs[s].len, s);
  }

  // Input row t of sequence s; t < 0 reaches into the window before the call.
  const float* input_row(const float* x, const Batch& batch, size_t s, int64_t t) const {
    if (t >= 0) return x + (batch.seqs[s].row + t) * dim_;
    return windows_[s] + (taps_ - 1 + t) * dim_;
  }

  std::string prefix_;
  int64_t dim_, taps_;
  Tensor w_, bias_;
  float *dw_ = nullptr, *dbias_ = nullptr;
  std::vector<float> zeros_;                // [k-1, D]: the window of a fresh sequence
  std::vector<const float*> windows_;       // per sequence of the current call
  std::vector<float> tap_major_;            // weights as [k, D]
  std::vector<size_t> row_seq_;             // sequence of every row of the current call
  std::vector<float> saved_u_;              // training: the inputs
};

}  // namespace

ModuleType token_mix_module() {
  return ModuleType{
      .kind = "token-mix",
      .name = "token_mixing",
      .summary = "token mixing: causal depthwise convolution over the last `kernel` rows",
      .options = {int_option("kernel", 4, 1, 8, "taps of the convolution (the current row and kernel-1 before it)")},
      .make = make_as<TokenMix>,
  };
}

}  // namespace strata
