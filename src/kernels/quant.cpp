// Reference quantizers, dequantization and scalar products of the GGUF block
// formats (quant.h). The quantizers follow the arithmetic of ggml's reference
// ones step by step (same float operations in the same order), because files
// must quantize bit-identically to llama.cpp's (tests compare blocks with
// ggml's own functions where a llama.cpp build is at hand).
#include "kernels/quant.h"
#include "kernels/quant_dequant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "strata/error.h"

namespace strata::quant {

namespace {

constexpr float kGroupMaxEps = 1e-15f;

float h2f(uint16_t h) { return f16_to_f32(h); }
uint16_t f2h(float f) { return f32_to_f16(f); }

// --- 32-value blocks --------------------------------------------------------

void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kBlock) {
    float amax = 0.0f;
    for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f2h(d);
    for (int j = 0; j < kBlock; ++j) y[i].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
  }
}

void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kBlock) {
    float amax = 0.0f, max = 0.0f;  // the value of largest magnitude, with its sign
    for (int j = 0; j < kBlock; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f2h(d);
    for (int j = 0; j < kBlock / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + kBlock / 2] * id + 8.5f)));
      y[i].qs[j] = static_cast<uint8_t>(lo | hi << 4);
    }
  }
}

void quantize_q4_1(const float* x, BlockQ4_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kBlock) {
    float min = x[0], max = x[0];
    for (int j = 1; j < kBlock; ++j) {
      min = std::min(min, x[j]);
      max = std::max(max, x[j]);
    }
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f2h(d);
    y[i].m = f2h(min);
    for (int j = 0; j < kBlock / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - min) * id + 0.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>((x[j + kBlock / 2] - min) * id + 0.5f)));
      y[i].qs[j] = static_cast<uint8_t>(lo | hi << 4);
    }
  }
}

// Q5_0 (symmetric, like Q4_0 with 16 levels each side) and Q5_1 (scale and min).
template <bool kMin, class Block>
void quantize_q5(const float* x, Block* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kBlock) {
    float d, id, min = 0;
    if constexpr (kMin) {
      float max = x[0];
      min = x[0];
      for (int j = 1; j < kBlock; ++j) {
        min = std::min(min, x[j]);
        max = std::max(max, x[j]);
      }
      d = (max - min) / 31.0f;
      y[i].m = f2h(min);
    } else {
      float amax = 0.0f, max = 0.0f;
      for (int j = 0; j < kBlock; ++j) {
        if (amax < std::fabs(x[j])) {
          amax = std::fabs(x[j]);
          max = x[j];
        }
      }
      d = max / -16.0f;
    }
    id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f2h(d);
    uint32_t qh = 0;
    for (int j = 0; j < kBlock / 2; ++j) {
      int lo, hi;
      if constexpr (kMin) {
        lo = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
        hi = static_cast<uint8_t>((x[j + kBlock / 2] - min) * id + 0.5f);
      } else {
        lo = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
        hi = std::min(31, static_cast<int>(static_cast<int8_t>(x[j + kBlock / 2] * id + 16.5f)));
      }
      y[i].qs[j] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
      qh |= static_cast<uint32_t>((lo & 0x10) >> 4) << j;
      qh |= static_cast<uint32_t>((hi & 0x10) >> 4) << (j + kBlock / 2);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

// --- K-quants ---------------------------------------------------------------

// Scale and min (returned negated in *neg_min) of n values on levels
// 0..nmax, by weighted least squares over nstep+1 candidate scales.
float fit_scale_min(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* neg_min, uint8_t* Laux,
                    float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
    sum_w += weights[i];
    sum_x += weights[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    std::memset(L, 0, static_cast<size_t>(n));
    *neg_min = -min;
    return 0.0f;
  }
  float iscale = nmax / (max - min), scale = 1 / iscale, best_err = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    const float diff = scale * L[i] + min - x[i];
    best_err += weights[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - min))));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float err = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        err += weights[i] * (diff * diff);
      }
      if (err < best_err) {
        std::memcpy(L, Laux, static_cast<size_t>(n));
        best_err = err;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *neg_min = -min;
  return scale;
}

// Symmetric scale of n values on levels -nmax..nmax-1 (stored + nmax in L),
// weights x², refined over 18 candidate scales around nmax / max.
float fit_scale_symmetric(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  auto level = [&](float iscale, int i) { return std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i]))); };
  float iscale = -nmax / max, sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = level(iscale, i);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = level(iscale, i);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + level(iscale, i));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q4_K and Q5_K share everything but the bits per value and the search of
