// Dequantization of the block formats (quant.h), written once and compiled
// twice: as the reference in quant.cpp, and with AVX-512 in dequant_bf16.cpp,
// which widens weight panels for the BF16 products of a quantized prefill.
// The loops are plain per-block arithmetic the compiler vectorizes; every
// value is one float expression, so both builds give the same bits.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/quant.h"

namespace strata::quant {

// The 32 levels of a Q5_0 / Q5_1 block (0..31, value j at j).
template <class Block>
inline void unpack_q5(const Block& b, int* q) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < kBlock / 2; ++j) {
    q[j] = (b.qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1) << 4);
    q[j + kBlock / 2] = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + kBlock / 2)) & 1) << 4);
  }
}

namespace detail {

// A Q4_K / Q5_K super-block (qh null for Q4_K): value = d * sc * level - dmin * m per 32.
template <class H2F>
inline void dequant_k_asym(const uint8_t* qs, const uint8_t* qh, uint16_t d16, uint16_t dmin16, const uint8_t* scales,
                           float* y, H2F h2f) {
  const float d = h2f(d16), dmin = h2f(dmin16);
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < kSuper; j += 64, is += 2, qs += 32, u1 <<= 2, u2 <<= 2) {
    uint8_t sc, m;
    scale_min_k4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) {
      const int hi1 = qh && (qh[l] & u1) ? 16 : 0;
      y[l] = d1 * ((qs[l] & 0xF) + hi1) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      const int hi2 = qh && (qh[l] & u2) ? 16 : 0;
      y[l + 32] = d2 * ((qs[l] >> 4) + hi2) - m2;
    }
    y += 64;
  }
}

template <class H2F>
inline void dequant_q6_k(const BlockQ6_K& b, float* y, H2F h2f) {
  const float d = h2f(b.d);
  const uint8_t* ql = b.ql;
  const uint8_t* qh = b.qh;
  const int8_t* sc = b.scales;
  for (int n = 0; n < kSuper; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      y[l] = d * sc[is] * (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
      y[l + 32] = d * sc[is + 2] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      y[l + 64] = d * sc[is + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      y[l + 96] = d * sc[is + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}

}  // namespace detail

// nb blocks of `type` into nb * dtype_block(type) floats; false if `type` is
// not a block format. h2f converts an F16 scale (exactly, by any method).
template <class H2F>
inline bool dequantize_blocks(DType type, const void* in, float* y, int64_t nb, H2F h2f) {
  switch (type) {
    case DType::Q8_0:
      for (const BlockQ8_0* b = static_cast<const BlockQ8_0*>(in); nb-- > 0; ++b, y += kBlock) {
        const float d = h2f(b->d);
        for (int j = 0; j < kBlock; ++j) y[j] = d * b->qs[j];
      }
      return true;
    case DType::Q4_0:
      for (const BlockQ4_0* b = static_cast<const BlockQ4_0*>(in); nb-- > 0; ++b, y += kBlock) {
        const float d = h2f(b->d);
        for (int j = 0; j < kBlock / 2; ++j) {
          y[j] = d * ((b->qs[j] & 0xF) - 8);
          y[j + kBlock / 2] = d * ((b->qs[j] >> 4) - 8);
        }
      }
      return true;
    case DType::Q4_1:
      for (const BlockQ4_1* b = static_cast<const BlockQ4_1*>(in); nb-- > 0; ++b, y += kBlock) {
        const float d = h2f(b->d), m = h2f(b->m);
        for (int j = 0; j < kBlock / 2; ++j) {
          y[j] = d * (b->qs[j] & 0xF) + m;
          y[j + kBlock / 2] = d * (b->qs[j] >> 4) + m;
        }
      }
      return true;
    case DType::Q5_0:
      for (const BlockQ5_0* b = static_cast<const BlockQ5_0*>(in); nb-- > 0; ++b, y += kBlock) {
        int q[kBlock];
        unpack_q5(*b, q);
        const float d = h2f(b->d);
        for (int j = 0; j < kBlock; ++j) y[j] = d * (q[j] - 16);
      }
      return true;
    case DType::Q5_1:
      for (const BlockQ5_1* b = static_cast<const BlockQ5_1*>(in); nb-- > 0; ++b, y += kBlock) {
        int q[kBlock];
        unpack_q5(*b, q);
        const float d = h2f(b->d), m = h2f(b->m);
        for (int j = 0; j < kBlock; ++j) y[j] = d * q[j] + m;
      }
      return true;
    case DType::Q4_K:
      for (const BlockQ4_K* b = static_cast<const BlockQ4_K*>(in); nb-- > 0; ++b, y += kSuper)
        detail::dequant_k_asym(b->qs, nullptr, b->d, b->dmin, b->scales, y, h2f);
      return true;
    case DType::Q5_K:
      for (const BlockQ5_K* b = static_cast<const BlockQ5_K*>(in); nb-- > 0; ++b, y += kSuper)
        detail::dequant_k_asym(b->qs, b->qh, b->d, b->dmin, b->scales, y, h2f);
      return true;
    case DType::Q6_K:
      for (const BlockQ6_K* b = static_cast<const BlockQ6_K*>(in); nb-- > 0; ++b, y += kSuper)
        detail::dequant_q6_k(*b, y, h2f);
      return true;
    default: return false;
  }
}

}  // namespace strata::quant
