// The optimised kernels, written once over a vector type V (simd_avx2.h,
// simd_avx512.h) and instantiated in one translation unit per ISA. Everything
// here lives in an anonymous namespace and uses no std:: templates, so no
// ISA-specific code can leak into the portable part of the binary through
// shared inline functions.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/gemm_pack.h"
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
inline void tile(const float* x, int64_t ldx, int64_t K, const WT* w, int64_t ldw, float* y, int64_t ldy) {
  using R = typename V::R;
  R acc[RX][RW];
  for (int i = 0; i < RX; ++i)
    for (int j = 0; j < RW; ++j) acc[i][j] = V::zero();
  const int64_t kv = K / V::kWidth * V::kWidth;
  for (int64_t k = 0; k < kv; k += V::kWidth) {
    if constexpr (RX == 1) {
      // Decode streams every weight once: while this tile's rows are read,
      // bring the next tile's rows (they follow in memory) into the cache,
      // a line per row every 64 bytes of this one, so each tile starts warm.
      // Prefetches never fault, past the matrix end included.
      if ((k * sizeof(WT)) % 64 == 0)
        for (int j = 0; j < RW; ++j) __builtin_prefetch(w + (RW + j) * ldw + k, 0, 2);
    }
    R xv[RX];
    for (int i = 0; i < RX; ++i) xv[i] = V::load(x + i * ldx + k);
    for (int j = 0; j < RW; ++j) {
      const R wv = load_w<V>(w + j * ldw + k);
      for (int i = 0; i < RX; ++i) acc[i][j] = V::fma(xv[i], wv, acc[i][j]);
    }
  }
  for (int i = 0; i < RX; ++i)
    for (int j = 0; j < RW; ++j) {
      float s = V::reduce_add(acc[i][j]);
      for (int64_t k = kv; k < K; ++k) s += x[i * ldx + k] * to_float(w[j * ldw + k]);
      y[i * ldy + j] = s;
    }
}

// tile<V, RX, rw> for a run-time rw in [1, RWMAX].
template <class V, int RX, int RWMAX, class WT>
inline void tile_rw(int rw, const float* x, int64_t ldx, int64_t K, const WT* w, int64_t ldw, float* y, int64_t ldy) {
  if constexpr (RWMAX >= 1) {
    if (rw == RWMAX) return tile<V, RX, RWMAX>(x, ldx, K, w, ldw, y, ldy);
    tile_rw<V, RX, RWMAX - 1>(rw, x, ldx, K, w, ldw, y, ldy);
  }
}

template <class V, class WT>
void matmul(const float* x, int64_t ldx, int64_t M, int64_t K, const WT* w, int64_t ldw, int64_t N, float* y,
            int64_t ldy) {
  constexpr int RX = V::kRowsX, RW = V::kRowsW, RG = V::kRowsWGemv;
  if (M < RX) {
    // Decode: few activation rows; stream each weight row once per activation row.
    for (int64_t j = 0; j < N; j += RG) {
      const int rw = static_cast<int>(N - j < RG ? N - j : RG);
      for (int64_t i = 0; i < M; ++i)
        tile_rw<V, 1, RG>(rw, x + i * ldx, ldx, K, w + j * ldw, ldw, y + i * ldy + j, ldy);
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
        if (rw == RW) tile<V, RX, RW>(x + i * ldx, ldx, K, w + j * ldw, ldw, y + i * ldy + j, ldy);
        else tile_rw<V, RX, RW>(rw, x + i * ldx, ldx, K, w + j * ldw, ldw, y + i * ldy + j, ldy);
      }
      for (; i < i1; ++i) tile_rw<V, 1, RW>(rw, x + i * ldx, ldx, K, w + j * ldw, ldw, y + i * ldy + j, ldy);
    }
  }
}

