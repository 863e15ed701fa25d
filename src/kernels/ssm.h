// Kernels of the state-space mixers (Mamba): the selective scan, its
// backward, the causal depthwise convolution row and softplus. Arguments are
// strided views, so a call can cover any block of channels of packed rows.
// The state is kept state-major, h[s * ld_h + e], so a vector of channels of
// one state index is contiguous.
#pragma once
#include <cstdint>

namespace strata::kernels {

// The scan of one sequence over T steps and channels e < n:
//   h[s][e] = exp(delta[t][e] * A[s][e]) * h[s][e] + delta[t][e] * B[t][s] * u[t][e]
//   y[t][e] = D[e] * u[t][e] + sum over s (in increasing s) of h[s][e] * C[t][s]
// with A = -exp(A_log), delta already through softplus. h holds the state
// before step 0 on entry and after step T-1 on exit.
struct ScanArgs {
  int64_t T = 0, n = 0, N = 0;  // steps, channels, state size
  const float* u = nullptr;
  int64_t ld_u = 0;
  const float* delta = nullptr;
  int64_t ld_delta = 0;
  const float* B = nullptr;  // row t: B[t * ld_bc + s]
  const float* C = nullptr;
  int64_t ld_bc = 0;
  const float* A = nullptr;  // A[s * ld_a + e]
  int64_t ld_a = 0;
  const float* D = nullptr;  // [n]
  float* h = nullptr;        // h[s * ld_h + e]
  int64_t ld_h = 0;
  float* y = nullptr;
  int64_t ld_y = 0;
};

// Its backward over the same steps (docs/samba.md has the recurrences). The
// forward states are recomputed from the state before step 0 (f.h, read
// only); f.y is not used. g carries dL/dh across calls: on entry the gradient
// of the state after step T-1 (zero for a sequence's last chunk), on exit that
// of the state before step 0, so a long sequence is walked chunk by chunk in
// reverse with only the chunks' first states saved.
struct ScanGradArgs {
  ScanArgs f;
  const float* dy = nullptr;  // dL/dy
  int64_t ld_dy = 0;
  float* g = nullptr;  // g[s * ld_g + e], in/out
  int64_t ld_g = 0;
  float* du = nullptr;  // written: the scan's part of dL/du
  int64_t ld_du = 0;
  float* ddelta = nullptr;  // written: dL/d(delta)
  int64_t ld_ddelta = 0;
  float* dA = nullptr;  // added to: dA[s * ld_dA + e]
  int64_t ld_dA = 0;
  float* dD = nullptr;  // added to
  float* dB = nullptr;  // added to: the sums over this call's channels
  float* dC = nullptr;
  int64_t ld_dbc = 0;
  float* work = nullptr;  // scan_backward_work(T, N) floats
};

constexpr int kScanMaxState = 256;  // largest state size the kernels take
constexpr int kScanMaxLanes = 16;   // widest vector of any kernel table
constexpr int kConvMaxTaps = 16;    // most taps dwconv_row takes

inline int64_t scan_backward_work(int64_t T, int64_t N) { return T * N * (3 * kScanMaxLanes + 1); }

}  // namespace strata::kernels

namespace strata::kernels {

// The scalar references (kernels_ssm_scalar.cpp), also the scalar table's entries.
void scan_forward_scalar(const ScanArgs& a);
void scan_backward_scalar(const ScanGradArgs& a);
void dwconv_row_scalar(const float* const* in, const float* w, int64_t ldw, const float* bias, int64_t k, int64_t n,
                       float* y, bool silu);
void softplus_bias_scalar(float* x, const float* bias, int64_t n);
void mul_exp_scalar(const float* x, const float* a, const float* b, float s, float* y, int64_t n);

}  // namespace strata::kernels
