#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "strata/error.h"

namespace strata::ops {

namespace {

// AMX path: pack the activations once (split over the threads by token
// blocks), then split the weight rows in multiples of 32 over the threads.
void matmul_amx(const kernels::Table& kt, const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N,
                float* y) {
  static thread_local std::vector<uint16_t> packed;
  packed.resize(static_cast<size_t>(kernels::amx_packed_elems(M, K)));
  uint16_t* p = packed.data();
  parallel_for((M + 15) / 16, 1, [&](int64_t b, int64_t e) { kt.amx_pack_x(x, M, K, p, b, e); });
  const int64_t n16 = N / 16 * 16;
  const int64_t threads = num_threads();
  int64_t grain = (n16 + threads - 1) / threads;
  grain = (grain + 31) / 32 * 32;
  parallel_for(n16, grain, [&](int64_t b, int64_t e) { kt.amx_matmul_bf16(p, M, K, w + b * K, e - b, y + b, N); });
  if (n16 < N) kt.matmul_bf16(x, K, M, K, w + n16 * K, K, N - n16, y + n16, N);
}

}  // namespace

void matmul(const float* x, int64_t M, const Tensor& w, float* y) {
  const int64_t N = w.dim(0), K = w.dim(1);
  const kernels::Table& kt = kernels::active();
  if (kt.amx_matmul_bf16 && w.dtype == DType::BF16 && M >= 16 && K % 32 == 0 && N >= 16)
    return matmul_amx(kt, x, M, K, w.u16(), N, y);
  // Chunks of weight rows: several per thread for balance, a multiple of 16 rows.
  const int64_t threads = num_threads();
  int64_t grain = (N + threads * 4 - 1) / (threads * 4);
  grain = (grain + 15) / 16 * 16;
  if (M * N * K < (1 << 16)) grain = N;  // tiny: not worth waking threads
  if (w.dtype == DType::F32) {
    const float* wd = w.f32();
    parallel_for(N, grain, [&](int64_t b, int64_t e) { kt.matmul_f32(x, K, M, K, wd + b * K, K, e - b, y + b, N); });
  } else if (w.dtype == DType::BF16) {
    const uint16_t* wd = w.u16();
    parallel_for(N, grain, [&](int64_t b, int64_t e) { kt.matmul_bf16(x, K, M, K, wd + b * K, K, e - b, y + b, N); });
  } else {
    fail("matmul: unsupported weight dtype ", dtype_name(w.dtype));
  }
}

namespace {

// at[cols, rows] = a[rows, cols]ᵀ in 32 x 32 blocks (both sides stay in cache).
void transpose(const float* a, int64_t rows, int64_t cols, float* at) {
  constexpr int64_t kB = 32;
  parallel_for((rows + kB - 1) / kB, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t bi = lo; bi < hi; ++bi)
      for (int64_t j0 = 0; j0 < cols; j0 += kB)
        for (int64_t i = bi * kB; i < std::min(rows, (bi + 1) * kB); ++i)
          for (int64_t j = j0; j < std::min(cols, j0 + kB); ++j) at[j * rows + i] = a[i * cols + j];
  });
}

// y[M, N] = x[M, K] · w[N, K]ᵀ on raw F32 (the dot-product kernel), split over w's rows.
void matmul_nt(const float* x, int64_t M, int64_t K, const float* w, int64_t N, float* y) {
  const kernels::Table& kt = kernels::active();
  const int64_t threads = num_threads();
  int64_t grain = (N + threads * 4 - 1) / (threads * 4);
  grain = (grain + 15) / 16 * 16;
  parallel_for(N, grain, [&](int64_t b, int64_t e) { kt.matmul_f32(x, K, M, K, w + b * K, K, e - b, y + b, N); });
}

}  // namespace

// y[M, K] = a[M, N] · b[N, K]: outer products over n in blocks of 512 (the
// slice of b stays in L2), rows of y split over the threads.
void matmul_nn(const float* a, int64_t M, int64_t N, const float* b, int64_t K, float* y) {
  const kernels::Table& kt = kernels::active();
  parallel_for(M, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) std::fill(y + r * K, y + (r + 1) * K, 0.0f);
    for (int64_t n0 = 0; n0 < N; n0 += 512) {
      const int64_t n = std::min<int64_t>(512, N - n0);
      kt.outer_acc(a + lo * N + n0, 1, N, n, hi - lo, b + n0 * K, K, K, y + lo * K, K);
    }
  });
}

void matmul_tn_acc(const float* a, int64_t M, int64_t N, const float* b, int64_t K, float* y) {
  const kernels::Table& kt = kernels::active();
  // Output rows split over the threads; the rows (examples) are consumed in
  // blocks of 256 so the slice of b in use stays in L2.
  parallel_for(N, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t i0 = 0; i0 < M; i0 += 256) {
      const int64_t m = std::min<int64_t>(256, M - i0);
      kt.outer_acc(a + i0 * N + lo, N, 1, m, hi - lo, b + i0 * K, K, K, y + lo * K, K);
    }
  });
}

void transpose_f32(const float* a, int64_t rows, int64_t cols, float* at) { transpose(a, rows, cols, at); }

void matmul_wt(const float* x, int64_t M, int64_t K, const float* wt, int64_t N, float* y) {
  const kernels::Table& kt = kernels::active();
  std::vector<float> xt(static_cast<size_t>(K * M));
  transpose(x, M, K, xt.data());
  const float* a = xt.data();
  // Column blocks of 256 (a K x 256 slice of wt stays in L2) over the threads.
  parallel_for(N, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t r = 0; r < M; ++r) std::fill(y + r * N + lo, y + r * N + hi, 0.0f);
    kt.outer_acc(a, M, 1, K, M, wt + lo, N, hi - lo, y + lo, N);
  });
}

void embed(const Tensor& table, const int32_t* ids, int64_t n, float* out) {
  const int64_t D = table.dim(1);
  const kernels::Table& kt = kernels::active();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = ids[i];
    if (table.dtype == DType::F32) {
      const float* src = table.f32() + row * D;
      for (int64_t j = 0; j < D; ++j) out[i * D + j] = src[j];
    } else if (table.dtype == DType::BF16) {
      kt.bf16_to_f32(table.u16() + row * D, out + i * D, D);
    } else {
      fail("embedding: unsupported dtype ", dtype_name(table.dtype));
    }
  }
}

void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
  const kernels::Table& kt = kernels::active();
  parallel_for(rows, rows * n < (1 << 15) ? rows : 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) kt.rmsnorm(x + r * n, w, y + r * n, n, eps);
  });
}

void rmsnorm_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t rows, int64_t n,
                      float eps) {
  parallel_for(rows, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const float* xr = x + row * n;
      const float* dyr = dy + row * n;
      double ss = 0, dot = 0;
      for (int64_t i = 0; i < n; ++i) {
        ss += static_cast<double>(xr[i]) * xr[i];
        dot += static_cast<double>(w[i]) * dyr[i] * xr[i];
      }
      const double r = 1.0 / std::sqrt(ss / n + eps);
      const double c = r * r * r * dot / n;
      for (int64_t i = 0; i < n; ++i) dx[row * n + i] = static_cast<float>(r * w[i] * dyr[i] - xr[i] * c);
    }
  });
  for (int64_t row = 0; row < rows; ++row) {
    const float* xr = x + row * n;
    const float* dyr = dy + row * n;
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float r = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
    for (int64_t i = 0; i < n; ++i) dw[i] += dyr[i] * xr[i] * r;
  }
}

}  // namespace strata::ops
