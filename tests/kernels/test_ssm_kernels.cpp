// The state-space kernels on every ISA: the selective scan against double
// references of its three forms (sequential recurrence, chunked closed form,
// quadratic closed form), chunked calls against one call, the backward
// against central finite differences of the double scan, and the conv row
// and softplus against the scalar references.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/cpu.h"
#include "core/rng.h"
#include "kernels/kernels.h"

namespace strata {
namespace {

using kernels::ScanArgs;
using kernels::ScanGradArgs;

// One scan problem: T steps, n channels, N states, rows packed with strides
// wider than n so strided access is exercised.
struct ScanCase {
  int64_t T, n, N, ld;
  std::vector<float> u, delta, bc, A, D, h0;
  ScanCase(int64_t T_, int64_t n_, int64_t N_, uint64_t seed) : T(T_), n(n_), N(N_), ld(n_ + 3) {
    Rng r(seed);
    auto fill = [&](std::vector<float>& v, size_t count, double lo, double hi) {
      v.resize(count);
      for (float& x : v) x = static_cast<float>(lo + (hi - lo) * r.uniform_double());
    };
    fill(u, T * ld, -1.5, 1.5);
    fill(delta, T * ld, 0.001, 0.6);
    fill(bc, T * (2 * N + 1), -1.0, 1.0);
    fill(A, N * ld, -3.0, -0.05);
    fill(D, n, 0.5, 1.5);
    fill(h0, N * ld, -0.5, 0.5);
  }
  ScanArgs args(float* h, float* y) const {
    ScanArgs a;
    a.T = T, a.n = n, a.N = N;
    a.u = u.data(), a.ld_u = ld;
    a.delta = delta.data(), a.ld_delta = ld;
    a.B = bc.data() + 1, a.C = bc.data() + 1 + N, a.ld_bc = 2 * N + 1;
    a.A = A.data(), a.ld_a = ld;
    a.D = D.data();
    a.h = h, a.ld_h = ld;
    a.y = y, a.ld_y = ld;
    return a;
  }
  double Bv(int64_t t, int64_t s) const { return bc[t * (2 * N + 1) + 1 + s]; }
  double Cv(int64_t t, int64_t s) const { return bc[t * (2 * N + 1) + 1 + N + s]; }
};

// y[t][e] in double by the sequential recurrence; h_out receives the final state.
std::vector<double> scan_sequential(const ScanCase& c, std::vector<double>* h_out = nullptr,
                                    const std::vector<double>* delta_override = nullptr) {
  std::vector<double> y(c.T * c.n), h(c.N * c.n);
  for (int64_t s = 0; s < c.N; ++s)
    for (int64_t e = 0; e < c.n; ++e) h[s * c.n + e] = c.h0[s * c.ld + e];
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t e = 0; e < c.n; ++e) {
      const double dt = delta_override ? (*delta_override)[t * c.n + e] : c.delta[t * c.ld + e];
      const double u = c.u[t * c.ld + e];
      double acc = c.D[e] * u;
      for (int64_t s = 0; s < c.N; ++s) {
        double& hs = h[s * c.n + e];
        hs = std::exp(dt * c.A[s * c.ld + e]) * hs + dt * c.Bv(t, s) * u;
        acc += hs * c.Cv(t, s);
      }
      y[t * c.n + e] = acc;
    }
  if (h_out) *h_out = h;
  return y;
}

// The chunked closed form (spec §2.3): inside a chunk from t0,
// h_t = exp(A Σ_{r=t0..t} Δ_r) h_{t0-1} + ĥ_t, ĥ the chunk's scan from zero.
std::vector<double> scan_chunked_form(const ScanCase& c, int64_t C) {
  std::vector<double> y(c.T * c.n);
  for (int64_t e = 0; e < c.n; ++e)
    for (int64_t s = 0; s < c.N; ++s) {
      const double A = c.A[s * c.ld + e];
      double carry = c.h0[s * c.ld + e];
      for (int64_t t0 = 0; t0 < c.T; t0 += C) {
        double cum = 0, hat = 0, last = carry;
        for (int64_t t = t0; t < std::min(c.T, t0 + C); ++t) {
          const double dt = c.delta[t * c.ld + e];
          cum += dt;
          hat = std::exp(dt * A) * hat + dt * c.Bv(t, s) * c.u[t * c.ld + e];
          last = std::exp(A * cum) * carry + hat;
          y[t * c.n + e] += last * c.Cv(t, s);
        }
        carry = last;
      }
    }
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t e = 0; e < c.n; ++e) y[t * c.n + e] += static_cast<double>(c.D[e]) * c.u[t * c.ld + e];
  return y;
}

