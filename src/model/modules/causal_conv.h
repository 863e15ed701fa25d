// Causal depthwise convolution over the rows of each sequence, PyTorch Conv1d
// layout (weight [C, 1, k], bias [C]):
//   y[t, c] = bias[c] + sum over j < k of weight[c, 0, j] * x[t - (k-1) + j, c]
// Tap k-1 multiplies the current row; rows before a sequence's first come
// from a window of the k-1 rows before it (a decode state) or are zeros.
// Shared by token mixing and Mamba's conv1d.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"
#include "model/module.h"

namespace strata {

class CausalConv {
 public:
  CausalConv(int64_t channels, int64_t taps);
  int64_t channels() const { return channels_; }
  int64_t taps() const { return taps_; }
  // The window of a fresh sequence: (k-1) x C zeros.
  const std::vector<float>& zero_window() const { return zeros_; }

  // Every row of the batch (x rows ldx floats apart, C used), SiLU applied
  // when silu. windows[s]: the (k-1) x C rows before sequence s, oldest
  // first, or null for zeros (windows itself null: zeros for all).
  void forward(const kernels::Table& kt, const float* weight, const float* bias, const float* x, int64_t ldx, float* y,
               int64_t ldy, const Batch& batch, const float* const* windows, bool silu);
  // window := the last k-1 rows of [window; the sequence's rows of x].
  void advance(float* window, const float* x, int64_t ldx, const SeqSpan& sp) const;
  // Backward of a forward without windows (training): dx (written, lddx
  // apart) from dy = dL/dy (the pre-SiLU output); dweight, dbias added to.
  void backward(const float* weight, const float* dy, int64_t lddy, const float* x, int64_t ldx, float* dx,
                int64_t lddx, float* dweight, float* dbias, const Batch& batch);

 private:
  int64_t channels_, taps_;
  std::vector<float> zeros_;
  std::vector<float> tap_major_;  // weights as [k, C]
};

}  // namespace strata
