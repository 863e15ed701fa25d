// Gradients of the whole model (embedding, RMSNorm, RoPE, GQA causal attention,
// SwiGLU, tied and untied heads, cross-entropy with ignored targets) against
// central finite differences of an independent double-precision forward
// (tests/model/reference_model.h).
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/rng.h"
#include "kernels/exec.h"
#include "kernels/ops.h"
#include "model/layers.h"
#include "model/recipes.h"
#include "model/reference_model.h"
#include "strata/model.h"

namespace strata {
namespace {

class Gradients : public ::testing::TestWithParam<bool> {};

TEST_P(Gradients, MatchFiniteDifferencesOfDoubleReference) {
  const Config c = test::reference_shape(preset_config(GetParam() ? "tiny-tied" : "tiny"));
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

// Gradients of one batch, flattened in declaration order.
std::vector<double> batch_gradients(Model& m, const std::vector<int32_t>& in, const std::vector<int32_t>& tg,
                                    int64_t B, int64_t T, double* loss) {
  m.zero_grads();
  auto l = m.train_batch(in.data(), tg.data(), B, T, 1.0f);
  *loss = l.sum / l.count;
  std::vector<double> g;
  for (const auto& [name, t] : m.named_grads())
    if (t.data)
      for (int64_t i = 0; i < t.numel(); ++i) g.push_back(t.f32()[i]);
  return g;
}

Config small_modified(const std::string& attention) {
  ModifiedRecipe r;
  r.attention = attention;
  r.ada_rank = 4;
  r.se_reduction = 4;
  return with_modified_layers(preset_config("tiny"), r);
}

// Recomputing each block's activations in backward gives the gradients of
// the plain backward (the forward without saving uses the inference matmul,
// so sums differ in the last bits only).
TEST(Gradients, CheckpointedActivationsGiveTheSameGradients) {
  for (const Config& c : {preset_config("tiny"), small_modified("standard"), small_modified("differential")}) {
    auto m = Model::random(c, 3, DType::F32);
    m->enable_training();
    const int64_t B = 2, T = 9;
    std::vector<int32_t> in(B * T), tg(B * T);
    for (int64_t i = 0; i < B * T; ++i) in[i] = static_cast<int32_t>((i * 7 + 3) % c.vocab_size), tg[i] = (i * 5 + 1) % c.vocab_size;
    double l0 = 0, l1 = 0;
    auto g0 = batch_gradients(*m, in, tg, B, T, &l0);
    m->set_checkpoint_activations(true);
    auto g1 = batch_gradients(*m, in, tg, B, T, &l1);
    m->set_checkpoint_activations(false);
    EXPECT_NEAR(l0, l1, 1e-6 * l0) << c.recipe << " " << describe_layer(c.layers.layer(0));
    double scale = 0;
    for (double v : g0) scale = std::max(scale, std::fabs(v));
    ASSERT_EQ(g0.size(), g1.size());
    for (size_t i = 0; i < g0.size(); ++i) ASSERT_NEAR(g0[i], g1[i], 1e-5 * scale) << c.recipe << " grad " << i;
    // Checkpointing frees what it recomputed: a second batch is unaffected.
    auto g2 = batch_gradients(*m, in, tg, B, T, &l1);
    EXPECT_EQ(g0, g2);
  }
}

// Mixed precision rounds the products' operands to BF16: the loss and the
// gradient direction stay close to F32's.
TEST(Gradients, Bf16ProductsStayCloseToF32) {
  if (!Exec::defaults().with_precision(ops::Precision::BF16).bf16_products())
    GTEST_SKIP() << "neither AVX512-BF16 nor AMX on this CPU: BF16 products run in F32 here, so there is nothing "
                    "to compare: skipping";
  Config c = preset_config("tiny");
  auto m = Model::random(c, 4, DType::F32);
  m->enable_training();
  const int64_t B = 2, T = 32;
  std::vector<int32_t> in(B * T), tg(B * T);
  for (int64_t i = 0; i < B * T; ++i) in[i] = static_cast<int32_t>((i * 11 + 3) % c.vocab_size), tg[i] = (i * 13 + 1) % c.vocab_size;
  double l0 = 0, l1 = 0;
  auto g0 = batch_gradients(*m, in, tg, B, T, &l0);
  m->set_exec(m->exec().with_precision(ops::Precision::BF16));
  auto g1 = batch_gradients(*m, in, tg, B, T, &l1);
  m->set_exec(m->exec().with_precision(ops::Precision::F32));
  EXPECT_NEAR(l0, l1, 2e-2 * l0);
  double dot = 0, n0 = 0, n1 = 0;
  for (size_t i = 0; i < g0.size(); ++i) dot += g0[i] * g1[i], n0 += g0[i] * g0[i], n1 += g1[i] * g1[i];
  EXPECT_GT(dot / std::sqrt(n0 * n1), 0.99);
}

}  // namespace
}  // namespace strata