// the fit: 8 sub-blocks of 32 with a 6-bit scale and min each, fitted with
// weights |x| + rms(x) of the sub-block.
template <int kBits>
void quantize_k_asym(const float* x, uint16_t* d_out, uint16_t* dmin_out, uint8_t* scales, uint8_t* L) {
  constexpr int nmax = (1 << kBits) - 1;
  uint8_t Laux[32];
  float weights[32], mins[8], sub_scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    sub_scales[j] = fit_scale_min(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, kBits == 4 ? -1.0f : -0.5f,
                                  0.1f, kBits == 4 ? 20 : 15);
    max_scale = std::max(max_scale, sub_scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  std::memset(scales, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * sub_scales[j])));
    const uint8_t lm = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * mins[j])));
    if (j < 4) {
      scales[j] = ls;
      scales[j + 4] = lm;
    } else {
      scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      scales[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      scales[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  *d_out = f2h(max_scale / 63.0f);
  *dmin_out = f2h(max_min / 63.0f);
  // Levels again against the scales as stored.
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    scale_min_k4(j, scales, &sc, &m);
    const float d = h2f(*d_out) * sc;
    if (d == 0.0f) continue;
    const float dm = h2f(*dmin_out) * m;
    for (int ii = 0; ii < 32; ++ii)
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, nearest_int((x[32 * j + ii] + dm) / d))));
  }
}

void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t nb) {
  uint8_t L[kSuper];
  for (int64_t i = 0; i < nb; ++i, x += kSuper) {
    quantize_k_asym<4>(x, &y[i].d, &y[i].dmin, y[i].scales, L);
    uint8_t* q = y[i].qs;
    for (int j = 0; j < kSuper; j += 64, q += 32)
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
  }
}

void quantize_q5_k(const float* x, BlockQ5_K* y, int64_t nb) {
  uint8_t L[kSuper];
  for (int64_t i = 0; i < nb; ++i, x += kSuper) {
    quantize_k_asym<5>(x, &y[i].d, &y[i].dmin, y[i].scales, L);
    std::memset(y[i].qh, 0, sizeof y[i].qh);
    uint8_t* ql = y[i].qs;
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < kSuper; n += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j], l2 = L[n + j + 32];
        if (l1 > 15) { l1 -= 16; y[i].qh[j] |= m1; }
        if (l2 > 15) { l2 -= 16; y[i].qh[j] |= m2; }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
    }
  }
}

void quantize_q6_k(const float* x, BlockQ6_K* y, int64_t nb) {
  int8_t L[kSuper];
  float scales[kSuper / 16];
  for (int64_t i = 0; i < nb; ++i, x += kSuper) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < kSuper / 16; ++ib) {
      const float scale = fit_scale_symmetric(16, 32, x + 16 * ib, L + 16 * ib);
      scales[ib] = scale;
      if (std::fabs(scale) > max_abs_scale) {
        max_abs_scale = std::fabs(scale);
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof y[i]);
      continue;
    }
    const float iscale = -128.0f / max_scale;
    y[i].d = f2h(1 / iscale);
    for (int ib = 0; ib < kSuper / 16; ++ib)
      y[i].scales[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
    for (int j = 0; j < kSuper / 16; ++j) {
      const float d = h2f(y[i].d) * y[i].scales[j];
      if (d == 0.0f) continue;
      for (int ii = 0; ii < 16; ++ii)
        L[16 * j + ii] = static_cast<int8_t>(std::max(-32, std::min(31, nearest_int(x[16 * j + ii] / d))) + 32);
    }
    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < kSuper; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
        ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                     ((L[j + l + 96] >> 4) << 6));
      }
    }
  }
}

}  // namespace

