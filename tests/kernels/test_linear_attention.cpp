// Gated linear attention core (kernels/linear_attention.h; spec invariants 3,
// 4, 12) on every ISA this CPU has: the chunked form == the recurrence == the
// parallel form for chunk sizes 1, 16, 64 and lengths not divisible by them,
// final states included; the decode step; extreme gates; RetNet's scalar gate
// == GLA with that gate on every channel; a zero gate == plain causal linear
// attention; sequences fed in rounds of whole chunks == one call, bit for bit;
// the backward against central differences (double); and the mul_exp kernel.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "kernels/kernels.h"
#include "kernels/linear_attention.h"
#include "model/linear_attention_reference.h"

namespace strata {
namespace {

using test::RefHead;

std::vector<Isa> all_isas() { return {std::begin(kAllIsas), std::end(kAllIsas)}; }

class LinAttnTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam()))
      GTEST_SKIP() << "skipped: this CPU has no " << isa_name(GetParam()) << " (its kernels are not tested here)";
  }
  Exec ex() const { return Exec(GetParam(), ops::Precision::F32, ops::GemmBackend::Own); }
};

// Random head: q, k, v ~ N(0, 1); gates logsigmoid(z)/16 with z ~ N(0, 3²)
// (GLA's range), or given by `gate`.
RefHead random_head(int64_t T, int64_t dk, int64_t dv, uint64_t seed, bool scalar = false, double gate_scale = 3.0) {
  Rng rng(seed);
  RefHead h;
  h.T = T, h.dk = dk, h.dv = dv, h.scalar = scalar, h.scale = 1.0 / std::sqrt(static_cast<double>(dk));
  auto fill = [&](std::vector<double>& v, int64_t n) {
    v.resize(static_cast<size_t>(n));
    for (double& x : v) x = static_cast<float>(rng.normal());  // values a float holds exactly
  };
  fill(h.q, T * dk);
  fill(h.k, T * dk);
  fill(h.v, T * dv);
  h.g.resize(static_cast<size_t>(scalar ? T : T * dk));
  for (double& x : h.g) {
    const double z = rng.normal() * gate_scale;
    x = static_cast<float>((std::min(z, 0.0) - std::log1p(std::exp(-std::fabs(z)))) / 16.0);
  }
  return h;
}

std::vector<float> f32(const std::vector<double>& v) { return {v.begin(), v.end()}; }

struct FloatHead {
  std::vector<float> q, k, v, g, o, S;
  ops::LinAttnHead args(const RefHead& h, int64_t chunk, int64_t pos = 0) {
    q = f32(h.q), k = f32(h.k), v = f32(h.v), g = f32(h.g);
    o.assign(static_cast<size_t>(h.T * h.dv), 0.0f);
    if (S.empty()) S.assign(static_cast<size_t>(h.dk * h.dv), 0.0f);
    ops::LinAttnHead a;
    a.T = h.T, a.dk = h.dk, a.dv = h.dv;
    a.q = q.data(), a.ld_q = h.dk, a.k = k.data(), a.ld_k = h.dk, a.v = v.data(), a.ld_v = h.dv;
    a.g = g.data(), a.ld_g = h.scalar ? 1 : h.dk, a.scalar_gate = h.scalar;
    a.scale = static_cast<float>(h.scale);
    a.o = o.data(), a.ld_o = h.dv, a.S = S.data(), a.pos = pos, a.chunk = chunk;
    return a;
  }
};

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1.0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << what << " at " << i;
    ASSERT_NEAR(got[i], want[i], tol * scale) << what << " at " << i;
  }
}

TEST_P(LinAttnTest, ChunkedEqualsRecurrentAndParallel) {
  for (bool scalar : {false, true})
    for (int64_t T : {1, 7, 64, 100, 131})
      for (int64_t chunk : {1, 16, 64, 48}) {
        const RefHead h = random_head(T, 12, 20, 11 + T, scalar);
        std::vector<double> S0(12 * 20);
        Rng rng(5);
        for (double& s : S0) s = static_cast<float>(rng.normal() * 0.5);
        std::vector<double> S = S0;
        const std::vector<double> rec = test::ref_linattn_recurrent(h, S);
        const std::vector<double> par = test::ref_linattn_parallel(h, S0);
        for (size_t i = 0; i < rec.size(); ++i) ASSERT_NEAR(rec[i], par[i], 1e-9 * (1 + std::fabs(rec[i])));
        FloatHead fh;
        fh.S = f32(S0);
        const ops::LinAttnHead a = fh.args(h, chunk, 3);
        ops::linattn_forward(ex(), a, nullptr);
        const std::string what = (scalar ? "scalar gate" : "channel gates") + std::string(" T ") + std::to_string(T) +
                                 " chunk " + std::to_string(chunk);
        expect_close(fh.o, rec, 2e-5, what + " output");
        expect_close(fh.S, S, 2e-5, what + " final state");
      }
}

