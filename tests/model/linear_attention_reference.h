// Double-precision references of gated linear attention (GLA, RetNet): the
// recurrence, the quadratic parallel form (from differences of cumulative log
// gates), and whole GLA / RetNet layers from named parameters, for the tests
// of kernels/linear_attention.h and the two mixers.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "model/ctx_reference.h"

namespace strata::test {

// One head of one sequence, rows [T, dk] / [T, dv] contiguous. g: log gates
// [T, dk], or [T] when scalar.
struct RefHead {
  int64_t T = 0, dk = 0, dv = 0;
  std::vector<double> q, k, v, g;
  bool scalar = false;
  double scale = 1.0;
  double gate(int64_t t, int64_t a) const { return scalar ? g[t] : g[t * dk + a]; }
};

// The recurrence S_t = diag(e^{g_t}) S_{t-1} + k_tᵀ v_t, o_t = scale q_t S_t;
// S [dk, dv] in/out. Returns o [T, dv].
inline std::vector<double> ref_linattn_recurrent(const RefHead& h, std::vector<double>& S) {
  std::vector<double> o(static_cast<size_t>(h.T * h.dv), 0.0);
  for (int64_t t = 0; t < h.T; ++t)
    for (int64_t a = 0; a < h.dk; ++a) {
      const double f = std::exp(h.gate(t, a));
      for (int64_t c = 0; c < h.dv; ++c) {
        double& s = S[a * h.dv + c];
        s = f * s + h.k[t * h.dk + a] * h.v[t * h.dv + c];
        o[t * h.dv + c] += h.scale * h.q[t * h.dk + a] * s;
      }
    }
  return o;
}

// o_t = scale Σ_{s<=t} (Σ_a q_ta k_sa e^{b_ta - b_sa}) v_s + scale (q_t ⊙ e^{b_t}) S0,
// b the cumulative log gate from step 0.
inline std::vector<double> ref_linattn_parallel(const RefHead& h, const std::vector<double>& S0) {
  std::vector<double> b(static_cast<size_t>(h.T * h.dk));
  for (int64_t t = 0; t < h.T; ++t)
    for (int64_t a = 0; a < h.dk; ++a) b[t * h.dk + a] = (t > 0 ? b[(t - 1) * h.dk + a] : 0.0) + h.gate(t, a);
  std::vector<double> o(static_cast<size_t>(h.T * h.dv), 0.0);
  for (int64_t t = 0; t < h.T; ++t) {
    for (int64_t s = 0; s <= t; ++s) {
      double score = 0;
      for (int64_t a = 0; a < h.dk; ++a)
        score += h.q[t * h.dk + a] * h.k[s * h.dk + a] * std::exp(b[t * h.dk + a] - b[s * h.dk + a]);
      for (int64_t c = 0; c < h.dv; ++c) o[t * h.dv + c] += h.scale * score * h.v[s * h.dv + c];
    }
    for (int64_t a = 0; a < h.dk; ++a)
      for (int64_t c = 0; c < h.dv; ++c)
        o[t * h.dv + c] += h.scale * h.q[t * h.dk + a] * std::exp(b[t * h.dk + a]) * S0[a * h.dv + c];
  }
  return o;
}

struct RefLinAttnLayer {
  bool retnet = false;
  int64_t d = 0, H = 0, Kd = 0, Vd = 0, rank = 16;
  double tau = 16, eps = 1e-5, theta = 10000;
};

inline std::vector<double> ref_linear(const std::vector<double>& x, int64_t rows, int64_t in, const std::vector<double>& w,
                                      int64_t out) {
  std::vector<double> y(static_cast<size_t>(rows * out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}

// NeoX half-split RoPE of every head (width dk) of rows [T, H*dk], row t at position t.
inline void ref_rope(std::vector<double>& x, int64_t T, int64_t H, int64_t dk, double theta) {
  const int64_t half = dk / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < half; ++i) {
        // The engine's table computes the angle in float; do the same so
        // positions far along agree to double precision otherwise.
        const float freq = 1.0f / std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(dk));
        const double ang = static_cast<double>(static_cast<float>(t) * freq);
        double* p = &x[(t * H + h) * dk];
        const double a = p[i], b = p[i + half];
        p[i] = a * std::cos(ang) - b * std::sin(ang);
        p[i + half] = b * std::cos(ang) + a * std::sin(ang);
      }
}

// A whole GLA or RetNet layer (parameters under `prefix`), each sequence from
// a zero state at position 0, in the recurrent form.
inline Rows ref_linattn_layer(const RefLinAttnLayer& L, const DoubleParams& p, const std::string& prefix, const Rows& x,
                              const Lens& lens) {
  auto P = [&](const std::string& n) -> const std::vector<double>& { return p.at(prefix + "." + n); };
  const int64_t d = L.d, H = L.H, dk = L.Kd / H, dv = L.Vd / H;
  Rows y;
  int64_t row0 = 0;
  for (int64_t T : lens) {
    std::vector<double> xs(x.begin() + row0 * d, x.begin() + (row0 + T) * d);
    row0 += T;
    std::vector<double> q = ref_linear(xs, T, d, P("q_proj.weight"), L.Kd), k = ref_linear(xs, T, d, P("k_proj.weight"), L.Kd);
    const std::vector<double> v = ref_linear(xs, T, d, P("v_proj.weight"), L.Vd);
    const std::vector<double> gate = ref_linear(xs, T, d, P("g_proj.weight"), L.Vd);
    std::vector<double> logg;
    if (L.retnet) {
      ref_rope(q, T, H, dk, L.theta);
      ref_rope(k, T, H, dk, L.theta);
    } else {
      const std::vector<double> low = ref_linear(xs, T, d, P("gk_proj.0.weight"), L.rank);
      logg = ref_linear(low, T, L.rank, P("gk_proj.1.weight"), L.Kd);
      for (int64_t i = 0; i < T * L.Kd; ++i) {
        const double z = logg[i] + P("gk_proj.1.bias")[i % L.Kd];
        logg[i] = (std::min(z, 0.0) - std::log1p(std::exp(-std::fabs(z)))) / L.tau;
      }
    }
    std::vector<double> gated(static_cast<size_t>(T * L.Vd));
    for (int64_t h = 0; h < H; ++h) {
      RefHead rh;
      rh.T = T, rh.dk = dk, rh.dv = dv, rh.scale = 1.0 / std::sqrt(static_cast<double>(dk)), rh.scalar = L.retnet;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t a = 0; a < dk; ++a) {
          rh.q.push_back(q[t * L.Kd + h * dk + a]);
          rh.k.push_back(k[t * L.Kd + h * dk + a]);
          if (!L.retnet) rh.g.push_back(logg[t * L.Kd + h * dk + a]);
        }
        for (int64_t c = 0; c < dv; ++c) rh.v.push_back(v[t * L.Vd + h * dv + c]);
        if (L.retnet) rh.g.push_back(std::log(1.0 - std::pow(2.0, -5.0 - static_cast<double>(h))));
      }
      std::vector<double> S(static_cast<size_t>(dk * dv), 0.0);
      const std::vector<double> o = ref_linattn_recurrent(rh, S);
      const std::vector<double>& w = P("g_norm_swish_gate.weight");
      for (int64_t t = 0; t < T; ++t) {
        double ms = 0;
        for (int64_t c = 0; c < dv; ++c) ms += o[t * dv + c] * o[t * dv + c];
        const double r = 1.0 / std::sqrt(ms / static_cast<double>(dv) + L.eps);
        for (int64_t c = 0; c < dv; ++c) {
          const double gg = gate[t * L.Vd + h * dv + c];
          gated[t * L.Vd + h * dv + c] = o[t * dv + c] * r * w[c] * gg / (1.0 + std::exp(-gg));
        }
      }
    }
    const std::vector<double> out = ref_linear(gated, T, L.Vd, P("o_proj.weight"), d);
    y.insert(y.end(), out.begin(), out.end());
  }
  return y;
}

}  // namespace strata::test
