// A double-precision Mamba layer written straight from the formulas
// (docs/samba.md): the oracle of the Mamba tests.
#pragma once
#include <cmath>
#include <string>

#include "model/ctx_reference.h"

namespace strata::test {

struct MambaShape {
  int64_t d = 0, E = 0, N = 0, K = 0, R = 0;
  bool conv_bias = true;
};

// Output rows [rows, d] of the layer for packed sequences of `lens` (each from
// an empty state); `final_h`, if given, receives each sequence's last scan
// state [E, N] (element-major as the checkpoint's A_log).
inline Rows ref_mamba(const MambaShape& m, const DoubleParams& p, const std::string& prefix, const Rows& x,
                      const Lens& lens, std::vector<Rows>* final_h = nullptr) {
  const int64_t d = m.d, E = m.E, N = m.N, K = m.K, R = m.R, XW = R + 2 * N;
  auto P = [&](const char* name) -> const std::vector<double>& { return p.at(prefix + "." + name); };
  int64_t rows = 0;
  for (int64_t l : lens) rows += l;
  const Rows xz = ref_linear(x, d, P("in_proj.weight"), 2 * E);
  Rows u(static_cast<size_t>(rows * E));
  const std::vector<double>& cw = P("conv1d.weight");
  int64_t row0 = 0;
  for (int64_t len : lens) {
    for (int64_t t = 0; t < len; ++t)
      for (int64_t e = 0; e < E; ++e) {
        double c = m.conv_bias ? P("conv1d.bias")[e] : 0.0;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t src = t - (K - 1) + j;
          if (src >= 0) c += cw[e * K + j] * xz[(row0 + src) * 2 * E + e];
        }
        u[(row0 + t) * E + e] = c / (1 + std::exp(-c));
      }
    row0 += len;
  }
  const Rows xdbl = ref_linear(u, E, P("x_proj.weight"), XW);
  Rows dlow(static_cast<size_t>(rows * R));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < R; ++i) dlow[r * R + i] = xdbl[r * XW + i];
  Rows delta = ref_linear(dlow, R, P("dt_proj.weight"), E);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t e = 0; e < E; ++e) {
      const double v = delta[r * E + e] + P("dt_proj.bias")[e];
      delta[r * E + e] = v > 20 ? v : std::log1p(std::exp(v));
    }
  Rows gated(static_cast<size_t>(rows * E));
  row0 = 0;
  if (final_h) final_h->clear();
  for (int64_t len : lens) {
    Rows h(static_cast<size_t>(E * N), 0.0);
    for (int64_t t = 0; t < len; ++t) {
      const int64_t r = row0 + t;
      for (int64_t e = 0; e < E; ++e) {
        const double dt = delta[r * E + e], ue = u[r * E + e];
        double y = P("D")[e] * ue;
        for (int64_t s = 0; s < N; ++s) {
          const double A = -std::exp(P("A_log")[e * N + s]);
          double& hs = h[e * N + s];
          hs = std::exp(dt * A) * hs + dt * xdbl[r * XW + R + s] * ue;
          y += hs * xdbl[r * XW + R + N + s];
        }
        const double z = xz[r * 2 * E + E + e];
        gated[r * E + e] = y * z / (1 + std::exp(-z));
      }
    }
    if (final_h) final_h->push_back(h);
    row0 += len;
  }
  return ref_linear(gated, E, P("out_proj.weight"), d);
}

}  // namespace strata::test
