// Gradients of the whole model (embedding, RMSNorm, RoPE, GQA causal attention,
// SwiGLU, tied and untied heads, cross-entropy with ignored targets) against
// central finite differences of an independent double-precision forward
// (tests/model/reference_model.h).
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/rng.h"
#include "model/reference_model.h"
#include "strata/model.h"

namespace strata {
namespace {

class Gradients : public ::testing::TestWithParam<bool> {};

TEST_P(Gradients, MatchFiniteDifferencesOfDoubleReference) {
  Config c = preset_config(GetParam() ? "tiny-tied" : "tiny");
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.initializer_range = 0.3;
  auto m = Model::random(c, 11, DType::F32);
  m->enable_training();
  test::expect_train_gradients_match_reference(c, *m, 2, 5, 3);
}

INSTANTIATE_TEST_SUITE_P(Head, Gradients, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? std::string("tied") : std::string("untied"); });

TEST(Gradients, InputEmbeddingGradientMatchesTableGradient) {
  Config c = preset_config("tiny");
  auto m = Model::random(c, 5, DType::F32);
  m->enable_training();
  const int64_t B = 1, T = 6, D = c.hidden_size;
  std::vector<int32_t> in = {1, 2, 3, 4, 5, 1}, tg = {2, 3, 4, 5, 1, 2};
  m->zero_grads();
  m->train_batch(in.data(), tg.data(), B, T, 1.0f);
  std::vector<float> table_grad(m->named_grads().front().second.f32(),
                                m->named_grads().front().second.f32() + c.vocab_size * D);
  const Tensor e = m->named_tensors().front().second;
  std::vector<float> emb(T * D), demb(T * D);
  for (int64_t i = 0; i < T; ++i) std::copy(e.f32() + in[i] * D, e.f32() + (in[i] + 1) * D, emb.begin() + i * D);
  m->zero_grads();
  m->train_batch(nullptr, tg.data(), B, T, 1.0f, emb.data(), demb.data());
  // Token 1 appears twice: its table gradient is the sum of both positions.
  for (int64_t j = 0; j < D; ++j) {
    EXPECT_NEAR(table_grad[2 * D + j], demb[1 * D + j], 1e-6);
    EXPECT_NEAR(table_grad[1 * D + j], demb[0 * D + j] + demb[5 * D + j], 1e-6);
  }
}

}  // namespace
}  // namespace strata
