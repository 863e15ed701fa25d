// Scalar reference kernels: the plainest correct loops, the yardstick for every
// optimised path.
#include <cmath>

#include "kernels/gemm_pack.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "strata/tensor.h"

namespace strata::kernels {
namespace {

void matmul_f32(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw, int64_t N, float* y,
                int64_t ldy) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += x[i * ldx + k] * w[j * ldw + k];
      y[i * ldy + j] = s;
    }
}

void matmul_bf16(const float* x, int64_t ldx, int64_t M, int64_t K, const uint16_t* w, int64_t ldw, int64_t N,
                 float* y, int64_t ldy) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += x[i * ldx + k] * bf16_to_f32(w[j * ldw + k]);
      y[i * ldy + j] = s;
    }
}

void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = w[i] * (inv * x[i]);
}

void softmax(float* x, int64_t n) {
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void silu_mul_backward(const float* gate, const float* up, float* d, float* dgate, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i], s = 1.0f / (1.0f + std::exp(-g)), dh = d[i];
    dgate[i] = dh * up[i] * s * (1.0f + g * (1.0f - s));
    d[i] = dh * g * s;
  }
}

void rope(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void attn_pv(const float* p, int64_t ldp, int64_t rows, const int64_t* begin, const int64_t* end, const float* v,
             int64_t ldv, int64_t dim, float* out, int64_t ldo, bool accumulate) {
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out + r * ldo;
    if (!accumulate)
      for (int64_t d = 0; d < dim; ++d) o[d] = 0.0f;
    for (int64_t t = begin[r]; t < end[r]; ++t) axpy(p[r * ldp + t], v + t * ldv, o, dim);
  }
}

float read_streams(const float* p, int64_t n, int streams) {
  const int64_t part = n / streams;
  float acc[8] = {};
  for (int64_t i = 0; i < part; ++i)
    for (int s = 0; s < streams; ++s) acc[s] += p[s * part + i];
  float sum = 0.0f;
  for (int s = 0; s < streams; ++s) sum += acc[s];
  for (int64_t i = streams * part; i < n; ++i) sum += p[i];
  return sum;
}

constexpr int kGemmMR = 4, kGemmNR = 4;

void gemm_micro(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, bool accumulate) {
  for (int i = 0; i < kGemmMR; ++i)
    for (int j = 0; j < kGemmNR; ++j) {
      float acc = 0.0f;
      for (int64_t p = 0; p < kc; ++p) acc += ap[p * kGemmMR + i] * bp[p * kGemmNR + j];
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc : acc;
    }
}

void bf16_to_f32_row(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

}  // namespace

const Table& scalar_table() {
  static const Table t = [] {
    Table r{matmul_f32, matmul_bf16, rmsnorm,  softmax, silu_mul, silu_mul_backward, rope,    dot,     axpy,
                       attn_pv,    bf16_to_f32_row, gemm_micro, kGemmMR, kGemmNR, pack_a_panels<kGemmMR>,
                       pack_b_panels<kGemmNR>, read_streams, nullptr, nullptr,
                       nullptr,    nullptr,         nullptr};
    r.scan_forward = scan_forward_scalar;
    r.scan_backward = scan_backward_scalar;
    r.dwconv_row = dwconv_row_scalar;
    r.softplus_bias = softplus_bias_scalar;
    r.mul_exp = mul_exp_scalar;
    r.quant_matmul = quant::matmul_scalar;
    return r;
  }();
  return t;
}

}  // namespace strata::kernels