void quantize_row(DType type, const float* x, void* out, int64_t n) {
  const int64_t nb = n / dtype_block(type);
  if (n % dtype_block(type) != 0) fail("quantize ", dtype_name(type), ": ", n, " values are not whole blocks");
  switch (type) {
    case DType::Q8_0: return quantize_q8_0(x, static_cast<BlockQ8_0*>(out), nb);
    case DType::Q4_0: return quantize_q4_0(x, static_cast<BlockQ4_0*>(out), nb);
    case DType::Q4_1: return quantize_q4_1(x, static_cast<BlockQ4_1*>(out), nb);
    case DType::Q5_0: return quantize_q5<false>(x, static_cast<BlockQ5_0*>(out), nb);
    case DType::Q5_1: return quantize_q5<true>(x, static_cast<BlockQ5_1*>(out), nb);
    case DType::Q4_K: return quantize_q4_k(x, static_cast<BlockQ4_K*>(out), nb);
    case DType::Q5_K: return quantize_q5_k(x, static_cast<BlockQ5_K*>(out), nb);
    case DType::Q6_K: return quantize_q6_k(x, static_cast<BlockQ6_K*>(out), nb);
    default: fail("quantize: ", dtype_name(type), " is not a quantized type");
  }
}

void dequantize_row(DType type, const void* in, float* y, int64_t n) {
  if (n % dtype_block(type) != 0) fail("dequantize ", dtype_name(type), ": ", n, " values are not whole blocks");
  if (!dequantize_blocks(type, in, y, n / dtype_block(type), f16_to_f32))
    fail("dequantize: ", dtype_name(type), " is not a quantized type");
}

bool uses_q8k(DType type) { return type == DType::Q4_K || type == DType::Q5_K || type == DType::Q6_K; }

size_t act_row_bytes(DType weight_type, int64_t K) {
  return uses_q8k(weight_type) ? static_cast<size_t>(K / kSuper) * sizeof(ActQ8K)
                               : static_cast<size_t>(K / kBlock) * sizeof(ActQ8);
}

