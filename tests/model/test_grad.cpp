// Gradients of the whole model (embedding, RMSNorm, RoPE, GQA causal attention,
// SwiGLU, tied and untied heads, cross-entropy with ignored targets) against
// central finite differences of an independent double-precision forward.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/rng.h"
#include "strata/model.h"

namespace strata {
namespace {

using Params = std::map<std::string, std::vector<double>>;

// Plain double-precision Llama forward and mean cross-entropy (HF semantics).
double reference_loss(const Config& c, const Params& p, const std::vector<int32_t>& in,
                      const std::vector<int32_t>& tg, int64_t B, int64_t T) {
  const int64_t D = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads, hd = c.head_dim,
                F = c.intermediate_size, V = c.vocab_size, rep = H / KV;
  auto W = [&](const std::string& n) -> const std::vector<double>& { return p.at(n); };
  auto linear = [](const std::vector<double>& x, int64_t rows, int64_t K, const std::vector<double>& w, int64_t N) {
    std::vector<double> y(rows * N, 0.0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < N; ++j)
        for (int64_t k = 0; k < K; ++k) y[i * N + j] += x[i * K + k] * w[j * K + k];
    return y;
  };
  auto rms = [&](const std::vector<double>& x, const std::vector<double>& w) {
    std::vector<double> y(x.size());
    for (size_t r = 0; r < x.size() / D; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < D; ++i) ss += x[r * D + i] * x[r * D + i];
      const double inv = 1.0 / std::sqrt(ss / D + c.rms_norm_eps);
      for (int64_t i = 0; i < D; ++i) y[r * D + i] = w[i] * x[r * D + i] * inv;
    }
    return y;
  };
  auto rope = [&](std::vector<double>& x, int64_t heads) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < heads; ++h) {
          double* v = &x[((b * T + t) * heads + h) * hd];
          for (int64_t i = 0; i < hd / 2; ++i) {
            const double a = t * std::pow(c.rope_theta, -2.0 * i / hd);
            const double x0 = v[i], x1 = v[i + hd / 2];
            v[i] = x0 * std::cos(a) - x1 * std::sin(a);
            v[i + hd / 2] = x1 * std::cos(a) + x0 * std::sin(a);
          }
        }
  };
  const int64_t rows = B * T;
  std::vector<double> x(rows * D);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < D; ++j) x[i * D + j] = W("model.embed_tokens.weight")[in[i] * D + j];
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    auto h = rms(x, W(pre + "input_layernorm.weight"));
    auto q = linear(h, rows, D, W(pre + "self_attn.q_proj.weight"), H * hd);
    auto k = linear(h, rows, D, W(pre + "self_attn.k_proj.weight"), KV * hd);
    auto v = linear(h, rows, D, W(pre + "self_attn.v_proj.weight"), KV * hd);
    rope(q, H);
    rope(k, KV);
    std::vector<double> att(rows * H * hd, 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t hh = 0; hh < H; ++hh)
        for (int64_t t = 0; t < T; ++t) {
          std::vector<double> s(t + 1);
          double mx = -1e300, sum = 0;
          for (int64_t u = 0; u <= t; ++u) {
            double d = 0;
            for (int64_t i = 0; i < hd; ++i)
              d += q[((b * T + t) * H + hh) * hd + i] * k[((b * T + u) * KV + hh / rep) * hd + i];
            s[u] = d / std::sqrt(static_cast<double>(hd));
            mx = std::max(mx, s[u]);
          }
          for (auto& e : s) sum += (e = std::exp(e - mx));
          for (int64_t u = 0; u <= t; ++u)
            for (int64_t i = 0; i < hd; ++i)
              att[((b * T + t) * H + hh) * hd + i] += s[u] / sum * v[((b * T + u) * KV + hh / rep) * hd + i];
        }
    auto o = linear(att, rows, H * hd, W(pre + "self_attn.o_proj.weight"), D);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    h = rms(x, W(pre + "post_attention_layernorm.weight"));
    auto g = linear(h, rows, D, W(pre + "mlp.gate_proj.weight"), F);
    auto u = linear(h, rows, D, W(pre + "mlp.up_proj.weight"), F);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    auto m = linear(g, rows, F, W(pre + "mlp.down_proj.weight"), D);
    for (size_t i = 0; i < x.size(); ++i) x[i] += m[i];
  }
  auto h = rms(x, W("model.norm.weight"));
  auto logits = linear(h, rows, D, W(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"), V);
  double loss = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < rows; ++i) {
    if (tg[i] < 0) continue;
    double mx = -1e300, sum = 0;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, logits[i * V + j]);
    for (int64_t j = 0; j < V; ++j) sum += std::exp(logits[i * V + j] - mx);
    loss += std::log(sum) + mx - logits[i * V + tg[i]];
    ++n;
  }
  return loss / n;
}

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
  const int64_t B = 2, T = 5;
  Rng rng(3);
  std::vector<int32_t> in(B * T), tg(B * T);
  for (auto& v : in) v = static_cast<int32_t>(rng.next() % c.vocab_size);
  for (auto& v : tg) v = static_cast<int32_t>(rng.next() % c.vocab_size);
  tg[3] = -1;  // ignored positions
  tg[7] = -1;
  m->zero_grads();
  auto loss = m->train_batch(in.data(), tg.data(), B, T, 1.0f);
  Params p;
  for (const auto& [name, t] : m->named_tensors()) p[name] = std::vector<double>(t.f32(), t.f32() + t.numel());
  const double ref = reference_loss(c, p, in, tg, B, T);
  EXPECT_NEAR(loss.sum / loss.count, ref, 1e-5);
  EXPECT_EQ(loss.count, B * T - 2);

  for (const auto& [name, g] : m->named_grads()) {
    std::vector<double>& w = p[name];
    // A few entries of every tensor, including the largest gradient.
    std::vector<int64_t> idx = {0, g.numel() / 2, g.numel() - 1};
    idx.push_back(std::max_element(g.f32(), g.f32() + g.numel(), [](float a, float b) {
                    return std::fabs(a) < std::fabs(b);
                  }) - g.f32());
    for (int64_t i : idx) {
      const double eps = 1e-5, saved = w[i];
      w[i] = saved + eps;
      const double up = reference_loss(c, p, in, tg, B, T);
      w[i] = saved - eps;
      const double down = reference_loss(c, p, in, tg, B, T);
      w[i] = saved;
      const double fd = (up - down) / (2 * eps);
      EXPECT_NEAR(g.f32()[i], fd, 2e-4 + 2e-3 * std::fabs(fd)) << name << "[" << i << "]";
    }
  }
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