TEST_P(LinAttnTest, DecodeStepsEqualTheRecurrence) {
  for (bool scalar : {false, true}) {
    const RefHead h = random_head(9, 8, 16, 21, scalar);
    std::vector<double> S(8 * 16, 0.0);
    const std::vector<double> rec = test::ref_linattn_recurrent(h, S);
    FloatHead fh;
    ops::LinAttnHead a = fh.args(h, 64);
    std::vector<float> o(static_cast<size_t>(9 * 16));
    for (int64_t t = 0; t < 9; ++t) {
      ops::LinAttnHead s = a;
      s.T = 1, s.q += t * a.ld_q, s.k += t * a.ld_k, s.v += t * a.ld_v, s.g += t * a.ld_g, s.o = o.data() + t * 16;
      ops::linattn_step(kernels::table(GetParam()), s);
    }
    expect_close(o, rec, 1e-5, "steps");
    expect_close(fh.S, S, 1e-5, "state");
  }
}

// Gate logits of ±30 (log gates logsigmoid(±30)/16) and log gates of -8 per
// step: nothing overflows, the diagonal blocks fall back to pair-by-pair sums.
TEST_P(LinAttnTest, ExtremeGatesGiveNoNaN) {
  for (double g : {-30.0 / 16.0, -8.0, -1e-13, -60.0}) {
    RefHead h = random_head(70, 8, 8, 31);
    for (int64_t i = 0; i < static_cast<int64_t>(h.g.size()); ++i) h.g[i] = (i / 8 + i) % 3 == 0 ? -1e-13 : g;
    std::vector<double> S(64, 0.0);
    const std::vector<double> rec = test::ref_linattn_recurrent(h, S);
    FloatHead fh;
    ops::linattn_forward(ex(), fh.args(h, 64), nullptr);
    expect_close(fh.o, rec, 2e-5, "log gate " + std::to_string(g));
    expect_close(fh.S, S, 2e-5, "final state, log gate " + std::to_string(g));
  }
}

TEST_P(LinAttnTest, ScalarGateEqualsTheSameGateOnEveryChannel) {
  const RefHead s = random_head(77, 8, 12, 41, true);
  RefHead c = s;
  c.scalar = false;
  c.g.clear();
  for (int64_t t = 0; t < s.T; ++t) c.g.insert(c.g.end(), 8, s.g[t]);
  FloatHead a, b;
  ops::linattn_forward(ex(), a.args(s, 64), nullptr);
  ops::linattn_forward(ex(), b.args(c, 64), nullptr);
  for (size_t i = 0; i < a.o.size(); ++i) ASSERT_NEAR(a.o[i], b.o[i], 1e-5 * (1 + std::fabs(a.o[i])));
}

TEST_P(LinAttnTest, ZeroGateIsCausalLinearAttention) {
  RefHead h = random_head(40, 6, 5, 51);
  std::fill(h.g.begin(), h.g.end(), 0.0);
  std::vector<double> want(40 * 5, 0.0);
  for (int64_t t = 0; t < 40; ++t)
    for (int64_t s = 0; s <= t; ++s) {
      double qk = 0;
      for (int64_t a = 0; a < 6; ++a) qk += h.q[t * 6 + a] * h.k[s * 6 + a];
      for (int64_t c = 0; c < 5; ++c) want[t * 5 + c] += h.scale * qk * h.v[s * 5 + c];
    }
  FloatHead fh;
  ops::linattn_forward(ex(), fh.args(h, 16), nullptr);
  expect_close(fh.o, want, 2e-5, "zero gate");
}