void quantize_act_row(DType weight_type, const float* x, void* act, int64_t K) {
  const int bs = uses_q8k(weight_type) ? kSuper : kBlock;
  for (int64_t b = 0; b < K / bs; ++b, x += bs) {
    float amax = 0;
    for (int j = 0; j < bs; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int8_t* qs;
    if (bs == kSuper) {
      ActQ8K& a = static_cast<ActQ8K*>(act)[b];
      a.d = d;
      qs = a.qs;
    } else {
      ActQ8& a = static_cast<ActQ8*>(act)[b];
      a.d = d;
      qs = a.qs;
    }
    for (int j = 0; j < bs; ++j) qs[j] = static_cast<int8_t>(nearest_int(x[j] * id));
    if (bs == kSuper) {
      ActQ8K& a = static_cast<ActQ8K*>(act)[b];
      for (int g = 0; g < kSuper / 16; ++g) {
        int s = 0;
        for (int j = 0; j < 16; ++j) s += qs[16 * g + j];
        a.bsums[g] = static_cast<int16_t>(s);
      }
    } else {
      int s = 0;
      for (int j = 0; j < kBlock; ++j) s += qs[j];
      static_cast<ActQ8*>(act)[b].sum = s;
    }
  }
}

float dot_scalar(DType type, const void* w_row, const void* act_row, int64_t K) {
  float sum = 0;
  if (!uses_q8k(type)) {
    const ActQ8* a = static_cast<const ActQ8*>(act_row);
    for (int64_t b = 0; b < K / kBlock; ++b) {
      int isum = 0;
      if (type == DType::Q8_0) {
        const BlockQ8_0& w = static_cast<const BlockQ8_0*>(w_row)[b];
        for (int j = 0; j < kBlock; ++j) isum += w.qs[j] * a[b].qs[j];
        sum += h2f(w.d) * a[b].d * static_cast<float>(isum);
      } else if (type == DType::Q5_0 || type == DType::Q5_1) {
        int q[kBlock];
        if (type == DType::Q5_0) unpack_q5(static_cast<const BlockQ5_0*>(w_row)[b], q);
        else unpack_q5(static_cast<const BlockQ5_1*>(w_row)[b], q);
        for (int j = 0; j < kBlock; ++j) isum += q[j] * a[b].qs[j];
        if (type == DType::Q5_0) {
          const BlockQ5_0& w = static_cast<const BlockQ5_0*>(w_row)[b];
          sum += h2f(w.d) * a[b].d * static_cast<float>(isum - 16 * a[b].sum);
        } else {
          const BlockQ5_1& w = static_cast<const BlockQ5_1*>(w_row)[b];
          sum += h2f(w.d) * a[b].d * static_cast<float>(isum) + h2f(w.m) * a[b].d * static_cast<float>(a[b].sum);
        }
      } else {
        const uint8_t* qs = type == DType::Q4_0 ? static_cast<const BlockQ4_0*>(w_row)[b].qs
                                                : static_cast<const BlockQ4_1*>(w_row)[b].qs;
        for (int j = 0; j < kBlock / 2; ++j) isum += (qs[j] & 0xF) * a[b].qs[j] + (qs[j] >> 4) * a[b].qs[j + 16];
        if (type == DType::Q4_0) {
          const BlockQ4_0& w = static_cast<const BlockQ4_0*>(w_row)[b];
          sum += h2f(w.d) * a[b].d * static_cast<float>(isum - 8 * a[b].sum);
        } else {
          const BlockQ4_1& w = static_cast<const BlockQ4_1*>(w_row)[b];
          sum += h2f(w.d) * a[b].d * static_cast<float>(isum) + h2f(w.m) * a[b].d * static_cast<float>(a[b].sum);
        }
      }
    }
    return sum;
  }
  const ActQ8K* a = static_cast<const ActQ8K*>(act_row);
  for (int64_t b = 0; b < K / kSuper; ++b) {
    int8_t q[kSuper];  // the weight levels, unpacked
    if (type == DType::Q6_K) {
      const BlockQ6_K& w = static_cast<const BlockQ6_K*>(w_row)[b];
      const uint8_t* ql = w.ql;
      const uint8_t* qh = w.qh;
      for (int n = 0; n < kSuper; n += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; ++l) {
          q[n + l] = static_cast<int8_t>((ql[l] & 0xF) | ((qh[l] & 3) << 4));
          q[n + l + 32] = static_cast<int8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
          q[n + l + 64] = static_cast<int8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
          q[n + l + 96] = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
      }
      int isum = 0;
      for (int g = 0; g < 16; ++g) {
        int s = 0;
        for (int j = 0; j < 16; ++j) s += q[16 * g + j] * a[b].qs[16 * g + j];
        isum += w.scales[g] * (s - 32 * a[b].bsums[g]);
      }
      sum += h2f(w.d) * a[b].d * static_cast<float>(isum);
      continue;
    }
    const uint8_t* qs;
    const uint8_t* qh = nullptr;
    const uint8_t* scales;
    uint16_t d16, dmin16;
    if (type == DType::Q4_K) {
      const BlockQ4_K& w = static_cast<const BlockQ4_K*>(w_row)[b];
      qs = w.qs, scales = w.scales, d16 = w.d, dmin16 = w.dmin;
    } else {
      const BlockQ5_K& w = static_cast<const BlockQ5_K*>(w_row)[b];
      qs = w.qs, qh = w.qh, scales = w.scales, d16 = w.d, dmin16 = w.dmin;
    }
    for (int j = 0; j < kSuper; j += 64, qs += 32) {
      for (int l = 0; l < 32; ++l) {
        const int shift = j / 32;  // fifth bits of sub-blocks j/32 and j/32 + 1
        q[j + l] = static_cast<int8_t>((qs[l] & 0xF) | (qh ? ((qh[l] >> shift) & 1) << 4 : 0));
        q[j + l + 32] = static_cast<int8_t>((qs[l] >> 4) | (qh ? ((qh[l] >> (shift + 1)) & 1) << 4 : 0));
      }
    }
    int isum = 0, msum = 0;
    for (int s = 0; s < 8; ++s) {
      uint8_t sc, m;
      scale_min_k4(s, scales, &sc, &m);
      int d = 0;
      for (int j = 0; j < 32; ++j) d += q[32 * s + j] * a[b].qs[32 * s + j];
      isum += sc * d;
      msum += m * (a[b].bsums[2 * s] + a[b].bsums[2 * s + 1]);
    }
    sum += a[b].d * (h2f(d16) * static_cast<float>(isum) - h2f(dmin16) * static_cast<float>(msum));
  }
  return sum;
}

void matmul_scalar(DType type, const void* act, int64_t M, int64_t K, const uint8_t* w, size_t row_bytes_w, int64_t N,
                   float* y, int64_t ldy) {
  const size_t arow = act_row_bytes(type, K);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      y[i * ldy + j] = dot_scalar(type, w + j * row_bytes_w, static_cast<const char*>(act) + i * arow, K);
}

}  // namespace strata::quant
