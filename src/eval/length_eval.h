// Perplexity against the evaluation length (docs/long-context.md): the text's
// first `scored` tokens are cut into non-overlapping windows of `length`
// tokens, each run from a fresh context as [BOS, t_0 .. t_{L-2}] predicting
// t_0 .. t_{L-1}, so every token of every window is scored and each window is
// exactly L positions long. Called with the same `scored` for every length
// (a multiple of all of them), every length scores the same tokens. Windows
// run in rounds of Model::kPrefillChunk rows through a decode state, so the
// logits held at once stay one round's whatever the length.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "strata/model.h"

namespace strata {

struct LengthPoint {
  int64_t length = 0, windows = 0, scored = 0;
  double nll_sum = 0, seconds = 0;
  double perplexity() const;
};

// progress(tokens done, tokens in all) after each round.
LengthPoint length_perplexity(Model& model, const std::vector<int32_t>& tokens, int32_t bos, int64_t length,
                              int64_t scored, const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace strata
