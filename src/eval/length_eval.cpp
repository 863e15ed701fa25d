#include "eval/length_eval.h"

#include <chrono>
#include <cmath>

#include "eval/perplexity.h"
#include "strata/error.h"

namespace strata {

double LengthPoint::perplexity() const { return scored ? std::exp(nll_sum / static_cast<double>(scored)) : 0.0; }

LengthPoint length_perplexity(Model& model, const std::vector<int32_t>& tokens, int32_t bos, int64_t length,
                              int64_t scored, const std::function<void(int64_t, int64_t)>& progress) {
  if (length < 1) fail("evaluation length ", length, " must be positive");
  if (scored > static_cast<int64_t>(tokens.size()))
    fail("cannot score ", scored, " tokens of a text of ", tokens.size());
  const int64_t V = model.config().vocab_size, windows = scored / length;
  LengthPoint p;
  p.length = length;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> input(static_cast<size_t>(length));
  std::vector<float> logits;
  for (int64_t w = 0; w < windows; ++w) {
    const int32_t* win = tokens.data() + w * length;
    input[0] = bos;
    std::copy(win, win + length - 1, input.begin() + 1);
    auto state = model.new_state();
    for (int64_t r0 = 0; r0 < length; r0 += Model::kPrefillChunk) {
      const int64_t n = std::min(Model::kPrefillChunk, length - r0);
      SeqInput in{std::span<const int32_t>(input.data() + r0, static_cast<size_t>(n)), state.get()};
      model.forward({&in, 1}, Logits::All, logits);
      for (int64_t i = 0; i < n; ++i) p.nll_sum += token_nll(&logits[i * V], V, win[r0 + i]);
      if (progress) progress(w * length + r0 + n, windows * length);
    }
    p.scored += length;
    ++p.windows;
  }
  p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return p;
}

}  // namespace strata
