// The optimised kernels, written once over a vector type V (simd_avx2.h,
// simd_avx512.h) and instantiated in one translation unit per ISA. Everything
// here lives in an anonymous namespace and uses no std:: templates, so no
// ISA-specific code can leak into the portable part of the binary through
// shared inline functions.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"

namespace strata::kernels {
namespace {

inline float bf16_bits_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float to_float(float v) { return v; }
inline float to_float(uint16_t v) { return bf16_bits_to_f32(v); }

template <class V>
typename V::R load_w(const float* p) { return V::load(p); }
template <class V>
typename V::R load_w(const uint16_t* p) { return V::load_bf16(p); }

// exp(x) to about 1 ulp (Cephes polynomial after range reduction by ln 2).
template <class V>
typename V::R vexp(typename V::R x) {
  using R = typename V::R;
  x = V::min(V::max(x, V::set1(-87.3f)), V::set1(88.3f));
  const R n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  R r = V::fma(n, V::set1(-0.693359375f), x);
  r = V::fma(n, V::set1(2.12194440e-4f), r);
  R p = V::set1(1.9875691500e-4f);
  p = V::fma(p, r, V::set1(1.3981999507e-3f));
  p = V::fma(p, r, V::set1(8.3334519073e-3f));
  p = V::fma(p, r, V::set1(4.1665795894e-2f));
  p = V::fma(p, r, V::set1(1.6666665459e-1f));
  p = V::fma(p, r, V::set1(5.0000001201e-1f));
  p = V::fma(V::mul(p, r), r, V::add(r, V::set1(1.0f)));
  return V::mul(p, V::pow2(n));
}

// One micro-tile: RX activation rows against RW weight rows. Each output is a
// single accumulator chain over K in steps of the vector width, a fixed
// reduction, then the scalar tail: the same arithmetic for every tile shape.
template <class V, int RX, int RW, class WT>
inline void tile(const float* x, int64_t K, const WT* w, float* y, int64_t ldy) {
  using R = typename V::R;
  R acc[RX][RW];
  for (int i = 0; i < RX; ++i)
    for (int j = 0; j < RW; ++j) acc[i][j] = V::zero();
  const int64_t kv = K / V::kWidth * V::kWidth;
  for (int64_t k = 0; k < kv; k += V::kWidth) {
    R xv[RX];
    for (int i = 0; i < RX; ++i) xv[i] = V::load(x + i * K + k);
    for (int j = 0; j < RW; ++j) {
      const R wv = load_w<V>(w + j * K + k);
      for (int i = 0; i < RX; ++i) acc[i][j] = V::fma(xv[i], wv, acc[i][j]);
    }
  }
  for (int i = 0; i < RX; ++i)
    for (int j = 0; j < RW; ++j) {
      float s = V::reduce_add(acc[i][j]);
      for (int64_t k = kv; k < K; ++k) s += x[i * K + k] * to_float(w[j * K + k]);
      y[i * ldy + j] = s;
    }
}

// tile<V, RX, rw> for a run-time rw in [1, RWMAX].
template <class V, int RX, int RWMAX, class WT>
inline void tile_rw(int rw, const float* x, int64_t K, const WT* w, float* y, int64_t ldy) {
  if constexpr (RWMAX >= 1) {
    if (rw == RWMAX) return tile<V, RX, RWMAX>(x, K, w, y, ldy);
    tile_rw<V, RX, RWMAX - 1>(rw, x, K, w, y, ldy);
  }
}

// tile<V, rx, RW> for a run-time rx in [1, RXMAX].
template <class V, int RXMAX, int RW, class WT>
inline void tile_rx(int rx, const float* x, int64_t K, const WT* w, float* y, int64_t ldy) {
  if constexpr (RXMAX >= 1) {
    if (rx == RXMAX) return tile<V, RXMAX, RW>(x, K, w, y, ldy);
    tile_rx<V, RXMAX - 1, RW>(rx, x, K, w, y, ldy);
  }
}

template <class V, class WT>
void matmul(const float* x, int64_t M, int64_t K, const WT* w, int64_t N, float* y, int64_t ldy) {
  constexpr int RX = V::kRowsX, RW = V::kRowsW, RG = V::kRowsWGemv;
  if (M < RX) {
    // Decode: few activation rows; stream each weight row once per activation row.
    for (int64_t j = 0; j < N; j += RG) {
      const int rw = static_cast<int>(N - j < RG ? N - j : RG);
      for (int64_t i = 0; i < M; ++i) tile_rw<V, 1, RG>(rw, x + i * K, K, w + j * K, y + i * ldy + j, ldy);
    }
    return;
  }
  // Prefill: a chunk of activation rows stays in L2 while groups of RW weight
  // rows stay in L1 and meet every RX-row group of the chunk.
  const int64_t chunk = 64;
  for (int64_t i0 = 0; i0 < M; i0 += chunk) {
    const int64_t i1 = i0 + chunk < M ? i0 + chunk : M;
    for (int64_t j = 0; j < N; j += RW) {
      const int rw = static_cast<int>(N - j < RW ? N - j : RW);
      int64_t i = i0;
      for (; i + RX <= i1; i += RX) {
        if (rw == RW) tile<V, RX, RW>(x + i * K, K, w + j * K, y + i * ldy + j, ldy);
        else tile_rw<V, RX, RW>(rw, x + i * K, K, w + j * K, y + i * ldy + j, ldy);
      }
      for (; i < i1; ++i) tile_rw<V, 1, RW>(rw, x + i * K, K, w + j * K, y + i * ldy + j, ldy);
    }
  }
}

template <class V>
void matmul_f32(const float* x, int64_t M, int64_t K, const float* w, int64_t N, float* y, int64_t ldy) {
  matmul<V>(x, M, K, w, N, y, ldy);
}
template <class V>
void matmul_bf16(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N, float* y, int64_t ldy) {
  matmul<V>(x, M, K, w, N, y, ldy);
}

template <class V>
float dot(const float* a, const float* b, int64_t n) {
  typename V::R acc = V::zero();
  const int64_t nv = n / V::kWidth * V::kWidth;
  for (int64_t i = 0; i < nv; i += V::kWidth) acc = V::fma(V::load(a + i), V::load(b + i), acc);
  float s = V::reduce_add(acc);
  for (int64_t i = nv; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <class V>
void axpy(float a, const float* x, float* y, int64_t n) {
  const typename V::R av = V::set1(a);
  const int64_t nv = n / V::kWidth * V::kWidth;
  for (int64_t i = 0; i < nv; i += V::kWidth) V::store(y + i, V::fma(av, V::load(x + i), V::load(y + i)));
  for (int64_t i = nv; i < n; ++i) y[i] += a * x[i];
}

template <class V>
void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
  using R = typename V::R;
  R acc = V::zero();
  const int64_t nv = n / V::kWidth * V::kWidth;
  for (int64_t i = 0; i < nv; i += V::kWidth) {
    const R v = V::load(x + i);
    acc = V::fma(v, v, acc);
  }
  float ss = V::reduce_add(acc);
  for (int64_t i = nv; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / __builtin_sqrtf(ss / static_cast<float>(n) + eps);
  const R iv = V::set1(inv);
  for (int64_t i = 0; i < nv; i += V::kWidth) V::store(y + i, V::mul(V::load(w + i), V::mul(iv, V::load(x + i))));
  for (int64_t i = nv; i < n; ++i) y[i] = w[i] * (inv * x[i]);
}

// Applies a vector function to a tail of fewer than kWidth values through a
// zero-padded register-sized buffer, so tails get the vector arithmetic too.
template <class V, class F>
inline void map_tail(const float* src, float* dst, int64_t n, F f) {
  float buf[V::kWidth];
  for (int i = 0; i < V::kWidth; ++i) buf[i] = i < n ? src[i] : 0.0f;
  V::store(buf, f(V::load(buf)));
  for (int64_t i = 0; i < n; ++i) dst[i] = buf[i];
}

template <class V>
void softmax(float* x, int64_t n) {
  using R = typename V::R;
  const int64_t nv = n / V::kWidth * V::kWidth;
  float mx = x[0];
  if (nv > 0) {
    R m = V::load(x);
    for (int64_t i = V::kWidth; i < nv; i += V::kWidth) m = V::max(m, V::load(x + i));
    mx = V::reduce_max(m);
  }
  for (int64_t i = nv; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  const R mv = V::set1(mx);
  R acc = V::zero();
  for (int64_t i = 0; i < nv; i += V::kWidth) {
    const R e = vexp<V>(V::sub(V::load(x + i), mv));
    V::store(x + i, e);
    acc = V::add(acc, e);
  }
  float sum = V::reduce_add(acc);
  map_tail<V>(x + nv, x + nv, n - nv, [&](R v) { return vexp<V>(V::sub(v, mv)); });
  for (int64_t i = nv; i < n; ++i) sum += x[i];
  const float inv = 1.0f / sum;
  const R iv = V::set1(inv);
  for (int64_t i = 0; i < nv; i += V::kWidth) V::store(x + i, V::mul(V::load(x + i), iv));
  for (int64_t i = nv; i < n; ++i) x[i] *= inv;
}

template <class V>
typename V::R silu(typename V::R g) {
  return V::div(g, V::add(V::set1(1.0f), vexp<V>(V::sub(V::zero(), g))));
}

template <class V>
void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  const int64_t nv = n / V::kWidth * V::kWidth;
  for (int64_t i = 0; i < nv; i += V::kWidth) V::store(out + i, V::mul(silu<V>(V::load(gate + i)), V::load(up + i)));
  map_tail<V>(gate + nv, out + nv, n - nv, [](typename V::R g) { return silu<V>(g); });
  for (int64_t i = nv; i < n; ++i) out[i] *= up[i];
}

template <class V>
void rope(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
  using R = typename V::R;
  const int64_t half = head_dim / 2;
  const int64_t nv = half / V::kWidth * V::kWidth;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; i < nv; i += V::kWidth) {
      const R a = V::load(v + i), b = V::load(v + i + half), c = V::load(cos + i), s = V::load(sin + i);
      V::store(v + i, V::sub(V::mul(a, c), V::mul(b, s)));
      V::store(v + i + half, V::add(V::mul(b, c), V::mul(a, s)));
    }
    for (int64_t i = nv; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

template <class V>
void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  const int64_t nv = n / V::kWidth * V::kWidth;
  for (int64_t i = 0; i < nv; i += V::kWidth) V::store(dst + i, V::load_bf16(src + i));
  for (int64_t i = nv; i < n; ++i) dst[i] = bf16_bits_to_f32(src[i]);
}

template <class V>
Table make_table() {
  return Table{matmul_f32<V>, matmul_bf16<V>, rmsnorm<V>, softmax<V>, silu_mul<V>,
               rope<V>,       dot<V>,         axpy<V>,    bf16_to_f32<V>};
}

}  // namespace
}  // namespace strata::kernels