template <class V>
void matmul_f32(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw, int64_t N, float* y,
                int64_t ldy) {
  matmul<V>(x, ldx, M, K, w, ldw, N, y, ldy);
}
template <class V>
void matmul_bf16(const float* x, int64_t ldx, int64_t M, int64_t K, const uint16_t* w, int64_t ldw, int64_t N,
                 float* y, int64_t ldy) {
  matmul<V>(x, ldx, M, K, w, ldw, N, y, ldy);
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

// RR query rows x ND vectors of the value dimension, accumulated over keys in
// increasing t with the same fma as axpy: each row's keys before the common
// range, the keys every row has, then each row's own remaining keys.
template <class V, int RR, int ND>
inline void pv_tile(const float* p, int64_t ldp, const int64_t* begin, const int64_t* end, const float* v,
                    int64_t ldv, float* out, int64_t ldo, bool accumulate) {
  using R = typename V::R;
  R acc[RR][ND];
  for (int i = 0; i < RR; ++i)
    for (int j = 0; j < ND; ++j) acc[i][j] = accumulate ? V::load(out + i * ldo + j * V::kWidth) : V::zero();
  int64_t lo = begin[0], hi = end[0];
  for (int i = 1; i < RR; ++i) {
    lo = begin[i] > lo ? begin[i] : lo;
    hi = end[i] < hi ? end[i] : hi;
  }
  auto own = [&](int i, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const R pv = V::set1(p[i * ldp + t]);
      for (int j = 0; j < ND; ++j) acc[i][j] = V::fma(pv, V::load(v + t * ldv + j * V::kWidth), acc[i][j]);
    }
  };
  if (lo >= hi) {  // no key in common: row by row
    for (int i = 0; i < RR; ++i) own(i, begin[i], end[i]);
  } else {
    for (int i = 0; i < RR; ++i) own(i, begin[i], lo);
    for (int64_t t = lo; t < hi; ++t) {
      R vv[ND];
      for (int j = 0; j < ND; ++j) vv[j] = V::load(v + t * ldv + j * V::kWidth);
      for (int i = 0; i < RR; ++i) {
        const R pv = V::set1(p[i * ldp + t]);
        for (int j = 0; j < ND; ++j) acc[i][j] = V::fma(pv, vv[j], acc[i][j]);
      }
    }
    for (int i = 0; i < RR; ++i) own(i, hi, end[i]);
  }
  for (int i = 0; i < RR; ++i)
    for (int j = 0; j < ND; ++j) V::store(out + i * ldo + j * V::kWidth, acc[i][j]);
}

template <class V, int RR, int NDMAX>
inline void pv_tile_nd(int nd, const float* p, int64_t ldp, const int64_t* begin, const int64_t* end, const float* v,
                       int64_t ldv, float* out, int64_t ldo, bool accumulate) {
  if constexpr (NDMAX >= 1) {
    if (nd == NDMAX) return pv_tile<V, RR, NDMAX>(p, ldp, begin, end, v, ldv, out, ldo, accumulate);
    pv_tile_nd<V, RR, NDMAX - 1>(nd, p, ldp, begin, end, v, ldv, out, ldo, accumulate);
  }
}

