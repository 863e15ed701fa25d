// eval length's protocol (src/eval/length_eval.h) on a tiny model against a
// direct computation: [BOS, window minus its last token] in one forward,
// every token of every window scored, the same tokens at every length.
#include <gtest/gtest.h>

#include <cmath>

#include "eval/length_eval.h"
#include "eval/perplexity.h"
#include "strata/model.h"

namespace strata {
namespace {

TEST(LengthEval, MatchesADirectComputation) {
  Config cfg = preset_config("tiny");
  cfg.max_position_embeddings = 1024;
  auto m = Model::random(cfg, 3, DType::F32);
  const int64_t V = cfg.vocab_size;
  std::vector<int32_t> tokens;
  for (int64_t i = 0; i < 2500; ++i) tokens.push_back(static_cast<int32_t>((i * 131 + 7) % V));
  for (int64_t L : {100, 600, 1200}) {  // 600 and 1200: windows run in rounds of 512 rows
    const int64_t scored = 2400 / L * L;
    const LengthPoint p = length_perplexity(*m, tokens, cfg.bos_token_id, L, scored);
    EXPECT_EQ(p.windows, 2400 / L);
    EXPECT_EQ(p.scored, scored);
    double nll = 0;
    std::vector<float> logits;
    for (int64_t w = 0; w < p.windows; ++w) {
      std::vector<int32_t> in = {cfg.bos_token_id};
      in.insert(in.end(), tokens.begin() + w * L, tokens.begin() + (w + 1) * L - 1);
      SeqInput s{in};
      m->forward({&s, 1}, Logits::All, logits);
      for (int64_t i = 0; i < L; ++i) nll += token_nll(&logits[i * V], V, tokens[w * L + i]);
    }
    EXPECT_EQ(p.nll_sum, nll) << "length " << L;  // the rounds give the one forward's bits
    EXPECT_NEAR(p.perplexity(), std::exp(nll / static_cast<double>(scored)), 1e-9 * p.perplexity());
  }
}

}  // namespace
}  // namespace strata
