#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "strata/error.h"

namespace strata {

double PerplexityResult::perplexity() const { return std::exp(mean_nll()); }

double token_nll(const float* logits, int64_t vocab, int32_t target) {
  float mx = logits[0];
  for (int64_t i = 1; i < vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return std::log(sum) + mx - logits[target];
}

PerplexityResult perplexity(Model& model, const std::vector<int32_t>& tokens, int64_t ctx,
                            const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t V = model.config().vocab_size;
  if (ctx < 2) fail("--ctx must be at least 2");
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 2) fail("the text has fewer than 2 tokens");
  PerplexityResult r;
  const int64_t total = (n + ctx - 1) / ctx;
  std::vector<float> logits;
  for (int64_t start = 0; start < n; start += ctx) {
    const int64_t len = std::min(ctx, n - start);
    if (len < 2) break;  // a lone trailing token has nothing to predict it within its window
    SeqInput in{std::span<const int32_t>(tokens.data() + start, static_cast<size_t>(len))};
    model.forward({&in, 1}, Logits::All, logits);
    for (int64_t i = 0; i + 1 < len; ++i) r.nll_sum += token_nll(&logits[i * V], V, tokens[start + i + 1]);
    r.predicted += len - 1;
    ++r.windows;
    if (progress) progress(r.windows, total);
  }
  return r;
}

}  // namespace strata
