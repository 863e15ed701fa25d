// Plain double-precision references of the context modules (spec §3.1-3.4),
// written from the formulas and independent of the engine's code. Inputs are
// packed rows [sum(lens), D]; parameters by full name.
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/recipes.h"
#include "strata/config.h"

namespace strata::test {

// The shape of the context-module tests and the context modules' options
// (named as the modified recipe names them).
struct CtxConfig : Config {
  int64_t ada_rank = 4, tm_kernel = 3, se_reduction = 4;
  std::string ctx_mode = "causal";
  int64_t window = 0;  // attention's
  std::map<std::string, nlohmann::json> extra;  // options of other kinds (e.g. mamba's)
  // The options of module `kind` (empty for kinds without context options).
  nlohmann::json options(const std::string& kind) const {
    if (auto it = extra.find(kind); it != extra.end()) return it->second;
    if (kind == "ada-rmsnorm") return {{"rank", ada_rank}, {"ctx_mode", ctx_mode}};
    if (kind == "token-mix") return {{"kernel", tm_kernel}};
    if (kind == "se") return {{"reduction", se_reduction}, {"ctx_mode", ctx_mode}};
    if (kind == "attention") return {{"window", window}};
    return nlohmann::json::object();
  }
  // The context options of a model built from the modified recipe.
  static CtxConfig of(const Config& c) {
    CtxConfig r;
    static_cast<Config&>(r) = c;
    const ModifiedRecipe m = modified_recipe_of(c);
    r.ada_rank = m.ada_rank;
    r.tm_kernel = m.tm_kernel;
    r.se_reduction = m.se_reduction;
    r.ctx_mode = m.ctx_mode;
    return r;
  }
};

using DoubleParams = std::map<std::string, std::vector<double>>;
using Lens = std::vector<int64_t>;
using Rows = std::vector<double>;

// y[rows, N] = x[rows, K] · w[N, K]ᵀ
inline Rows ref_linear(const Rows& x, int64_t K, const std::vector<double>& w, int64_t N) {
  const int64_t rows = static_cast<int64_t>(x.size()) / K;
  Rows y(static_cast<size_t>(rows * N), 0.0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) y[i * N + j] += x[i * K + k] * w[j * K + k];
  return y;
}

// rotate_half RoPE in place on `heads` heads of head_dim per row, row r at position pos[r].
inline void ref_rope(Rows& x, int64_t heads, int64_t head_dim, const std::vector<int64_t>& pos, double theta) {
  for (size_t r = 0; r < pos.size(); ++r)
    for (int64_t h = 0; h < heads; ++h) {
      double* s = &x[(r * heads + h) * head_dim];
      for (int64_t i = 0; i < head_dim / 2; ++i) {
        const double ang = pos[r] * std::pow(theta, -2.0 * i / head_dim);
        const double x0 = s[i], x1 = s[i + head_dim / 2];
        s[i] = x0 * std::cos(ang) - x1 * std::sin(ang);
        s[i + head_dim / 2] = x1 * std::cos(ang) + x0 * std::sin(ang);
      }
    }
}

// Per row: the causal prefix mean or the whole-sequence mean of z.
inline Rows ref_context_mean(const Rows& z, const Lens& lens, int64_t D, bool causal) {
  Rows c(z.size(), 0.0);
  int64_t row0 = 0;
  for (int64_t len : lens) {
    for (int64_t t = 0; t < len; ++t)
      for (int64_t i = 0; i < D; ++i) {
        const int64_t last = causal ? t : len - 1;
        double s = 0;
        for (int64_t u = 0; u <= last; ++u) s += z[(row0 + u) * D + i];
        c[(row0 + t) * D + i] = s / static_cast<double>(last + 1);
      }
    row0 += len;
  }
  return c;
}

inline Rows ref_ada_rmsnorm(const CtxConfig& cfg, const DoubleParams& p, const std::string& prefix, const Rows& x,
                            const Lens& lens) {
  const int64_t D = cfg.hidden_size, r = cfg.ada_rank, rows = static_cast<int64_t>(x.size()) / D;
  Rows xhat(x.size());
  for (int64_t t = 0; t < rows; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += x[t * D + i] * x[t * D + i];
    const double inv = 1.0 / std::sqrt(ss / D + cfg.rms_norm_eps);
    for (int64_t i = 0; i < D; ++i) xhat[t * D + i] = x[t * D + i] * inv;
  }
  const std::vector<double>& w = p.at(prefix + ".weight");
  Rows y(x.size());
  Rows g(x.size(), 0.0);
  if (r > 0) {
    Rows a = ref_linear(ref_context_mean(xhat, lens, D, cfg.ctx_mode == "causal"), D, p.at(prefix + ".ctx_down.weight"), r);
    for (double& v : a) v = v / (1.0 + std::exp(-v));
    g = ref_linear(a, r, p.at(prefix + ".ctx_up.weight"), D);
  }
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t i = 0; i < D; ++i) y[t * D + i] = w[i] * xhat[t * D + i] * (1.0 + std::tanh(g[t * D + i]));
  return y;
}

// The explicit sum of spec §3.3 with u[τ < 0] = 0.
inline Rows ref_token_mix(const CtxConfig& cfg, const DoubleParams& p, const std::string& prefix, const Rows& x,
                          const Lens& lens) {
  const int64_t D = cfg.hidden_size, k = cfg.tm_kernel;
  const std::vector<double>& w = p.at(prefix + ".weight");
  const std::vector<double>& b = p.at(prefix + ".bias");
  Rows y(x.size());
  int64_t row0 = 0;
  for (int64_t len : lens) {
    for (int64_t t = 0; t < len; ++t)
      for (int64_t c = 0; c < D; ++c) {
        double acc = b[c];
        for (int64_t j = 0; j < k; ++j) {
          const int64_t src = t - (k - 1) + j;
          if (src >= 0) acc += w[c * k + j] * x[(row0 + src) * D + c];
        }
        y[(row0 + t) * D + c] = acc;
      }
    row0 += len;
  }
  return y;
}

inline Rows ref_se(const CtxConfig& cfg, const DoubleParams& p, const std::string& prefix, const Rows& x,
                   const Lens& lens) {
  const int64_t D = cfg.hidden_size, H = D / cfg.se_reduction;
  Rows h = ref_linear(ref_context_mean(x, lens, D, cfg.ctx_mode == "causal"), D, p.at(prefix + ".fc1.weight"), H);
  const std::vector<double>& b1 = p.at(prefix + ".fc1.bias");
  for (size_t i = 0; i < h.size(); ++i) h[i] = std::max(0.0, h[i] + b1[i % H]);
  Rows z = ref_linear(h, H, p.at(prefix + ".fc2.weight"), D);
  const std::vector<double>& b2 = p.at(prefix + ".fc2.bias");
  Rows y(x.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = x[i] * 2.0 / (1.0 + std::exp(-(z[i] + b2[i % D])));
  return y;
}

}  // namespace strata::test