// The quadratic closed form (spec §2.3), with the initial state's term.
std::vector<double> scan_quadratic(const ScanCase& c) {
  std::vector<double> y(c.T * c.n);
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t e = 0; e < c.n; ++e) {
      double acc = static_cast<double>(c.D[e]) * c.u[t * c.ld + e];
      for (int64_t s = 0; s < c.N; ++s) {
        const double A = c.A[s * c.ld + e];
        double sum_all = 0;
        for (int64_t r = 0; r <= t; ++r) sum_all += c.delta[r * c.ld + e];
        acc += c.Cv(t, s) * std::exp(A * sum_all) * c.h0[s * c.ld + e];
        for (int64_t j = 0; j <= t; ++j) {
          double sum = 0;
          for (int64_t r = j + 1; r <= t; ++r) sum += c.delta[r * c.ld + e];
          acc += c.Cv(t, s) * std::exp(A * sum) * c.delta[j * c.ld + e] * c.Bv(j, s) * c.u[j * c.ld + e];
        }
      }
      y[t * c.n + e] = acc;
    }
  return y;
}

std::vector<Isa> all_isas() { return {std::begin(kAllIsas), std::end(kAllIsas)}; }

class SsmKernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam()))
      GTEST_SKIP() << "skipped: this CPU has no " << isa_name(GetParam()) << " (its kernels are not tested here)";
  }
  const kernels::Table& kt() const { return kernels::table(GetParam()); }
};

// Channel counts around the vector widths (tails) and state sizes that take
// the fixed-size (16) and run-time paths.
struct Shape {
  int64_t T, n, N;
};
const Shape kShapes[] = {{1, 1, 1}, {5, 7, 4}, {13, 16, 16}, {9, 37, 16}, {11, 24, 3}, {6, 40, 33}};

TEST_P(SsmKernelTest, ScanMatchesSequentialChunkedAndQuadraticForms) {
  for (const Shape& sh : kShapes) {
    ScanCase c(sh.T, sh.n, sh.N, 100 + sh.n);
    std::vector<float> h = c.h0, y(c.T * c.ld, 0.0f);
    kt().scan_forward(c.args(h.data(), y.data()));
    std::vector<double> h_ref;
    const std::vector<double> seq = scan_sequential(c, &h_ref);
    const std::vector<double> quad = scan_quadratic(c);
    for (int64_t C : {int64_t{1}, int64_t{2}, int64_t{7}, c.T}) {
      const std::vector<double> chunked = scan_chunked_form(c, C);
      for (size_t i = 0; i < seq.size(); ++i)
        ASSERT_NEAR(chunked[i], seq[i], 1e-10 * (1 + std::fabs(seq[i]))) << "T " << c.T << " n " << c.n << " C " << C << " i " << i;
    }
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t e = 0; e < c.n; ++e) {
        const double want = seq[t * c.n + e];
        ASSERT_NEAR(quad[t * c.n + e], want, 1e-10 * (1 + std::fabs(want)));
        ASSERT_NEAR(y[t * c.ld + e], want, 2e-5 * (1 + std::fabs(want))) << "T " << c.T << " n " << c.n << " N " << c.N;
      }
    for (int64_t s = 0; s < c.N; ++s)
      for (int64_t e = 0; e < c.n; ++e)
        ASSERT_NEAR(h[s * c.ld + e], h_ref[s * c.n + e], 2e-5 * (1 + std::fabs(h_ref[s * c.n + e])));
  }
}

// Calls of C steps carrying the state give the bits of one call, for any C.
TEST_P(SsmKernelTest, ScanInChunksEqualsOneCallBitwise) {
  ScanCase c(23, 37, 16, 7);
  std::vector<float> h1 = c.h0, y1(c.T * c.ld, 0.0f);
  kt().scan_forward(c.args(h1.data(), y1.data()));
  for (int64_t C : {1, 2, 7, 23}) {
    std::vector<float> h = c.h0, y(c.T * c.ld, 0.0f);
    for (int64_t t0 = 0; t0 < c.T; t0 += C) {
      ScanArgs a = c.args(h.data(), y.data() + t0 * c.ld);
      a.T = std::min(C, c.T - t0);
      a.u += t0 * c.ld, a.delta += t0 * c.ld, a.B += t0 * a.ld_bc, a.C += t0 * a.ld_bc;
      kt().scan_forward(a);
    }
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], y1[i]) << "chunk " << C << " at " << i;
    for (size_t i = 0; i < h.size(); ++i) ASSERT_EQ(h[i], h1[i]) << "chunk " << C;
  }
}

