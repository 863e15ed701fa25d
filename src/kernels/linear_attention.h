// Gated linear attention, the recurrence shared by the GLA and RetNet mixers
// (docs/linear-attention.md), for one head of one sequence. With per-channel
// log forget gates g_t ∈ (-inf, 0]^dk (RetNet: one gate per step, log γ):
//   S_t = diag(exp(g_t)) S_{t-1} + k_tᵀ v_t        S ∈ R^{dk x dv}
//   o_t = (scale · q_t) S_t
// computed in the chunked form: inside a chunk of C rows with β_i the
// cumulative log gate since the chunk started,
//   o_i = (scale q_i ⊙ e^{β_i}) S + Σ_{j<=i} (Σ_a scale q_ia k_ja e^{β_ia - β_ja}) v_j
//   S  <- diag(e^{β_end}) S + Σ_j (k_j ⊙ e^{β_end - β_j})ᵀ v_j
// so almost all the work is matrix products. Every exponent is a difference
// of cumulative gates taken in an order that keeps it <= 0 (or bounded, see
// linear_attention.cpp), never e^{β} · e^{-β}, so extreme gates cannot
// overflow. Chunks end at multiples of C of the absolute position, so a
// sequence fed in rounds of a multiple of C gets the bits of one call.
#pragma once
#include <cstdint>

#include "kernels/exec.h"

namespace strata::ops {

// One head of one sequence as strided rows.
struct LinAttnHead {
  int64_t T = 0, dk = 0, dv = 0;  // rows, key and value width
  const float* q = nullptr;       // q[t * ld_q + a]
  int64_t ld_q = 0;
  const float* k = nullptr;
  int64_t ld_k = 0;
  const float* v = nullptr;  // v[t * ld_v + c]
  int64_t ld_v = 0;
  // Log forget gates: g[t * ld_g + a] per channel, or g[t * ld_g] for every
  // channel when scalar_gate (ld_g 0: one constant gate, RetNet's log γ).
  const float* g = nullptr;
  int64_t ld_g = 0;
  bool scalar_gate = false;
  float scale = 1.0f;  // q's scale (dk^-1/2 in both mixers)
  float* o = nullptr;  // written: o[t * ld_o + c]
  int64_t ld_o = 0;
  float* S = nullptr;  // [dk, dv]: the state before row 0 on entry, after row T-1 on exit
  int64_t pos = 0;     // absolute position of row 0
  int64_t chunk = 64;  // C
};

// Chunks of rows [pos, pos + T) (cut at multiples of `chunk`).
int64_t linattn_chunks(int64_t T, int64_t pos, int64_t chunk);

// The chunked forward. saved (optional, linattn_chunks * dk * dv floats)
// receives the state entering every chunk, which the backward reads. Runs
// single-threaded inside a parallel_for (its products are ops::gemm calls,
// which run serially there), so callers spread (sequence, head) pairs.
void linattn_forward(const Exec& ex, const LinAttnHead& a, float* saved);

// One row (T == 1) in the recurrent form, for decoding: S ← diag(e^{g}) S + kᵀv, o = scale q S.
void linattn_step(const kernels::Table& kt, const LinAttnHead& a);

// Gradients of the forward that saved `saved` (a.S is not read), for output
// gradient dO; no gradient flows into the final state, none out of the
// initial one. dq, dk, dv are written. dg (optional) is written with the
// gradient of the log gates: per channel, or summed over the channels when
// scalar_gate (ld_dg then the stride between rows).
struct LinAttnGrad {
  const float* dO = nullptr;
  int64_t ld_do = 0;
  float* dq = nullptr;
  int64_t ld_dq = 0;
  float* dk = nullptr;
  int64_t ld_dk = 0;
  float* dv = nullptr;
  int64_t ld_dv = 0;
  float* dg = nullptr;
  int64_t ld_dg = 0;
};
void linattn_backward(const Exec& ex, const LinAttnHead& a, const float* saved, const LinAttnGrad& g);

}  // namespace strata::ops
