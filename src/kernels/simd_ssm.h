// The state-space kernels (kernels/ssm.h) over a vector type V: vectors run
// across channels, so every lane is one channel's recurrence and the state
// of a block of channels stays in registers for the whole sequence. Channels
// past the last full vector take the scalar references. Included after
// simd_kernels.h by the per-ISA translation units.
#pragma once
#include "kernels/simd_kernels.h"
#include "kernels/ssm.h"

namespace strata::kernels {
namespace {

// The channels [e0, e0 + n) of a as a call of their own.
inline ScanArgs channel_slice(const ScanArgs& a, int64_t e0, int64_t n) {
  ScanArgs s = a;
  s.n = n;
  s.u += e0;
  s.delta += e0;
  s.A += e0;
  s.D += e0;
  s.h += e0;
  if (s.y) s.y += e0;
  return s;
}

// NS > 0: the state size known at compile time (the state then lives in
// registers); NS == 0: a.N at run time.
template <class V, int NS>
void scan_forward_block(const ScanArgs& a, int64_t e0) {
  using R = typename V::R;
  constexpr int kMax = NS > 0 ? NS : kScanMaxState;
  const int ns = NS > 0 ? NS : static_cast<int>(a.N);
  R h[kMax], A[kMax];
  for (int s = 0; s < ns; ++s) {
    h[s] = V::load(a.h + s * a.ld_h + e0);
    A[s] = V::load(a.A + s * a.ld_a + e0);
  }
  const R D = V::load(a.D + e0);
  for (int64_t t = 0; t < a.T; ++t) {
    const R dt = V::load(a.delta + t * a.ld_delta + e0), u = V::load(a.u + t * a.ld_u + e0);
    const R du = V::mul(dt, u);
    const float* Bt = a.B + t * a.ld_bc;
    const float* Ct = a.C + t * a.ld_bc;
    R y = V::mul(D, u);
    for (int s = 0; s < ns; ++s) {
      h[s] = V::fma(vexp<V>(V::mul(dt, A[s])), h[s], V::mul(du, V::set1(Bt[s])));
      y = V::fma(h[s], V::set1(Ct[s]), y);
    }
    V::store(a.y + t * a.ld_y + e0, y);
  }
  for (int s = 0; s < ns; ++s) V::store(a.h + s * a.ld_h + e0, h[s]);
}

template <class V>
void scan_forward(const ScanArgs& a) {
  const int64_t nv = a.n / V::kWidth * V::kWidth;
  for (int64_t e0 = 0; e0 < nv; e0 += V::kWidth) {
    if (a.N == 16) scan_forward_block<V, 16>(a, e0);
    else scan_forward_block<V, 0>(a, e0);
  }
  if (nv < a.n) scan_forward_scalar(channel_slice(a, nv, a.n - nv));
}

// One vector of channels. The states after every step go to hs, the lane
// sums of dB and dC to lanes (reduced once per call by scan_backward).
template <class V, int NS>
void scan_backward_block(const ScanGradArgs& g, int64_t e0, float* hs, float* lanes_b, float* lanes_c) {
  using R = typename V::R;
  constexpr int W = V::kWidth;
  constexpr int kMax = NS > 0 ? NS : kScanMaxState;
  const ScanArgs& a = g.f;
  const int ns = NS > 0 ? NS : static_cast<int>(a.N);
  R A[kMax], c[kMax];
  for (int s = 0; s < ns; ++s) {
    A[s] = V::load(a.A + s * a.ld_a + e0);
    c[s] = V::load(a.h + s * a.ld_h + e0);
  }
  for (int64_t t = 0; t < a.T; ++t) {  // recompute the states, exactly as the forward did
    const R dt = V::load(a.delta + t * a.ld_delta + e0), du = V::mul(dt, V::load(a.u + t * a.ld_u + e0));
    const float* Bt = a.B + t * a.ld_bc;
    for (int s = 0; s < ns; ++s) {
      c[s] = V::fma(vexp<V>(V::mul(dt, A[s])), c[s], V::mul(du, V::set1(Bt[s])));
      V::store(hs + (t * ns + s) * W, c[s]);
    }
  }
  // dA and dD are summed into memory step by step, as the scalar reference
  // does, so a sequence cut into chunks gets the same bits as one call.
  for (int s = 0; s < ns; ++s) c[s] = V::load(g.g + s * g.ld_g + e0);  // now the carried gradient
  const R D = V::load(a.D + e0);
  for (int64_t t = a.T - 1; t >= 0; --t) {
    const R dt = V::load(a.delta + t * a.ld_delta + e0), u = V::load(a.u + t * a.ld_u + e0);
    const R dy = V::load(g.dy + t * g.ld_dy + e0);
    const R dtu = V::mul(dt, u);
    const float* Bt = a.B + t * a.ld_bc;
    const float* Ct = a.C + t * a.ld_bc;
    R ddt = V::zero(), du = V::mul(D, dy);
    V::store(g.dD + e0, V::fma(dy, u, V::load(g.dD + e0)));
    for (int s = 0; s < ns; ++s) {
      const R h = V::load(hs + (t * ns + s) * W);
      const R prev = t > 0 ? V::load(hs + ((t - 1) * ns + s) * W) : V::load(a.h + s * a.ld_h + e0);
      const R Bs = V::set1(Bt[s]);
      const R G = V::fma(dy, V::set1(Ct[s]), c[s]);
      const R at = vexp<V>(V::mul(dt, A[s]));
      float* lc = lanes_c + (t * ns + s) * W;
      float* lb = lanes_b + (t * ns + s) * W;
      V::store(lc, V::fma(dy, h, V::load(lc)));
      V::store(lb, V::fma(G, dtu, V::load(lb)));
      du = V::fma(G, V::mul(dt, Bs), du);
      const R aprev = V::mul(at, prev);
      ddt = V::fma(G, V::fma(A[s], aprev, V::mul(Bs, u)), ddt);
      float* dA = g.dA + s * g.ld_dA + e0;
      V::store(dA, V::fma(G, V::mul(dt, aprev), V::load(dA)));
      c[s] = V::mul(at, G);
    }
    V::store(g.du + t * g.ld_du + e0, du);
    V::store(g.ddelta + t * g.ld_ddelta + e0, ddt);
  }
  for (int s = 0; s < ns; ++s) V::store(g.g + s * g.ld_g + e0, c[s]);
}

template <class V>
void scan_backward(const ScanGradArgs& g) {
  constexpr int W = V::kWidth;
  const ScanArgs& a = g.f;
  const int64_t T = a.T, N = a.N, nv = a.n / W * W;
  float* hs = g.work;
  float* lanes_b = hs + T * N * W;
  float* lanes_c = lanes_b + T * N * W;
  if (nv > 0) {
    std::memset(lanes_b, 0, sizeof(float) * static_cast<size_t>(2 * T * N * W));
    for (int64_t e0 = 0; e0 < nv; e0 += W) {
      if (N == 16) scan_backward_block<V, 16>(g, e0, hs, lanes_b, lanes_c);
      else scan_backward_block<V, 0>(g, e0, hs, lanes_b, lanes_c);
    }
    for (int64_t t = 0; t < T; ++t)
      for (int64_t s = 0; s < N; ++s) {
        g.dB[t * g.ld_dbc + s] += V::reduce_add(V::load(lanes_b + (t * N + s) * W));
        g.dC[t * g.ld_dbc + s] += V::reduce_add(V::load(lanes_c + (t * N + s) * W));
      }
  }
  if (nv < a.n) {
    ScanGradArgs r = g;
    r.f = channel_slice(a, nv, a.n - nv);
    r.dy += nv;
    r.g += nv;
    r.du += nv;
    r.ddelta += nv;
    r.dA += nv;
    r.dD += nv;
    r.work = lanes_c + T * N * W;
    scan_backward_scalar(r);
  }
}

template <class V>
void dwconv_row(const float* const* in, const float* w, int64_t ldw, const float* bias, int64_t k, int64_t n, float* y,
                bool silu) {
  using R = typename V::R;
  const int64_t nv = n / V::kWidth * V::kWidth;
  for (int64_t c = 0; c < nv; c += V::kWidth) {
    R v = V::load(bias + c);
    for (int64_t j = 0; j < k; ++j) v = V::fma(V::load(w + j * ldw + c), V::load(in[j] + c), v);
    V::store(y + c, silu ? kernels::silu<V>(v) : v);
  }
  if (nv == n) return;
  const float* rest[kConvMaxTaps];
  for (int64_t j = 0; j < k; ++j) rest[j] = in[j] + nv;
  dwconv_row_scalar(rest, w + nv, ldw, bias + nv, k, n - nv, y + nv, silu);
}

// log1p(e) for e in [0, 1]: 2 atanh(s) with s = e / (2 + e) <= 1/3, whose odd
// series has converged to float precision by the s^17 term.
template <class V>
typename V::R log1p_unit(typename V::R e) {
  const typename V::R s = V::div(e, V::add(V::set1(2.0f), e)), s2 = V::mul(s, s);
  static constexpr float kOdd[] = {1.0f / 15, 1.0f / 13, 1.0f / 11, 1.0f / 9, 1.0f / 7, 1.0f / 5, 1.0f / 3, 1.0f};
  typename V::R p = V::set1(1.0f / 17);
  for (float c : kOdd) p = V::fma(p, s2, V::set1(c));
  return V::mul(V::mul(V::set1(2.0f), s), p);
}

template <class V>
void softplus_bias(float* x, const float* bias, int64_t n) {
  using R = typename V::R;
  const int64_t nv = n / V::kWidth * V::kWidth;
  for (int64_t i = 0; i < nv; i += V::kWidth) {
    const R v = V::add(V::load(x + i), V::load(bias + i));
    const R neg_abs = V::min(v, V::sub(V::zero(), v));
    V::store(x + i, V::add(V::max(v, V::zero()), log1p_unit<V>(vexp<V>(neg_abs))));
  }
  if (nv < n) softplus_bias_scalar(x + nv, bias + nv, n - nv);
}

template <class V>
void mul_exp(const float* x, const float* a, const float* b, float s, float* y, int64_t n) {
  using R = typename V::R;
  const R sv = V::set1(s);
  auto f = [&](int64_t i) {
    const R e = b ? V::sub(V::load(a + i), V::load(b + i)) : V::load(a + i);
    V::store(y + i, V::mul(V::mul(sv, V::load(x + i)), vexp<V>(e)));
  };
  const int64_t nv = n / V::kWidth * V::kWidth;
  for (int64_t i = 0; i < nv; i += V::kWidth) f(i);
  if (nv == n) return;
  float xb[V::kWidth] = {}, ab[V::kWidth] = {}, bb[V::kWidth] = {}, yb[V::kWidth];
  for (int64_t i = nv; i < n; ++i) xb[i - nv] = x[i], ab[i - nv] = a[i], bb[i - nv] = b ? b[i] : 0.0f;
  const R e = V::sub(V::load(ab), V::load(bb));
  V::store(yb, V::mul(V::mul(sv, V::load(xb)), vexp<V>(e)));
  for (int64_t i = nv; i < n; ++i) y[i] = yb[i - nv];
}

template <class V>
void add_ssm_kernels(Table& t) {
  t.scan_forward = scan_forward<V>;
  t.scan_backward = scan_backward<V>;
  t.dwconv_row = dwconv_row<V>;
  t.softplus_bias = softplus_bias<V>;
  t.mul_exp = mul_exp<V>;
}

}  // namespace
}  // namespace strata::kernels
