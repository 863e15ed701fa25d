// Context statistics of the modified decoder (docs/context-modules.md): the
// mean of a per-token vector z over its sequence, used by AdaRMSNorm (over the
// normalised inputs) and by the SE gate (over its raw inputs).
//
//   causal: c[t] = (z[0] + ... + z[t]) / (t + 1)      prefix mean, one per row
//   global: c    = (z[0] + ... + z[T-1]) / T          one per sequence
//
// Sums are F32, accumulated left to right, and a decode state continues the
// very same sum, so prefill, chunked prefill and decode give identical bits.
// Global statistics look at later rows: modules using them report
// causal() == false and are never given decode states.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/module.h"
#include "model/options.h"

namespace strata {

enum class CtxMode { Causal, Global };
CtxMode ctx_mode_of(const Options& o);  // option ctx_mode: "causal" | "global"
// The ctx_mode option both context modules declare.
OptionDecl ctx_mode_option();

// Causal decode state of one module for one sequence: the running F32 sum of
// z over every row seen so far and how many rows that is.
struct RunningSum final : StateOf<RunningSum> {
  static constexpr const char* kKind = "running-sum";
  std::vector<float> sum;
  int64_t count = 0;
  std::string shape() const { return cat("width ", sum.size()); }
  int64_t bytes() const { return static_cast<int64_t>(sum.size() * sizeof(float) + sizeof(count)); }
};

class ContextMean {
 public:
  // `owner` names the module in error messages.
  ContextMean(CtxMode mode, int64_t dim, std::string owner) : mode_(mode), dim_(dim), owner_(std::move(owner)) {}

  bool causal() const { return mode_ == CtxMode::Causal; }
  std::unique_ptr<LayerState> make_state() const;  // null in global mode
  StateSize state_size() const;

  // Statistic rows of a batch: one per row (causal) or one per sequence (global).
  int64_t rows(const Batch& b) const { return causal() ? b.rows : static_cast<int64_t>(b.seqs.size()); }
  // The statistic row each row of the batch uses: itself (causal) or its sequence (global).
  void stat_rows(const Batch& b, std::vector<int64_t>& out) const;

  // c[rows(b), dim] from z[b.rows, dim]. With states (causal only, one
  // RunningSum per sequence holding exactly seqs[s].pos rows) the sums
  // continue from them and are left updated; without, every sequence starts
  // empty.
  void forward(const float* z, float* c, const Batch& b, LayerState* const* states) const;
  // dz[b.rows, dim] += (dc/dz)ᵀ dc for a forward without states: a reverse
  // cumulative sum of dc[t] / (t + 1) (causal), or dc / T on every row (global).
  void backward_add(const float* dc, float* dz, const Batch& b) const;

 private:
  CtxMode mode_;
  int64_t dim_;
  std::string owner_;
};

// out[j] += sum over rows of a[r * cols + j]; columns split over the threads,
// each summed in row order (the same bits for any thread count).
void add_column_sums(const float* a, int64_t rows, int64_t cols, float* out);

// Column blocks used to split per-channel work over the threads: a block owns
// its channels for every row, so per-channel accumulations never race.
constexpr int64_t kChannelBlock = 64;

}  // namespace strata
