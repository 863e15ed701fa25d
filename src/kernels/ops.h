// Multi-threaded operations over whole tensors, built from the active kernel
// table. These are what modules call.
#pragma once
#include <cstdint>

#include "strata/tensor.h"

namespace strata::ops {

// y[M, N] = x[M, K] · w[N, K]ᵀ with w F32 or BF16; split over the threads by
// weight rows, so each weight row is read once per call for small M.
void matmul(const float* x, int64_t M, const Tensor& w, float* y);

// Backward-pass products, F32, split over the threads:
// y[M, K] = a[M, N] · b[N, K]
void matmul_nn(const float* a, int64_t M, int64_t N, const float* b, int64_t K, float* y);
// y[N, K] += a[M, N]ᵀ · b[M, K]   (weight gradients: dW += dYᵀ X)
void matmul_tn_acc(const float* a, int64_t M, int64_t N, const float* b, int64_t K, float* y);
void transpose_f32(const float* a, int64_t rows, int64_t cols, float* at);
// y[M, N] = x[M, K] · w[N, K]ᵀ given wt = wᵀ [K, N], in outer-product form: no
// horizontal sums, the better form when K is short (a classifier over a small width).
void matmul_wt(const float* x, int64_t M, int64_t K, const float* wt, int64_t N, float* y);

// out[i, :] = table[ids[i], :] as F32 (ids are checked by the caller).
void embed(const Tensor& table, const int32_t* ids, int64_t n, float* out);

// Row-wise RMSNorm of rows x n.
void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps);
// Its backward, with r = 1/sqrt(mean(x^2) + eps) per row and u = w * dy:
//   dx = r * u - x * r^3 * sum(u * x) / n   (overwritten),
//   dw += sum over rows of dy * x * r       (rows in order: the same sums for any thread count).
void rmsnorm_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t rows, int64_t n,
                      float eps);

}  // namespace strata::ops
