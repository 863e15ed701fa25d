// The chunked gated linear attention of kernels/linear_attention.h.
//
// Inside a chunk the intra-chunk scores A_ij = Σ_a scale q_ia k_ja e^{β_ia - β_ja}
// (j <= i) are matrix products too: rows are taken in sub-chunks of kSub, and
// sub-chunk I (rows I0..I1) uses the reference row m = I0 - 1 (β_m = 0 before
// the chunk):
//   Qd_i = scale q_i ⊙ e^{β_i - β_m}  (<= 1: i > m),
//   K'_j = k_j ⊙ e^{β_m - β_j}        (<= 1 for j <= m, bounded for j in I),
//   A[I, 0:I1] = Qd K'ᵀ, then zero above the diagonal.
// K'_j of a row of I itself is e^{β_m - β_j} >= 1; when some channel decays by
// more than kMaxSubDecay inside the sub-chunk that could overflow, so there the
// diagonal block is summed pair by pair from e^{β_ia - β_ja} <= 1 instead.
// With a scalar gate (RetNet) A = scale (Q Kᵀ) ⊙ e^{β_i - β_j} directly.
#include "kernels/linear_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/ops.h"

namespace strata::ops {
namespace {

constexpr int64_t kSub = 16;
constexpr float kMaxSubDecay = 60.0f;  // e^60 ≈ 1e26: safe in F32 products of a few hundred terms

// Per-thread buffers of one chunk.
struct ChunkBufs {
  std::vector<float> beta, qh, kh, a, qd, kp, zero, tmp, da, scr;
  void size(int64_t C, int64_t dk, int64_t dv) {
    const size_t cd = static_cast<size_t>(C * dk), cc = static_cast<size_t>(C * C);
    for (auto* v : {&beta, &qh, &kh, &qd, &kp, &tmp}) v->resize(cd);
    a.resize(cc);
    da.resize(cc);
    scr.resize(static_cast<size_t>(C * std::max(dk, dv)));
    zero.assign(static_cast<size_t>(std::max(dk, C)), 0.0f);
  }
};

ChunkBufs& bufs(int64_t C, int64_t dk, int64_t dv) {
  thread_local ChunkBufs b;
  b.size(C, dk, dv);
  return b;
}

// The length of the chunk starting at absolute position p.
int64_t chunk_len(int64_t p, int64_t rows_left, int64_t C) { return std::min(rows_left, C - p % C); }

// Width of the gate rows: dk per channel, 1 when scalar.
int64_t gate_width(const LinAttnHead& a) { return a.scalar_gate ? 1 : a.dk; }

// β[i] = Σ_{r <= i} g[t0 + r] (cumulative from the chunk's start), rows of gate_width.
void cumulative_gates(const LinAttnHead& a, int64_t t0, int64_t n, float* beta) {
  const int64_t w = gate_width(a);
  for (int64_t i = 0; i < n; ++i) {
    const float* g = a.g + (t0 + i) * a.ld_g;
    float* b = beta + i * w;
    for (int64_t c = 0; c < w; ++c) b[c] = (i > 0 ? b[c - w] : 0.0f) + g[c];
  }
}

// Reference β of sub-chunk starting at row I0 (row I0 - 1, or zeros).
const float* ref_beta(const float* beta, int64_t I0, int64_t w, const float* zero) {
  return I0 > 0 ? beta + (I0 - 1) * w : zero;
}

// The chunk's products against the incoming state and its intra scores:
//   qh = scale q ⊙ e^{β}, kh = k ⊙ e^{β_end - β}, A (n x n, zero above the diagonal).
void prepare_chunk(const kernels::Table& kt, const Exec& ex, const LinAttnHead& a, int64_t t0, int64_t n,
                   ChunkBufs& b) {
  const int64_t dk = a.dk, w = gate_width(a);
  cumulative_gates(a, t0, n, b.beta.data());
  const float* end = b.beta.data() + (n - 1) * w;
  for (int64_t i = 0; i < n; ++i) {
    const float* q = a.q + (t0 + i) * a.ld_q;
    const float* k = a.k + (t0 + i) * a.ld_k;
    const float* bi = b.beta.data() + i * w;
    if (a.scalar_gate) {
      const float eq = a.scale * std::exp(bi[0]), ek = std::exp(end[0] - bi[0]);
      for (int64_t c = 0; c < dk; ++c) b.qh[i * dk + c] = eq * q[c], b.kh[i * dk + c] = ek * k[c];
    } else {
      kt.mul_exp(q, bi, nullptr, a.scale, b.qh.data() + i * dk, dk);
      kt.mul_exp(k, end, bi, 1.0f, b.kh.data() + i * dk, dk);
    }
  }
  float* A = b.a.data();
  if (a.scalar_gate) {
    gemm(ex, n, n, dk, {a.q + t0 * a.ld_q, a.ld_q, 1}, {a.k + t0 * a.ld_k, 1, a.ld_k}, A, n, false);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        A[i * n + j] = j <= i ? A[i * n + j] * a.scale * std::exp(b.beta[i] - b.beta[j]) : 0.0f;
    return;
  }
  for (int64_t I0 = 0; I0 < n; I0 += kSub) {
    const int64_t I1 = std::min(n, I0 + kSub);
    const float* bm = ref_beta(b.beta.data(), I0, dk, b.zero.data());
    float decay = 0.0f;
    for (int64_t c = 0; c < dk; ++c) decay = std::max(decay, bm[c] - b.beta[(I1 - 1) * dk + c]);
    const bool factored = decay < kMaxSubDecay;
    const int64_t cols = factored ? I1 : I0;  // key rows reached by the product
    for (int64_t i = I0; i < I1; ++i)
      kt.mul_exp(a.q + (t0 + i) * a.ld_q, b.beta.data() + i * dk, bm, a.scale, b.qd.data() + i * dk, dk);
    for (int64_t j = 0; j < cols; ++j)
      kt.mul_exp(a.k + (t0 + j) * a.ld_k, bm, b.beta.data() + j * dk, 1.0f, b.kp.data() + j * dk, dk);
    if (cols > 0)
      gemm(ex, I1 - I0, cols, dk, {b.qd.data() + I0 * dk, dk, 1}, {b.kp.data(), 1, dk}, A + I0 * n, n, false);
    for (int64_t i = I0; i < I1; ++i) {
      std::fill(A + i * n + (factored ? i + 1 : I0), A + (i + 1) * n, 0.0f);
      if (factored) continue;
      for (int64_t j = I0; j <= i; ++j) {  // pair by pair: e^{β_i - β_j} <= 1
        kt.mul_exp(a.k + (t0 + j) * a.ld_k, b.beta.data() + i * dk, b.beta.data() + j * dk, a.scale, b.scr.data(), dk);
        A[i * n + j] = kt.dot(a.q + (t0 + i) * a.ld_q, b.scr.data(), dk);
      }
    }
  }
}

// S[c][:] *= e^{β_end[c]} (per channel, or one factor).
void decay_state(const LinAttnHead& a, const float* end, float* S, int64_t dv) {
  for (int64_t c = 0; c < a.dk; ++c) {
    const float f = std::exp(end[a.scalar_gate ? 0 : c]);
    for (int64_t j = 0; j < dv; ++j) S[c * dv + j] *= f;
  }
}

}  // namespace

int64_t linattn_chunks(int64_t T, int64_t pos, int64_t chunk) {
  int64_t n = 0;
  for (int64_t t = 0; t < T; t += chunk_len(pos + t, T - t, chunk)) ++n;
  return n;
}

void linattn_forward(const Exec& ex_in, const LinAttnHead& a, float* saved) {
  const Exec ex = ex_in.with_precision(Precision::F32);
  const kernels::Table& kt = ex.kernels();
  const int64_t dk = a.dk, dv = a.dv, w = gate_width(a);
  ChunkBufs& b = bufs(a.chunk, dk, dv);
  for (int64_t t0 = 0, c = 0; t0 < a.T; ++c) {
    const int64_t n = chunk_len(a.pos + t0, a.T - t0, a.chunk);
    if (saved) std::copy(a.S, a.S + dk * dv, saved + c * dk * dv);
    prepare_chunk(kt, ex, a, t0, n, b);
    float* o = a.o + t0 * a.ld_o;
    gemm(ex, n, dv, dk, {b.qh.data(), dk, 1}, {a.S, dv, 1}, o, a.ld_o, false);
    gemm(ex, n, dv, n, {b.a.data(), n, 1}, {a.v + t0 * a.ld_v, a.ld_v, 1}, o, a.ld_o, true);
    decay_state(a, b.beta.data() + (n - 1) * w, a.S, dv);
    gemm(ex, dk, dv, n, {b.kh.data(), 1, dk}, {a.v + t0 * a.ld_v, a.ld_v, 1}, a.S, dv, true);
    t0 += n;
  }
}

void linattn_step(const kernels::Table& kt, const LinAttnHead& a) {
  const int64_t dk = a.dk, dv = a.dv;
  float* o = a.o;
  std::fill(o, o + dv, 0.0f);
  for (int64_t c = 0; c < dk; ++c) {
    float* s = a.S + c * dv;
    const float f = std::exp(a.g[a.scalar_gate ? 0 : c]);
    for (int64_t j = 0; j < dv; ++j) s[j] *= f;
    kt.axpy(a.k[c], a.v, s, dv);
    kt.axpy(a.scale * a.q[c], s, o, dv);
  }
}

void linattn_backward(const Exec& ex_in, const LinAttnHead& a, const float* saved, const LinAttnGrad& g) {
  const Exec ex = ex_in.with_precision(Precision::F32);
  const kernels::Table& kt = ex.kernels();
  const int64_t dk = a.dk, dv = a.dv, w = gate_width(a);
  ChunkBufs& b = bufs(a.chunk, dk, dv);
  const int64_t chunks = linattn_chunks(a.T, a.pos, a.chunk);
  std::vector<int64_t> starts(static_cast<size_t>(chunks + 1), a.T);
  for (int64_t t0 = 0, c = 0; t0 < a.T; ++c) {
    starts[c] = t0;
    t0 += chunk_len(a.pos + t0, a.T - t0, a.chunk);
  }
  std::vector<float> dS(static_cast<size_t>(dk * dv), 0.0f);  // dL/d(state after the chunk)
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t t0 = starts[c], n = starts[c + 1] - t0;
    const float* S = saved + c * dk * dv;
    prepare_chunk(kt, ex, a, t0, n, b);
    const float* dO = g.dO + t0 * g.ld_do;
    const float* v = a.v + t0 * a.ld_v;
    float* dq = g.dq + t0 * g.ld_dq;
    float* dkk = g.dk + t0 * g.ld_dk;
    float* dvv = g.dv + t0 * g.ld_dv;
    // dA = dO Vᵀ below the diagonal; dV = Aᵀ dO + kh dS.
    float* dA = b.da.data();
    gemm(ex, n, n, dv, {dO, g.ld_do, 1}, {v, 1, a.ld_v}, dA, n, false);
    for (int64_t i = 0; i < n; ++i) std::fill(dA + i * n + i + 1, dA + (i + 1) * n, 0.0f);
    gemm(ex, n, dv, n, {b.a.data(), 1, n}, {dO, g.ld_do, 1}, dvv, g.ld_dv, false);
    gemm(ex, n, dv, dk, {b.kh.data(), dk, 1}, {dS.data(), dv, 1}, dvv, g.ld_dv, true);
    // Through the incoming state: d(qh) = dO Sᵀ, d(kh) = V dSᵀ.
    gemm(ex, n, dk, dv, {dO, g.ld_do, 1}, {S, 1, dv}, b.tmp.data(), dk, false);
    gemm(ex, n, dk, dv, {v, a.ld_v, 1}, {dS.data(), 1, dv}, b.scr.data(), dk, false);
    const float* end = b.beta.data() + (n - 1) * w;
    for (int64_t i = 0; i < n; ++i) {
      const float* bi = b.beta.data() + i * w;
      float* dqi = dq + i * g.ld_dq;
      float* dki = dkk + i * g.ld_dk;
      if (a.scalar_gate) {
        const float eq = a.scale * std::exp(bi[0]), ek = std::exp(end[0] - bi[0]);
        for (int64_t x = 0; x < dk; ++x) dqi[x] = eq * b.tmp[i * dk + x], dki[x] = ek * b.scr[i * dk + x];
      } else {
        kt.mul_exp(b.tmp.data() + i * dk, bi, nullptr, a.scale, dqi, dk);
        kt.mul_exp(b.scr.data() + i * dk, end, bi, 1.0f, dki, dk);
      }
    }
    // Through the intra-chunk scores.
    if (a.scalar_gate) {
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j <= i; ++j) dA[i * n + j] *= a.scale * std::exp(b.beta[i] - b.beta[j]);
      gemm(ex, n, dk, n, {dA, n, 1}, {a.k + t0 * a.ld_k, a.ld_k, 1}, dq, g.ld_dq, true);
      gemm(ex, n, dk, n, {dA, 1, n}, {a.q + t0 * a.ld_q, a.ld_q, 1}, dkk, g.ld_dk, true);
    } else {
      for (int64_t I0 = 0; I0 < n; I0 += kSub) {
        const int64_t I1 = std::min(n, I0 + kSub), m = I1 - I0;
        const float* bm = ref_beta(b.beta.data(), I0, dk, b.zero.data());
        float decay = 0.0f;
        for (int64_t x = 0; x < dk; ++x) decay = std::max(decay, bm[x] - b.beta[(I1 - 1) * dk + x]);
        const bool factored = decay < kMaxSubDecay;
        const int64_t cols = factored ? I1 : I0;
        for (int64_t i = I0; i < I1; ++i)
          kt.mul_exp(a.q + (t0 + i) * a.ld_q, b.beta.data() + i * dk, bm, a.scale, b.qd.data() + i * dk, dk);
        for (int64_t j = 0; j < cols; ++j)
          kt.mul_exp(a.k + (t0 + j) * a.ld_k, bm, b.beta.data() + j * dk, 1.0f, b.kp.data() + j * dk, dk);
        if (cols > 0) {
          // dQd = dA[I, :cols] K'; dq_i += dQd_i ⊙ scale e^{β_i - β_m}.
          gemm(ex, m, dk, cols, {dA + I0 * n, n, 1}, {b.kp.data(), dk, 1}, b.tmp.data(), dk, false);
          for (int64_t i = I0; i < I1; ++i) {
            kt.mul_exp(b.tmp.data() + (i - I0) * dk, b.beta.data() + i * dk, bm, a.scale, b.scr.data(), dk);
            kt.axpy(1.0f, b.scr.data(), dq + i * g.ld_dq, dk);
          }
          // dK' = dA[I, :cols]ᵀ Qd; dk_j += dK'_j ⊙ e^{β_m - β_j}.
          gemm(ex, cols, dk, m, {dA + I0 * n, 1, n}, {b.qd.data() + I0 * dk, dk, 1}, b.tmp.data(), dk, false);
          for (int64_t j = 0; j < cols; ++j) {
            kt.mul_exp(b.tmp.data() + j * dk, bm, b.beta.data() + j * dk, 1.0f, b.scr.data(), dk);
            kt.axpy(1.0f, b.scr.data(), dkk + j * g.ld_dk, dk);
          }
        }
        if (factored) continue;
        for (int64_t i = I0; i < I1; ++i)  // the diagonal block pair by pair
          for (int64_t j = I0; j <= i; ++j) {
            const float d = dA[i * n + j];
            kt.mul_exp(a.k + (t0 + j) * a.ld_k, b.beta.data() + i * dk, b.beta.data() + j * dk, a.scale * d,
                       b.scr.data(), dk);
            kt.axpy(1.0f, b.scr.data(), dq + i * g.ld_dq, dk);
            kt.mul_exp(a.q + (t0 + i) * a.ld_q, b.beta.data() + i * dk, b.beta.data() + j * dk, a.scale * d,
                       b.scr.data(), dk);
            kt.axpy(1.0f, b.scr.data(), dkk + j * g.ld_dk, dk);
          }
      }
    }
    // dS entering the chunk = diag(e^{β_end}) dS + qhᵀ dO.
    decay_state(a, end, dS.data(), dv);
    gemm(ex, dk, dv, n, {b.qh.data(), 1, dk}, {dO, g.ld_do, 1}, dS.data(), dv, true);
  }
  if (!g.dg) return;
  // The gates enter only as q_t e^{b_t} and k_t e^{-b_t} (b the cumulative
  // gate), so dL/db_t = q_t ⊙ dq_t - k_t ⊙ dk_t, and the gate of step r
  // reaches every b_t with t >= r: a reverse cumulative sum (in double).
  std::vector<double> run(static_cast<size_t>(w), 0.0);
  for (int64_t t = a.T - 1; t >= 0; --t) {
    const float* q = a.q + t * a.ld_q;
    const float* k = a.k + t * a.ld_k;
    const float* dqt = g.dq + t * g.ld_dq;
    const float* dkt = g.dk + t * g.ld_dk;
    for (int64_t x = 0; x < dk; ++x)
      run[a.scalar_gate ? 0 : x] += static_cast<double>(q[x]) * dqt[x] - static_cast<double>(k[x]) * dkt[x];
    for (int64_t x = 0; x < w; ++x) g.dg[t * g.ld_dg + x] = static_cast<float>(run[x]);
  }
}

}  // namespace strata::ops
