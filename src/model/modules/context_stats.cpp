#include "model/modules/context_stats.h"

#include <algorithm>

#include "core/parallel.h"
#include "strata/error.h"

namespace strata {
namespace {

// Items per thread chunk so that a chunk has some 16K elements of work (a
// decode step has one row per sequence: not worth waking threads per item).
int64_t items_per_chunk(const Batch& b) {
  const int64_t rows_per_seq = std::max<int64_t>(1, b.rows / std::max<int64_t>(1, static_cast<int64_t>(b.seqs.size())));
  return std::max<int64_t>(1, (int64_t{1} << 14) / (kChannelBlock * rows_per_seq));
}

}  // namespace

CtxMode ctx_mode_of(const Options& o) {
  const std::string& m = opt_string(o, "ctx_mode");
  if (m == "causal") return CtxMode::Causal;
  if (m == "global") return CtxMode::Global;
  fail("ctx_mode '", m, "' is not causal or global");
}

OptionDecl ctx_mode_option() {
  return choice_option("ctx_mode", "causal", {"causal", "global"},
                       "context statistics: causal prefix mean, or global sequence mean (sees later tokens)");
}

std::unique_ptr<LayerState> ContextMean::make_state() const {
  if (!causal()) return nullptr;
  auto s = std::make_unique<RunningSum>();
  s->sum.assign(static_cast<size_t>(dim_), 0.0f);
  return s;
}

StateSize ContextMean::state_size() const {
  return causal() ? StateSize{static_cast<int64_t>(dim_ * sizeof(float) + sizeof(int64_t)), 0, 0} : StateSize{};
}

void ContextMean::stat_rows(const Batch& b, std::vector<int64_t>& out) const {
  out.resize(static_cast<size_t>(b.rows));
  for (size_t s = 0; s < b.seqs.size(); ++s)
    for (int64_t t = 0; t < b.seqs[s].len; ++t)
      out[b.seqs[s].row + t] = causal() ? b.seqs[s].row + t : static_cast<int64_t>(s);
}

void ContextMean::forward(const float* z, float* c, const Batch& b, LayerState* const* states) const {
  const int64_t D = dim_, blocks = (D + kChannelBlock - 1) / kChannelBlock;
  const int64_t n_seqs = static_cast<int64_t>(b.seqs.size());
  std::vector<RunningSum*> run(b.seqs.size(), nullptr);
  if (states) {
    if (!causal()) fail(owner_, ": global context statistics cannot continue from a decode state");
    for (size_t s = 0; s < b.seqs.size(); ++s) {
      run[s] = &state_cast<RunningSum>(states[s], owner_);
      if (static_cast<int64_t>(run[s]->sum.size()) != D)
        fail(owner_, ": sequence ", s, " has no context-sum state of width ", D);
      if (run[s]->count != b.seqs[s].pos)
        fail(owner_, ": state holds ", run[s]->count, " positions but the batch starts at ", b.seqs[s].pos);
    }
  }
  // Work items: (sequence, block of channels); each owns its slice of the state.
  parallel_for(n_seqs * blocks, items_per_chunk(b), [&](int64_t lo, int64_t hi) {
    float sum[kChannelBlock];
    for (int64_t it = lo; it < hi; ++it) {
      const size_t s = static_cast<size_t>(it / blocks);
      const int64_t j0 = it % blocks * kChannelBlock, nj = std::min(kChannelBlock, D - j0);
      const SeqSpan& sp = b.seqs[s];
      int64_t n = run[s] ? run[s]->count : 0;
      for (int64_t j = 0; j < nj; ++j) sum[j] = run[s] ? run[s]->sum[j0 + j] : 0.0f;
      for (int64_t t = 0; t < sp.len; ++t) {
        const float* zr = z + (sp.row + t) * D + j0;
        for (int64_t j = 0; j < nj; ++j) sum[j] += zr[j];
        if (causal()) {
          const float count = static_cast<float>(++n);
          float* cr = c + (sp.row + t) * D + j0;
          for (int64_t j = 0; j < nj; ++j) cr[j] = sum[j] / count;
        }
      }
      if (!causal()) {
        const float count = static_cast<float>(std::max<int64_t>(1, sp.len));
        float* cr = c + static_cast<int64_t>(s) * D + j0;
        for (int64_t j = 0; j < nj; ++j) cr[j] = sum[j] / count;
      }
      if (run[s]) std::copy(sum, sum + nj, run[s]->sum.begin() + j0);
    }
  });
  for (size_t s = 0; s < b.seqs.size(); ++s)
    if (run[s]) run[s]->count += b.seqs[s].len;
}

void ContextMean::backward_add(const float* dc, float* dz, const Batch& b) const {
  const int64_t D = dim_, blocks = (D + kChannelBlock - 1) / kChannelBlock;
  const int64_t n_seqs = static_cast<int64_t>(b.seqs.size());
  parallel_for(n_seqs * blocks, items_per_chunk(b), [&](int64_t lo, int64_t hi) {
    double acc[kChannelBlock];
    for (int64_t it = lo; it < hi; ++it) {
      const size_t s = static_cast<size_t>(it / blocks);
      const int64_t j0 = it % blocks * kChannelBlock, nj = std::min(kChannelBlock, D - j0);
      const SeqSpan& sp = b.seqs[s];
      if (causal()) {
        // dz[t] = sum over u >= t of dc[u] / (u + 1), from the last row back.
        for (int64_t j = 0; j < nj; ++j) acc[j] = 0.0;
        for (int64_t t = sp.len - 1; t >= 0; --t) {
          const float* dcr = dc + (sp.row + t) * D + j0;
          float* dzr = dz + (sp.row + t) * D + j0;
          const double inv = 1.0 / static_cast<double>(t + 1);
          for (int64_t j = 0; j < nj; ++j) {
            acc[j] += dcr[j] * inv;
            dzr[j] += static_cast<float>(acc[j]);
          }
        }
      } else {
        const float* dcr = dc + static_cast<int64_t>(s) * D + j0;
        const float inv = 1.0f / static_cast<float>(std::max<int64_t>(1, sp.len));
        for (int64_t t = 0; t < sp.len; ++t) {
          float* dzr = dz + (sp.row + t) * D + j0;
          for (int64_t j = 0; j < nj; ++j) dzr[j] += dcr[j] * inv;
        }
      }
    }
  });
}

void add_column_sums(const float* a, int64_t rows, int64_t cols, float* out) {
  parallel_for(cols, kChannelBlock, [&](int64_t lo, int64_t hi) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = lo; j < hi; ++j) out[j] += a[r * cols + j];
  });
}

}  // namespace strata