// Rounds of whole chunks starting at chunk boundaries give the bits of one call.
TEST_P(LinAttnTest, RoundsOfWholeChunksEqualOneCallBitwise) {
  const RefHead h = random_head(150, 8, 8, 61);
  FloatHead one;
  ops::linattn_forward(ex(), one.args(h, 16), nullptr);
  FloatHead rounds;
  ops::LinAttnHead a = rounds.args(h, 16);
  for (int64_t t0 = 0; t0 < 150; t0 += 32) {
    ops::LinAttnHead r = a;
    r.T = std::min<int64_t>(32, 150 - t0), r.pos = t0;
    r.q += t0 * a.ld_q, r.k += t0 * a.ld_k, r.v += t0 * a.ld_v, r.g += t0 * a.ld_g, r.o += t0 * a.ld_o;
    ops::linattn_forward(ex(), r, nullptr);
  }
  for (size_t i = 0; i < one.o.size(); ++i) ASSERT_EQ(one.o[i], rounds.o[i]) << i;
  for (size_t i = 0; i < one.S.size(); ++i) ASSERT_EQ(one.S[i], rounds.S[i]) << i;
}

// The backward against central differences of Σ dO ⊙ o (double recurrence).
TEST_P(LinAttnTest, BackwardMatchesFiniteDifferences) {
  for (bool scalar : {false, true})
    for (const auto& [T, chunk, gate_scale] : {std::tuple<int64_t, int64_t, double>{37, 16, 3.0}, {20, 64, 3.0},
                                               {23, 8, 400.0} /* unfactored diagonal blocks */}) {
      RefHead h = random_head(T, 6, 7, 71 + T, scalar, gate_scale);
      Rng rng(9);
      std::vector<double> dO(static_cast<size_t>(T * 7));
      for (double& x : dO) x = static_cast<float>(rng.normal());
      FloatHead fh;
      const ops::LinAttnHead a = fh.args(h, chunk);
      std::vector<float> saved(static_cast<size_t>(ops::linattn_chunks(T, 0, chunk) * 6 * 7));
      ops::linattn_forward(ex(), a, saved.data());
      std::vector<float> dq(T * 6), dk(T * 6), dv(T * 7), dg(scalar ? T : T * 6), dOf = f32(dO);
      ops::LinAttnGrad g;
      g.dO = dOf.data(), g.ld_do = 7, g.dq = dq.data(), g.ld_dq = 6, g.dk = dk.data(), g.ld_dk = 6;
      g.dv = dv.data(), g.ld_dv = 7, g.dg = dg.data(), g.ld_dg = scalar ? 1 : 6;
      ops::linattn_backward(ex(), a, saved.data(), g);
      auto loss = [&](const RefHead& x) {
        std::vector<double> S(6 * 7, 0.0);
        const std::vector<double> o = test::ref_linattn_recurrent(x, S);
        double l = 0;
        for (size_t i = 0; i < o.size(); ++i) l += dO[i] * o[i];
        return l;
      };
      auto check = [&](std::vector<double> RefHead::*field, const std::vector<float>& got, const char* name) {
        RefHead x = h;
        std::vector<double> fd((x.*field).size());
        double scale = 1e-3;
        for (size_t i = 0; i < fd.size(); ++i) {
          const double keep = (x.*field)[i], e = 1e-6;
          (x.*field)[i] = keep + e;
          const double up = loss(x);
          (x.*field)[i] = keep - e;
          fd[i] = (up - loss(x)) / (2 * e);
          (x.*field)[i] = keep;
          scale = std::max(scale, std::fabs(fd[i]));
        }
        for (size_t i = 0; i < fd.size(); ++i)
          ASSERT_NEAR(got[i], fd[i], 2e-4 * scale) << name << "[" << i << "] scalar " << scalar << " T " << T;
      };
      check(&RefHead::q, dq, "dq");
      check(&RefHead::k, dk, "dk");
      check(&RefHead::v, dv, "dv");
      check(&RefHead::g, dg, "dg");
    }
}

TEST_P(LinAttnTest, MulExpMatchesTheFormula) {
  const kernels::Table& kt = kernels::table(GetParam());
  for (int64_t n : {1, 7, 16, 37}) {
    std::vector<float> x(n), a(n), b(n), y(n);
    Rng rng(n);
    for (int64_t i = 0; i < n; ++i) x[i] = rng.normal(), a[i] = rng.normal() * 10, b[i] = rng.normal() * 10;
    for (bool with_b : {true, false}) {
      kt.mul_exp(x.data(), a.data(), with_b ? b.data() : nullptr, 0.5f, y.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double want = 0.5 * x[i] * std::exp(static_cast<double>(a[i]) - (with_b ? b[i] : 0.0));
        ASSERT_NEAR(y[i], want, 3e-6 * std::fabs(want) + 1e-37) << n << " " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, LinAttnTest, ::testing::ValuesIn(all_isas()),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

}  // namespace
}  // namespace strata
