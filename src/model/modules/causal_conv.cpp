#include "model/modules/causal_conv.h"

#include <algorithm>

#include "core/parallel.h"
#include "strata/error.h"

namespace strata {

CausalConv::CausalConv(int64_t channels, int64_t taps) : channels_(channels), taps_(taps) {
  if (taps < 1 || taps > kernels::kConvMaxTaps) fail("convolution taps must be in 1..", kernels::kConvMaxTaps);
  zeros_.assign(static_cast<size_t>((taps - 1) * channels), 0.0f);
}

void CausalConv::forward(const kernels::Table& kt, const float* weight, const float* bias, const float* x,
                         int64_t ldx, float* y, int64_t ldy, const Batch& batch, const float* const* windows,
                         bool silu) {
  const int64_t C = channels_, k = taps_;
  tap_major_.resize(static_cast<size_t>(k * C));  // so the kernel reads contiguous channels per tap
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < k; ++j) tap_major_[j * C + c] = weight[c * k + j];
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SeqSpan sp = batch.seqs[s];
    const float* before = windows && windows[s] ? windows[s] : zeros_.data();
    parallel_for(sp.len, std::max<int64_t>(1, 4096 / C), [&](int64_t lo, int64_t hi) {
      const float* in[kernels::kConvMaxTaps];
      for (int64_t t = lo; t < hi; ++t) {
        for (int64_t j = 0; j < k; ++j) {
          const int64_t src = t - (k - 1) + j;  // < 0: inside the window before the call
          in[j] = src >= 0 ? x + (sp.row + src) * ldx : before + (k - 1 + src) * C;
        }
        kt.dwconv_row(in, tap_major_.data(), C, bias, k, C, y + (sp.row + t) * ldy, silu);
      }
    });
  }
}

void CausalConv::advance(float* window, const float* x, int64_t ldx, const SeqSpan& sp) const {
  // In place, oldest first: row m comes from row m + len >= m, not yet overwritten.
  const int64_t C = channels_, k = taps_;
  for (int64_t m = 0; m < k - 1; ++m) {
    const int64_t src = sp.len - (k - 1) + m;
    const float* in = src >= 0 ? x + (sp.row + src) * ldx : window + (m + sp.len) * C;
    std::copy(in, in + C, window + m * C);
  }
}

// dx[t, c] = sum_j dy[t + (k-1) - j, c] * w[c, j] over rows of the same
// sequence; dw[c, j] += sum_t dy[t, c] * x[t - (k-1) + j, c]; dbias += sum_t dy.
void CausalConv::backward(const float* weight, const float* dy, int64_t lddy, const float* x, int64_t ldx, float* dx,
                          int64_t lddx, float* dweight, float* dbias, const Batch& batch) {
  const int64_t C = channels_, k = taps_;
  for (const SeqSpan& sp : batch.seqs) {
    parallel_for(sp.len, std::max<int64_t>(1, 4096 / C), [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        float* dxr = dx + (sp.row + t) * lddx;
        std::fill(dxr, dxr + C, 0.0f);
        for (int64_t j = 0; j < k; ++j) {
          const int64_t out = t + (k - 1) - j;  // the output row this input feeds through tap j
          if (out >= sp.len) continue;
          const float* dyr = dy + (sp.row + out) * lddy;
          for (int64_t c = 0; c < C; ++c) dxr[c] += dyr[c] * weight[c * k + j];
        }
      }
    });
  }
  // Channel blocks over the threads: each owns its channels of dweight and
  // dbias, summed over rows in order (the same sums for any thread count).
  parallel_for(C, 64, [&](int64_t lo, int64_t hi) {
    for (const SeqSpan& sp : batch.seqs)
      for (int64_t t = 0; t < sp.len; ++t) {
        const float* dyr = dy + (sp.row + t) * lddy;
        for (int64_t c = lo; c < hi; ++c) dbias[c] += dyr[c];
        for (int64_t j = 0; j < k; ++j) {
          const int64_t src = t - (k - 1) + j;
          if (src < 0) continue;  // zero padding
          const float* xr = x + (sp.row + src) * ldx;
          for (int64_t c = lo; c < hi; ++c) dweight[c * k + j] += dyr[c] * xr[c];
        }
      }
  });
}

}  // namespace strata
