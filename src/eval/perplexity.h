// Perplexity of a token stream: cut into consecutive non-overlapping windows
// of `ctx` tokens, each scored from a fresh context; every position after the
// first of a window is predicted and counts.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "strata/model.h"

namespace strata {

struct PerplexityResult {
  double nll_sum = 0;     // natural log
  int64_t predicted = 0;  // tokens scored
  int64_t windows = 0;
  double mean_nll() const { return predicted ? nll_sum / predicted : 0.0; }
  double perplexity() const;
};

// progress(window_index, windows_total) is called after each window.
PerplexityResult perplexity(Model& model, const std::vector<int32_t>& tokens, int64_t ctx,
                            const std::function<void(int64_t, int64_t)>& progress = {});

// -log softmax(logits)[target], computed stably in double.
double token_nll(const float* logits, int64_t vocab, int32_t target);

}  // namespace strata
