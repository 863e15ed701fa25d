#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "strata/error.h"

namespace strata::ops {

namespace {

// From 16 tokens (the BF16 products' minimum) widening quantized weights to
// BF16 panels beats the integer products: 1.16x at 16 tokens, 1.7-2x from 64
// (TinyLlama Q8_0 / Q4_K_M, docs/quantization.md).
constexpr int64_t kQuantBf16MinRows = 16;

// BF16 products (AMX or AVX512-BF16): pack the activations once (split over the threads by token
// blocks), then split the weight rows in multiples of 32 over the threads.
const uint16_t* pack_x_bf16(const kernels::Table& kt, const float* x, int64_t M, int64_t K) {
  static thread_local std::vector<uint16_t> packed;
  packed.resize(static_cast<size_t>(kernels::bf16_packed_x_elems(M, K)));
  uint16_t* p = packed.data();
  parallel_for((M + 15) / 16, 1, [&](int64_t b, int64_t e) { kt.bf16_pack_x(x, M, K, p, b, e); });
  return p;
}

void matmul_bf16_products(const kernels::Table& kt, const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N,
                float* y) {
  const uint16_t* p = pack_x_bf16(kt, x, M, K);
  const int64_t n16 = N / 16 * 16;
  const int64_t threads = num_threads();
  int64_t grain = (n16 + threads - 1) / threads;
  grain = (grain + 31) / 32 * 32;
  parallel_for(n16, grain, [&](int64_t b, int64_t e) { kt.bf16_matmul(p, M, K, w + b * K, e - b, y + b, N); });
  if (n16 < N) kt.matmul_bf16(x, K, M, K, w + n16 * K, K, N - n16, y + n16, N);
}

// Quantized weights against many tokens (prefill): the integer products
// spend more time on block scales than on multiplies, so where BF16 products
// exist each thread widens a panel of weight rows to BF16 once (cache
// resident, reused by every token) and multiplies it as stored BF16 weights.
void matmul_quant_bf16_products(const kernels::Table& kt, const float* x, int64_t M, int64_t K, const Tensor& w,
                                float* y) {
  const int64_t N = w.dim(0);
  const uint16_t* p = pack_x_bf16(kt, x, M, K);
  // Panels of about 256 KB stay in L2 while every token block passes (from
  // 128 KB to 4 MB measured alike on TinyLlama).
  const int64_t panel = std::clamp<int64_t>((256 << 10) / (2 * K) / 16 * 16, 16, 128);
  const size_t wrow = row_bytes(w.dtype, K);
  const uint8_t* wd = static_cast<const uint8_t*>(w.data);
  parallel_for(N / 16, (N / 16 + num_threads() * 2 - 1) / (num_threads() * 2), [&](int64_t b, int64_t e) {
    thread_local std::vector<uint16_t> rows;
    rows.resize(static_cast<size_t>(panel * K));
    for (int64_t n0 = b * 16; n0 < e * 16; n0 += panel) {
      const int64_t n = std::min(panel, e * 16 - n0);
      kt.dequant_bf16(w.dtype, wd + n0 * wrow, wrow, n, K, rows.data());
      kt.bf16_matmul(p, M, K, rows.data(), n, y + n0, N);
    }
  });
}

}  // namespace

void matmul(const Exec& ex, const float* x, int64_t M, const Tensor& w, float* y) {
  const int64_t N = w.dim(0), K = w.dim(1);
  const kernels::Table& kt = ex.kernels();
  if (kt.bf16_matmul && w.dtype == DType::BF16 && M >= 16 && K % 32 == 0 && N >= 16)
    return matmul_bf16_products(kt, x, M, K, w.u16(), N, y);
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
  } else if (is_quantized(w.dtype)) {
    if (kt.bf16_matmul && kt.dequant_bf16 && M >= kQuantBf16MinRows && N % 16 == 0)
      return matmul_quant_bf16_products(kt, x, M, K, w, y);
    // Activations quantized once per call (per token), then integer products.
    const size_t arow = quant::act_row_bytes(w.dtype, K), wrow = row_bytes(w.dtype, K);
    thread_local std::vector<uint8_t> act;
    if (act.size() < arow * static_cast<size_t>(M)) act.resize(arow * static_cast<size_t>(M));
    uint8_t* a = act.data();
    parallel_for(M, M * K < (1 << 16) ? M : 4, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) quant::quantize_act_row(w.dtype, x + i * K, a + i * arow, K);
    });
    const uint8_t* wd = static_cast<const uint8_t*>(w.data);
    parallel_for(N, grain, [&](int64_t b, int64_t e) { kt.quant_matmul(w.dtype, a, M, K, wd + b * wrow, wrow, e - b, y + b, N); });
  } else {
    fail("matmul: unsupported weight dtype ", dtype_name(w.dtype));
  }
}

void matmul_nn(const Exec& ex, const float* a, int64_t M, int64_t N, const float* b, int64_t K, float* y) {
  gemm(ex, M, K, N, {a, N, 1}, {b, K, 1}, y, K, false);
}

void matmul_tn_acc(const Exec& ex, const float* a, int64_t M, int64_t N, const float* b, int64_t K, float* y) {
  gemm(ex, N, K, M, {a, 1, N}, {b, K, 1}, y, K, true);
}

void matmul_train(const Exec& ex, const float* x, int64_t M, const Tensor& w, float* y) {
  if (w.dtype != DType::F32) return matmul(ex, x, M, w, y);
  const int64_t N = w.dim(0), K = w.dim(1);
  gemm(ex, M, N, K, {x, K, 1}, {w.f32(), 1, K}, y, N, false);
}

void embed(const Exec& ex, const Tensor& table, const int32_t* ids, int64_t n, float* out) {
  const int64_t D = table.dim(1);
  const kernels::Table& kt = ex.kernels();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = ids[i];
    if (table.dtype == DType::F32) {
      const float* src = table.f32() + row * D;
      for (int64_t j = 0; j < D; ++j) out[i * D + j] = src[j];
    } else if (table.dtype == DType::BF16) {
      kt.bf16_to_f32(table.u16() + row * D, out + i * D, D);
    } else if (table.dtype == DType::F16 || is_quantized(table.dtype)) {
      to_f32(table.dtype, static_cast<const uint8_t*>(table.data) + row * row_bytes(table.dtype, D), out + i * D, D);
    } else {
      fail("embedding: unsupported dtype ", dtype_name(table.dtype));
    }
  }
}

void rmsnorm(const Exec& ex, const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
  const kernels::Table& kt = ex.kernels();
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
        dot += static_cast<double>(w ? w[i] : 1.0f) * dyr[i] * xr[i];
      }
      const double r = 1.0 / std::sqrt(ss / n + eps);
      const double c = r * r * r * dot / n;
      for (int64_t i = 0; i < n; ++i) dx[row * n + i] = static_cast<float>(r * (w ? w[i] : 1.0f) * dyr[i] - xr[i] * c);
    }
  });
  if (!dw) return;
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
