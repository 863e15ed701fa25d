// Plain double-precision forward and mean cross-entropy of a whole model
// (HF semantics), for gradient checks by finite differences: the `llama`
// recipe, and the `modified` recipe with standard attention (AdaRMSNorm
// norms, token mixing after attention, SE after the MLP).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/ctx_reference.h"
#include "strata/config.h"
#include "strata/model.h"

namespace strata::test {

inline double reference_loss_rows(const Config& c, const DoubleParams& p, Rows x, const std::vector<int32_t>& tg,
                                  int64_t B, int64_t T);

// `c` shrunk to the sizes the finite-difference checks run at (vocab 40,
// width 16, 4 heads over 2 KV heads of 4), with larger initial weights.
inline Config reference_shape(Config c) {
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.initializer_range = 0.3;
  return c;
}

// The mean loss of B sequences of T token ids.
inline double reference_loss(const Config& c, const DoubleParams& p, const std::vector<int32_t>& in,
                             const std::vector<int32_t>& tg, int64_t B, int64_t T) {
  const int64_t D = c.hidden_size;
  Rows x(static_cast<size_t>(B * T * D));
  const std::vector<double>& e = p.at("model.embed_tokens.weight");
  for (int64_t i = 0; i < B * T; ++i)
    for (int64_t j = 0; j < D; ++j) x[i * D + j] = e[in[i] * D + j];
  return reference_loss_rows(c, p, std::move(x), tg, B, T);
}

// The same from the input rows (token embeddings or any rows given), [B*T, hidden].
inline double reference_loss_rows(const Config& c, const DoubleParams& p, Rows x, const std::vector<int32_t>& tg,
                                  int64_t B, int64_t T) {
  const int64_t D = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads, hd = c.head_dim,
                F = c.intermediate_size, V = c.vocab_size, rep = H / KV;
  const bool modified = c.recipe == "modified";
  const CtxConfig ctx = modified ? CtxConfig::of(c) : CtxConfig();
  const Lens lens(static_cast<size_t>(B), T);
  auto W = [&](const std::string& n) -> const std::vector<double>& { return p.at(n); };
  auto rms = [&](const Rows& x, const std::vector<double>& w) {
    Rows y(x.size());
    for (size_t r = 0; r < x.size() / D; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < D; ++i) ss += x[r * D + i] * x[r * D + i];
      const double inv = 1.0 / std::sqrt(ss / D + c.rms_norm_eps);
      for (int64_t i = 0; i < D; ++i) y[r * D + i] = w[i] * x[r * D + i] * inv;
    }
    return y;
  };
  auto norm = [&](const Rows& x, const std::string& prefix) {
    return modified ? ref_ada_rmsnorm(ctx, p, prefix, x, lens) : rms(x, W(prefix + ".weight"));
  };
  auto rope = [&](Rows& x, int64_t heads) {
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
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    auto h = norm(x, pre + "input_layernorm");
    auto q = ref_linear(h, D, W(pre + "self_attn.q_proj.weight"), H * hd);
    auto k = ref_linear(h, D, W(pre + "self_attn.k_proj.weight"), KV * hd);
    auto v = ref_linear(h, D, W(pre + "self_attn.v_proj.weight"), KV * hd);
    rope(q, H);
    rope(k, KV);
    Rows att(rows * H * hd, 0.0);
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
    auto o = ref_linear(att, H * hd, W(pre + "self_attn.o_proj.weight"), D);
    if (modified) o = ref_token_mix(ctx, p, pre + "token_mixing", o, lens);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    h = norm(x, pre + "post_attention_layernorm");
    auto g = ref_linear(h, D, W(pre + "mlp.gate_proj.weight"), F);
    auto u = ref_linear(h, D, W(pre + "mlp.up_proj.weight"), F);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    auto m = ref_linear(g, F, W(pre + "mlp.down_proj.weight"), D);
    if (modified) m = ref_se(ctx, p, pre + "se", m, lens);
    for (size_t i = 0; i < x.size(); ++i) x[i] += m[i];
  }
  auto h = rms(x, W("model.norm.weight"));
  auto logits = ref_linear(h, D, W(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"), V);
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

// One train_batch on random [B, T] ids (two targets ignored) with F32
// weights: the loss equals the reference's, and a few entries of every
// gradient (including each tensor's largest) match central differences of it.
inline void expect_train_gradients_match_reference(const Config& c, Model& m, int64_t B, int64_t T, uint64_t seed) {
  m.enable_training();
  Rng rng(seed);
  std::vector<int32_t> in(B * T), tg(B * T);
  for (auto& v : in) v = static_cast<int32_t>(rng.next() % c.vocab_size);
  for (auto& v : tg) v = static_cast<int32_t>(rng.next() % c.vocab_size);
  tg[3] = -1;  // ignored positions
  tg[7] = -1;
  m.zero_grads();
  auto loss = m.train_batch(in.data(), tg.data(), B, T, 1.0f);
  DoubleParams p;
  for (const auto& [name, t] : m.named_tensors()) p[name] = std::vector<double>(t.f32(), t.f32() + t.numel());
  const double ref = reference_loss(c, p, in, tg, B, T);
  EXPECT_NEAR(loss.sum / loss.count, ref, 1e-5);
  EXPECT_EQ(loss.count, B * T - 2);

  for (const auto& [name, g] : m.named_grads()) {
    std::vector<double>& w = p[name];
    for (int64_t i = 0; i < g.numel(); ++i) ASSERT_TRUE(std::isfinite(g.f32()[i])) << name << "[" << i << "]";
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

}  // namespace strata::test
