// Multi-threaded operations over whole tensors, built from the kernel table
// of an execution context (kernels/exec.h). These are what modules call.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/exec.h"
#include "strata/tensor.h"

namespace strata::ops {

// y[M, N] = x[M, K] · w[N, K]ᵀ with w F32 or BF16; split over the threads by
// weight rows, so each weight row is read once per call for small M.
void matmul(const Exec& ex, const float* x, int64_t M, const Tensor& w, float* y);

// Training products, through `gemm` below in the context's precision:
// y[M, K] = a[M, N] · b[N, K]   (input gradients: dX = dY W)
void matmul_nn(const Exec& ex, const float* a, int64_t M, int64_t N, const float* b, int64_t K, float* y);
// y[N, K] += a[M, N]ᵀ · b[M, K]   (weight gradients: dW += dYᵀ X)
void matmul_tn_acc(const Exec& ex, const float* a, int64_t M, int64_t N, const float* b, int64_t K, float* y);
// y = x · wᵀ like `matmul`, for training forwards: F32 weights go through the
// packed GEMM (faster for many rows; sums in another order than decode's).
void matmul_train(const Exec& ex, const float* x, int64_t M, const Tensor& w, float* y);

// Element (i, j) of a matrix view is data[i*rs + j*cs]: any strides, so a
// transposed operand is a view, never a copy.
struct MatRef {
  const float* data;
  int64_t rs, cs;
};

// c[M, N] = a[M, K] · b[K, N] (+ c if accumulate), blocked and packed
// (src/kernels/gemm.cpp), in the context's precision (F32 by oneDNN where the
// context uses it). Split over the threads by rows or columns of c (oneDNN:
// blocks, or quarters of K, sized from the problem only), so each element is
// summed in the same order for any thread count. Used by training; inference
// keeps `matmul`, whose sums match decode bit for bit.
void gemm(const Exec& ex, int64_t M, int64_t N, int64_t K, MatRef a, MatRef b, float* c, int64_t ldc,
          bool accumulate);
// A B operand packed once for many gemm calls (the classifier meets every
// chunk of rows with the same head), for the context it was packed with.
struct PackedB {
  PackedB(const Exec& ex, int64_t K, int64_t N, MatRef b);
  int64_t K, N;
  int nr;
  bool bf16 = false;
  bool onednn = false;         // oneDNN backend: nothing packed, b kept as a view (must outlive this)
  MatRef onednn_view{};
  std::vector<float> data;     // F32 panels
  std::vector<uint16_t> vnni;  // BF16 in AMX tiles (kernels.h)
};
// The same product with B prepacked; split over the threads by rows of c (with
// oneDNN: the plain gemm on the kept view).
void gemm(const Exec& ex, int64_t M, MatRef a, const PackedB& b, float* c, int64_t ldc, bool accumulate);

// out[i, :] = table[ids[i], :] as F32 (ids are checked by the caller).
void embed(const Exec& ex, const Tensor& table, const int32_t* ids, int64_t n, float* out);

// Row-wise RMSNorm of rows x n.
void rmsnorm(const Exec& ex, const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps);
// Its backward, with r = 1/sqrt(mean(x^2) + eps) per row and u = w * dy:
//   dx = r * u - x * r^3 * sum(u * x) / n   (overwritten),
//   dw += sum over rows of dy * x * r       (rows in order: the same sums for any thread count).
// w null: unit weights; dw null: no weight gradient.
void rmsnorm_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t rows, int64_t n,
                      float eps);

}  // namespace strata::ops
