// Scalar references of the state-space kernels (kernels/ssm.h): one channel
// at a time, the arithmetic of the formulas in the order they are written.
#include <algorithm>
#include <cmath>

#include "kernels/ssm.h"

namespace strata::kernels {

void scan_forward_scalar(const ScanArgs& a) {
  for (int64_t e = 0; e < a.n; ++e)
    for (int64_t t = 0; t < a.T; ++t) {
      const float dt = a.delta[t * a.ld_delta + e], u = a.u[t * a.ld_u + e];
      const float du = dt * u;
      float y = a.D[e] * u;
      for (int64_t s = 0; s < a.N; ++s) {
        float& h = a.h[s * a.ld_h + e];
        h = std::exp(dt * a.A[s * a.ld_a + e]) * h + du * a.B[t * a.ld_bc + s];
        y += h * a.C[t * a.ld_bc + s];
      }
      a.y[t * a.ld_y + e] = y;
    }
}

// With G_t = dL/dh_t (the carry from t+1 plus dy_t C_t) and a_t = exp(delta_t A):
//   dC_t += dy_t h_t,  dB_t += G_t delta_t u_t,  du_t = D dy_t + sum_s G_t delta_t B_t,
//   ddelta_t = sum_s G_t (A a_t h_{t-1} + B_t u_t),  dA += G_t delta_t a_t h_{t-1},
//   dD += dy_t u_t,  carry to t-1: a_t G_t.
void scan_backward_scalar(const ScanGradArgs& g) {
  const ScanArgs& a = g.f;
  const int64_t T = a.T, N = a.N;
  float* hs = g.work;  // hs[t * N + s]: the state after step t
  for (int64_t e = 0; e < a.n; ++e) {
    for (int64_t t = 0; t < T; ++t) {
      const float dt = a.delta[t * a.ld_delta + e], du = dt * a.u[t * a.ld_u + e];
      for (int64_t s = 0; s < N; ++s) {
        const float prev = t > 0 ? hs[(t - 1) * N + s] : a.h[s * a.ld_h + e];
        hs[t * N + s] = std::exp(dt * a.A[s * a.ld_a + e]) * prev + du * a.B[t * a.ld_bc + s];
      }
    }
    for (int64_t t = T - 1; t >= 0; --t) {
      const float dt = a.delta[t * a.ld_delta + e], u = a.u[t * a.ld_u + e], dy = g.dy[t * g.ld_dy + e];
      float ddt = 0.0f, du = a.D[e] * dy;
      g.dD[e] += dy * u;
      for (int64_t s = 0; s < N; ++s) {
        const float As = a.A[s * a.ld_a + e], Bs = a.B[t * a.ld_bc + s], Cs = a.C[t * a.ld_bc + s];
        const float h = hs[t * N + s];
        const float prev = t > 0 ? hs[(t - 1) * N + s] : a.h[s * a.ld_h + e];
        float& carry = g.g[s * g.ld_g + e];
        const float G = carry + dy * Cs;
        const float at = std::exp(dt * As);
        g.dC[t * g.ld_dbc + s] += dy * h;
        g.dB[t * g.ld_dbc + s] += G * dt * u;
        du += G * dt * Bs;
        ddt += G * (As * at * prev + Bs * u);
        g.dA[s * g.ld_dA + e] += G * dt * at * prev;
        carry = at * G;
      }
      g.du[t * g.ld_du + e] = du;
      g.ddelta[t * g.ld_ddelta + e] = ddt;
    }
  }
}

void dwconv_row_scalar(const float* const* in, const float* w, int64_t ldw, const float* bias, int64_t k, int64_t n,
                       float* y, bool silu) {
  for (int64_t c = 0; c < n; ++c) {
    float v = bias[c];
    for (int64_t j = 0; j < k; ++j) v += w[j * ldw + c] * in[j][c];
    y[c] = silu ? v / (1.0f + std::exp(-v)) : v;
  }
}

void softplus_bias_scalar(float* x, const float* bias, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] + bias[i];
    x[i] = std::max(v, 0.0f) + std::log1p(std::exp(-std::fabs(v)));
  }
}

void mul_exp_scalar(const float* x, const float* a, const float* b, float s, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = s * x[i] * std::exp(b ? a[i] - b[i] : a[i]);
}

}  // namespace strata::kernels