template <class V>
void attn_pv(const float* p, int64_t ldp, int64_t rows, const int64_t* begin, const int64_t* end, const float* v,
             int64_t ldv, int64_t dim, float* out, int64_t ldo, bool accumulate) {
  constexpr int RR = 4, NDMAX = 4;
  const int64_t dv = dim / V::kWidth * V::kWidth;
  for (int64_t r0 = 0; r0 < rows; r0 += RR) {
    const int rr = static_cast<int>(rows - r0 < RR ? rows - r0 : RR);
    for (int64_t d0 = 0; d0 < dv; d0 += NDMAX * V::kWidth) {
      const int nd = static_cast<int>((dv - d0) / V::kWidth < NDMAX ? (dv - d0) / V::kWidth : NDMAX);
      const float* pr = p + r0 * ldp;
      float* o = out + r0 * ldo + d0;
      if (rr == RR) pv_tile_nd<V, RR, NDMAX>(nd, pr, ldp, begin + r0, end + r0, v + d0, ldv, o, ldo, accumulate);
      else
        for (int i = 0; i < rr; ++i)
          pv_tile_nd<V, 1, NDMAX>(nd, pr + i * ldp, ldp, begin + r0 + i, end + r0 + i, v + d0, ldv, o + i * ldo, ldo,
                                  accumulate);
    }
    // The columns past the last full vector, as axpy's scalar tail computes them.
    for (int i = 0; i < rr; ++i) {
      float* o = out + (r0 + i) * ldo;
      if (!accumulate)
        for (int64_t d = dv; d < dim; ++d) o[d] = 0.0f;
      for (int64_t t = begin[r0 + i]; t < end[r0 + i]; ++t) {
        const float a = p[(r0 + i) * ldp + t];
        for (int64_t d = dv; d < dim; ++d) o[d] += a * v[t * ldv + d];
      }
    }
  }
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
void silu_mul_backward(const float* gate, const float* up, float* d, float* dgate, int64_t n) {
  using R = typename V::R;
  const R one = V::set1(1.0f);
  auto block = [&](const float* g_in, const float* u_in, float* d_io, float* dg_out) {
    const R g = V::load(g_in), u = V::load(u_in), dh = V::load(d_io);
    const R s = V::div(one, V::add(one, vexp<V>(V::sub(V::zero(), g))));
    V::store(dg_out, V::mul(V::mul(V::mul(dh, u), s), V::add(one, V::mul(g, V::sub(one, s)))));
    V::store(d_io, V::mul(V::mul(dh, g), s));
  };
  const int64_t nv = n / V::kWidth * V::kWidth;
  for (int64_t i = 0; i < nv; i += V::kWidth) block(gate + i, up + i, d + i, dgate + i);
  if (nv == n) return;
  // The tail through one zero-padded vector.
  float g[V::kWidth] = {}, u[V::kWidth] = {}, dd[V::kWidth] = {}, dg[V::kWidth];
  for (int64_t i = nv; i < n; ++i) g[i - nv] = gate[i], u[i - nv] = up[i], dd[i - nv] = d[i];
  block(g, u, dd, dg);
  for (int64_t i = nv; i < n; ++i) d[i] = dd[i - nv], dgate[i] = dg[i - nv];
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

// GEMM register block: MR rows (broadcast from the packed A panel) x NV
// vectors (loaded from the packed B panel), MR * NV accumulators in registers.
// The sums start from zero and are added to C at the end, with C's lines
// prefetched first: the k loop hides their latency.
template <class V, int MR, int NV>
void gemm_micro(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, bool accumulate) {
  using R = typename V::R;
  constexpr int NR = NV * V::kWidth;
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; j += 16) __builtin_prefetch(c + i * ldc + j, 1, 3);
  R acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = V::zero();
  for (int64_t p = 0; p < kc; ++p) {
    R b[NV];
    for (int j = 0; j < NV; ++j) b[j] = V::load(bp + p * NR + j * V::kWidth);
    for (int i = 0; i < MR; ++i) {
      const R a = V::set1(ap[p * MR + i]);
      for (int j = 0; j < NV; ++j) acc[i][j] = V::fma(a, b[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) {
      float* cij = c + i * ldc + j * V::kWidth;
      V::store(cij, accumulate ? V::add(V::load(cij), acc[i][j]) : acc[i][j]);
    }
}

template <class V, int S>
float read_streams_n(const float* p, int64_t n) {
  using R = typename V::R;
  constexpr int W = V::kWidth;
  const int64_t part = n / S / (2 * W) * (2 * W);
  R acc[S][2];
  for (int s = 0; s < S; ++s) acc[s][0] = acc[s][1] = V::zero();
  for (int64_t i = 0; i < part; i += 2 * W)
    for (int s = 0; s < S; ++s) {
      acc[s][0] = V::add(acc[s][0], V::load(p + s * part + i));
      acc[s][1] = V::add(acc[s][1], V::load(p + s * part + i + W));
    }
  R t = V::zero();
  for (int s = 0; s < S; ++s) t = V::add(t, V::add(acc[s][0], acc[s][1]));
  float sum = V::reduce_add(t);
  for (int64_t i = S * part; i < n; ++i) sum += p[i];
  return sum;
}

template <class V>
float read_streams(const float* p, int64_t n, int streams) {
  switch (streams) {
    case 1: return read_streams_n<V, 1>(p, n);
    case 2: return read_streams_n<V, 2>(p, n);
    case 4: return read_streams_n<V, 4>(p, n);
    default: return read_streams_n<V, 8>(p, n);
  }
}

template <class V>
Table make_table() {
  return Table{matmul_f32<V>, matmul_bf16<V>, rmsnorm<V>,     softmax<V>,   silu_mul<V>, silu_mul_backward<V>,
               rope<V>,       dot<V>,         axpy<V>,        attn_pv<V>,   bf16_to_f32<V>,
               gemm_micro<V, V::kGemmMR, V::kGemmNV>,        V::kGemmMR,
               V::kGemmNV * V::kWidth,        pack_a_panels<V::kGemmMR>,    pack_b_panels<V::kGemmNV * V::kWidth>,
               read_streams<V>,               nullptr,        nullptr,      nullptr,
               nullptr,       nullptr};
}

}  // namespace
}  // namespace strata::kernels