// L = sum over t, e of w[t][e] y[t][e] + sum over s, e of v[s][e] h_T[s][e]:
// the backward's outputs against central differences of the double scan.
TEST_P(SsmKernelTest, ScanBackwardMatchesFiniteDifferences) {
  for (const Shape& sh : {Shape{6, 19, 16}, Shape{5, 9, 3}, Shape{1, 4, 2}}) {
    ScanCase c(sh.T, sh.n, sh.N, 300 + sh.n);
    Rng r(5);
    std::vector<float> w(c.T * c.ld), v(c.N * c.ld);
    for (float& x : w) x = static_cast<float>(r.normal());
    for (float& x : v) x = static_cast<float>(r.normal());
    auto loss = [&](const ScanCase& k) {
      std::vector<double> h;
      const std::vector<double> y = scan_sequential(k, &h);
      double L = 0;
      for (int64_t t = 0; t < k.T; ++t)
        for (int64_t e = 0; e < k.n; ++e) L += w[t * k.ld + e] * y[t * k.n + e];
      for (int64_t s = 0; s < k.N; ++s)
        for (int64_t e = 0; e < k.n; ++e) L += v[s * k.ld + e] * h[s * k.n + e];
      return L;
    };
    std::vector<float> du(c.T * c.ld), dd(c.T * c.ld), dA(c.N * c.ld, 0.0f), dD(c.n, 0.0f);
    std::vector<float> dbc(c.T * 2 * c.N, 0.0f), g = v, work(kernels::scan_backward_work(c.T, c.N));
    std::vector<float> h0 = c.h0;
    ScanGradArgs ga;
    ga.f = c.args(h0.data(), nullptr);
    ga.dy = w.data(), ga.ld_dy = c.ld;
    ga.g = g.data(), ga.ld_g = c.ld;
    ga.du = du.data(), ga.ld_du = c.ld;
    ga.ddelta = dd.data(), ga.ld_ddelta = c.ld;
    ga.dA = dA.data(), ga.ld_dA = c.ld;
    ga.dD = dD.data();
    ga.dB = dbc.data(), ga.dC = dbc.data() + c.N, ga.ld_dbc = 2 * c.N;
    ga.work = work.data();
    kt().scan_backward(ga);
    const double eps = 1e-3;
    auto fd = [&](std::vector<float> ScanCase::*field, size_t i) {
      ScanCase k = c;
      const float base = (c.*field)[i];
      const float hi = static_cast<float>(base + eps), lo = static_cast<float>(base - eps);
      (k.*field)[i] = hi;
      const double lp = loss(k);
      (k.*field)[i] = lo;
      return (lp - loss(k)) / (static_cast<double>(hi) - lo);
    };
    auto near = [](double got, double want, const char* what, int64_t i) {
      ASSERT_NEAR(got, want, 2e-3 * (1 + std::fabs(want))) << what << " " << i;
    };
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t e = 0; e < c.n; ++e) {
        near(du[t * c.ld + e], fd(&ScanCase::u, t * c.ld + e), "du", t * c.ld + e);
        near(dd[t * c.ld + e], fd(&ScanCase::delta, t * c.ld + e), "ddelta", t * c.ld + e);
      }
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t s = 0; s < c.N; ++s) {
        near(dbc[t * 2 * c.N + s], fd(&ScanCase::bc, t * (2 * c.N + 1) + 1 + s), "dB", t * c.N + s);
        near(dbc[t * 2 * c.N + c.N + s], fd(&ScanCase::bc, t * (2 * c.N + 1) + 1 + c.N + s), "dC", t * c.N + s);
      }
    for (int64_t s = 0; s < c.N; ++s)
      for (int64_t e = 0; e < c.n; ++e) {
        near(dA[s * c.ld + e], fd(&ScanCase::A, s * c.ld + e), "dA", s * c.ld + e);
        near(g[s * c.ld + e], fd(&ScanCase::h0, s * c.ld + e), "dh0", s * c.ld + e);
      }
    for (int64_t e = 0; e < c.n; ++e) near(dD[e], fd(&ScanCase::D, e), "dD", e);
  }
}

TEST_P(SsmKernelTest, ConvRowAndSoftplusMatchScalar) {
  const int64_t n = 37, k = 4;
  Rng r(9);
  std::vector<float> rows(k * n), w(k * (n + 5)), bias(n);
  for (float& x : rows) x = static_cast<float>(r.normal());
  for (float& x : w) x = static_cast<float>(r.normal());
  for (float& x : bias) x = static_cast<float>(r.normal());
  const float* in[4] = {&rows[0], &rows[n], &rows[2 * n], &rows[3 * n]};
  for (bool silu : {false, true}) {
    std::vector<float> a(n), b(n);
    kt().dwconv_row(in, w.data(), n + 5, bias.data(), k, n, a.data(), silu);
    kernels::dwconv_row_scalar(in, w.data(), n + 5, bias.data(), k, n, b.data(), silu);
    for (int64_t c = 0; c < n; ++c) ASSERT_NEAR(a[c], b[c], 1e-5 * (1 + std::fabs(b[c]))) << c;
  }
  std::vector<float> x(200), xb;
  for (size_t i = 0; i < x.size(); ++i) x[i] = -40.0f + 80.0f * static_cast<float>(i) / 199.0f;
  std::vector<float> zero(x.size(), 0.0f);
  xb = x;
  kt().softplus_bias(x.data(), zero.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = xb[i], want = v > 0 ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v));
    ASSERT_NEAR(x[i], want, 2e-6 * std::fabs(want) + 1e-30) << "softplus(" << v << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, SsmKernelTest, ::testing::ValuesIn(all_isas()),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

}  // namespace
}  // namespace strata
