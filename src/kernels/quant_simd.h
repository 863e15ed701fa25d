// The products of quantized weights with quantized activations (quant.h) in
// 256-bit integer SIMD, compiled twice: AVX2 (quant_avx2.cpp: u8 x s8 pairs by
// vpmaddubsw + vpmaddwd) and AVX-512 VNNI (quant_vnni.cpp: vpdpbusd).
//
// Memory is what decode waits for, so each call walks four stripes of
// consecutive weight rows side by side (four long sequential streams per
// thread, see matmul below). Each (activation row, weight row) result runs
// the same instructions in the same order whatever M, so one token at a time
// gives the bits of a prefill.
#pragma once
#include <immintrin.h>

#include <cstring>

#include "kernels/quant.h"

namespace strata::quant::simd {

// Sums of 4 adjacent u8 x s8 products into 8 int32 lanes, added to acc.
template <bool kVnni>
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
  if constexpr (kVnni) {
    return _mm256_dpbusd_epi32(acc, u, s);
  } else {
    // u <= 128 and |s| <= 127 here, so the pairs never saturate int16.
    const __m256i p = _mm256_maddubs_epi16(u, s);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
  }
}

inline float half(uint16_t h) { return _cvtsh_ss(h); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// 32 nibbles of 16 bytes: low nibbles then high nibbles (values j and j + 16).
inline __m256i nibbles(const uint8_t* q) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// Blocks ahead of the one in use that each weight stream asks the memory for.
inline constexpr int kPrefetchBlocks = 12;

// --- 32-value blocks: y = sum over blocks of scale * integer dot ------------

template <bool kVnni, int R>
void rows_q8_0(const ActQ8* a, int64_t nb, const uint8_t* const* w, float* out) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i av = load(a[b].qs);
    for (int r = 0; r < R; ++r) {
      const BlockQ8_0* blk = reinterpret_cast<const BlockQ8_0*>(w[r]) + b;
      if ((b & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBlocks), _MM_HINT_T0);
      const __m256i wv = load(blk->qs);
      // |w| x (a with w's sign): u8 x s8 without the -128 corner.
      const __m256i sa = _mm256_sign_epi8(av, wv);
      const __m256i i = dot_u8s8<kVnni>(_mm256_setzero_si256(), _mm256_abs_epi8(wv), sa);
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(half(blk->d) * a[b].d), _mm256_cvtepi32_ps(i), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

// 0x10 in byte i where bit i of x is set (the fifth bits of Q5_0 / Q5_1).
inline __m256i fifth_bits(const uint8_t* qh) {
  uint32_t x;
  std::memcpy(&x, qh, 4);
  // Byte i takes byte i/8 of x (both 128-bit lanes hold x), then tests its bit i%8.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int32_t>(x)),
      _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

// Q4_0, Q4_1, Q5_0, Q5_1: levels q (4 or 5 bits) with value (q - offset) * d, or q * d + m.
template <bool kVnni, int R, DType kType>
void rows_q45(const ActQ8* a, int64_t nb, const uint8_t* const* w, float* out) {
  constexpr bool kMin = kType == DType::Q4_1 || kType == DType::Q5_1;
  constexpr float kOffset = kType == DType::Q4_0 ? 8.0f : kType == DType::Q5_0 ? 16.0f : 0.0f;
  __m256 acc[R];
  float bias[R] = {};
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i av = load(a[b].qs);
    for (int r = 0; r < R; ++r) {
      float d, m = 0;
      __m256i q;
      if constexpr (kType == DType::Q4_0) {
        const BlockQ4_0* blk = reinterpret_cast<const BlockQ4_0*>(w[r]) + b;
        d = half(blk->d), q = nibbles(blk->qs);
      } else if constexpr (kType == DType::Q4_1) {
        const BlockQ4_1* blk = reinterpret_cast<const BlockQ4_1*>(w[r]) + b;
        d = half(blk->d), m = half(blk->m), q = nibbles(blk->qs);
      } else if constexpr (kType == DType::Q5_0) {
        const BlockQ5_0* blk = reinterpret_cast<const BlockQ5_0*>(w[r]) + b;
        d = half(blk->d), q = _mm256_or_si256(nibbles(blk->qs), fifth_bits(blk->qh));
      } else {
        const BlockQ5_1* blk = reinterpret_cast<const BlockQ5_1*>(w[r]) + b;
        d = half(blk->d), m = half(blk->m), q = _mm256_or_si256(nibbles(blk->qs), fifth_bits(blk->qh));
      }
      const __m256i i = dot_u8s8<kVnni>(_mm256_setzero_si256(), q, av);
      // Offset levels (q - 8, q - 16): the offset rides on the activations' sum.
      const float s = d * a[b].d;
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(i), acc[r]);
      bias[r] += kMin ? m * a[b].d * static_cast<float>(a[b].sum) : -kOffset * s * static_cast<float>(a[b].sum);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]) + bias[r];
}

// --- four weight rows at once, one float step per block ------------------------
//
// Q8_0, Q4_0 and Q5_0 weights against one activation row: the four rows'
// integer dots of a block are folded into one vector (two rounds of
// horizontal adds: lanes 0-3 hold rows 0-3 over bytes 0-15, lanes 4-7 over
// bytes 16-31), corrected for the levels' offset in integers, and scaled by
// [dw_0..dw_3] * da in one multiply-add, instead of one per row. The prefill
// tiles below do exactly these steps, so decode and prefill agree bit for bit.

inline __m256i fold4(const __m256i* v) {
  return _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
}
// [dw_0..dw_3] from the four blocks' F16 scales, converted together in registers.
inline __m128 scales_of(const uint16_t* d16) {
  return _mm_cvtph_ps(_mm_setr_epi16(static_cast<int16_t>(d16[0]), static_cast<int16_t>(d16[1]),
                                     static_cast<int16_t>(d16[2]), static_cast<int16_t>(d16[3]), 0, 0, 0, 0));
}
inline __m256 scales4(__m128 dw, float da) {
  const __m128 s = _mm_mul_ps(dw, _mm_set1_ps(da));
  return _mm256_set_m128(s, s);
}
inline void unfold4(__m256 acc, float* out) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  for (int r = 0; r < 4; ++r) out[r] = lanes[r] + lanes[r + 4];
}
// The levels of a symmetric block type start at -offset: offset * (activation sum), taken once per row.
template <DType kType>
inline __m256i offset_fix(int32_t act_sum) {
  constexpr int32_t kOff = kType == DType::Q4_0 ? 8 : kType == DType::Q5_0 ? 16 : 0;
  const int32_t v = kOff * act_sum;
  return _mm256_setr_epi32(v, v, v, v, 0, 0, 0, 0);
}

// The 32 levels of block b of a Q8_0 (signed) / Q4_0 / Q5_0 (unsigned) row, and its F16 scale.
template <DType kType>
inline __m256i block_levels(const uint8_t* row, int64_t b, uint16_t* d) {
  if constexpr (kType == DType::Q8_0) {
    const BlockQ8_0* blk = reinterpret_cast<const BlockQ8_0*>(row) + b;
    *d = blk->d;
    return load(blk->qs);
  } else if constexpr (kType == DType::Q4_0) {
    const BlockQ4_0* blk = reinterpret_cast<const BlockQ4_0*>(row) + b;
    *d = blk->d;
    return nibbles(blk->qs);
  } else {
    const BlockQ5_0* blk = reinterpret_cast<const BlockQ5_0*>(row) + b;
    *d = blk->d;
    return _mm256_or_si256(nibbles(blk->qs), fifth_bits(blk->qh));
  }
}

template <bool kVnni, DType kType>
void rows4_sym(const ActQ8* a, int64_t nb, const uint8_t* const* w, float* out) {
  constexpr size_t kBytes = kType == DType::Q8_0   ? sizeof(BlockQ8_0)
                            : kType == DType::Q4_0 ? sizeof(BlockQ4_0)
                                                   : sizeof(BlockQ5_0);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i av = load(a[b].qs);
    __m256i dots[4];
    uint16_t d16[4];
    for (int r = 0; r < 4; ++r) {
      if ((b & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(w[r]) + (b + kPrefetchBlocks) * kBytes, _MM_HINT_T0);
      const __m256i q = block_levels<kType>(w[r], b, &d16[r]);
      if constexpr (kType == DType::Q8_0)  // |w| x (a with w's sign): u8 x s8 without the -128 corner
        dots[r] = dot_u8s8<kVnni>(_mm256_setzero_si256(), _mm256_abs_epi8(q), _mm256_sign_epi8(av, q));
      else
        dots[r] = dot_u8s8<kVnni>(_mm256_setzero_si256(), q, av);
    }
    const __m256i folded = _mm256_sub_epi32(fold4(dots), offset_fix<kType>(a[b].sum));
    acc = _mm256_fmadd_ps(scales4(scales_of(d16), a[b].d), _mm256_cvtepi32_ps(folded), acc);
  }
  unfold4(acc, out);
}

// --- K-quants: 256-value super-blocks ----------------------------------------

// Sub-block sums of 32 u8 x s8 products scaled by per-sub-block integers, as int32 lanes.
template <bool kVnni>
inline __m256i scaled_dot(__m256i acc, __m256i q, __m256i a, int scale) {
  const __m256i i = dot_u8s8<kVnni>(_mm256_setzero_si256(), q, a);
  return _mm256_add_epi32(acc, _mm256_mullo_epi32(i, _mm256_set1_epi32(scale)));
}

template <bool kVnni, int R, bool kFifthBit>
void rows_q45_k(const ActQ8K* a, int64_t nb, const uint8_t* const* w, float* out) {
  __m256 acc[R];
  float bias[R] = {};
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const __m256i lo4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < R; ++r) {
      const uint8_t *qs, *qh = nullptr, *scales;
      uint16_t d16, dmin16;
      if constexpr (kFifthBit) {
        const BlockQ5_K* blk = reinterpret_cast<const BlockQ5_K*>(w[r]) + b;
        qs = blk->qs, qh = blk->qh, scales = blk->scales, d16 = blk->d, dmin16 = blk->dmin;
      } else {
        const BlockQ4_K* blk = reinterpret_cast<const BlockQ4_K*>(w[r]) + b;
        qs = blk->qs, scales = blk->scales, d16 = blk->d, dmin16 = blk->dmin;
      }
      uint8_t sc[8], mn[8];
      for (int s = 0; s < 8; ++s) scale_min_k4(s, scales, &sc[s], &mn[s]);
      __m256i isum = _mm256_setzero_si256();
      const __m256i hbits = kFifthBit ? load(qh) : _mm256_setzero_si256();
      for (int p = 0; p < 4; ++p) {  // pairs of sub-blocks: 32 bytes of nibbles
        const __m256i q = load(qs + 32 * p);
        __m256i q_lo = _mm256_and_si256(q, lo4), q_hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), lo4);
        if constexpr (kFifthBit) {
          const __m256i h_lo = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * p), one);
          const __m256i h_hi = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * p + 1), one);
          q_lo = _mm256_or_si256(q_lo, _mm256_slli_epi16(h_lo, 4));
          q_hi = _mm256_or_si256(q_hi, _mm256_slli_epi16(h_hi, 4));
        }
        isum = scaled_dot<kVnni>(isum, q_lo, load(a[b].qs + 64 * p), sc[2 * p]);
        isum = scaled_dot<kVnni>(isum, q_hi, load(a[b].qs + 64 * p + 32), sc[2 * p + 1]);
      }
      int msum = 0;
      for (int s = 0; s < 8; ++s) msum += mn[s] * (a[b].bsums[2 * s] + a[b].bsums[2 * s + 1]);
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(half(d16) * a[b].d), _mm256_cvtepi32_ps(isum), acc[r]);
      bias[r] -= half(dmin16) * a[b].d * static_cast<float>(msum);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]) + bias[r];
}

template <bool kVnni, int R>
void rows_q6_k(const ActQ8K* a, int64_t nb, const uint8_t* const* w, float* out) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const __m256i lo4 = _mm256_set1_epi8(0x0F), lo2 = _mm256_set1_epi8(3);
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < R; ++r) {
      const BlockQ6_K* blk = reinterpret_cast<const BlockQ6_K*>(w[r]) + b;
      __m256i isum = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {  // halves of 128 values
        const uint8_t* ql = blk->ql + 64 * h;
        const __m256i qh = load(blk->qh + 32 * h);
        const __m256i l0 = load(ql), l1 = load(ql + 32);
        const __m256i q[4] = {
            _mm256_or_si256(_mm256_and_si256(l0, lo4), _mm256_slli_epi16(_mm256_and_si256(qh, lo2), 4)),
            _mm256_or_si256(_mm256_and_si256(l1, lo4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), lo2), 4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), lo4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), lo2), 4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), lo4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), lo2), 4))};
        for (int g = 0; g < 4; ++g) {
          // 32 values = two sub-blocks of 16 with their own scales.
          const int8_t* s = blk->scales + 8 * h + 2 * g;
          const __m256i i = dot_u8s8<kVnni>(_mm256_setzero_si256(), q[g], load(a[b].qs + 128 * h + 32 * g));
          const __m256i scale = _mm256_setr_epi32(s[0], s[0], s[0], s[0], s[1], s[1], s[1], s[1]);
          isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(i, scale));
        }
      }
      int bias = 0;  // the levels are q - 32
      for (int g = 0; g < 16; ++g) bias += blk->scales[g] * a[b].bsums[g];
      isum = _mm256_sub_epi32(isum, _mm256_setr_epi32(32 * bias, 0, 0, 0, 0, 0, 0, 0));
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(half(blk->d) * a[b].d), _mm256_cvtepi32_ps(isum), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

template <bool kVnni, int R>
void rows(DType type, const void* act, int64_t K, const uint8_t* const* w, float* out) {
  if constexpr (R == 4) {
    const ActQ8* a = static_cast<const ActQ8*>(act);
    switch (type) {
      case DType::Q8_0: return rows4_sym<kVnni, DType::Q8_0>(a, K / kBlock, w, out);
      case DType::Q4_0: return rows4_sym<kVnni, DType::Q4_0>(a, K / kBlock, w, out);
      case DType::Q5_0: return rows4_sym<kVnni, DType::Q5_0>(a, K / kBlock, w, out);
      default: break;
    }
  }
  switch (type) {
    case DType::Q8_0: return rows_q8_0<kVnni, R>(static_cast<const ActQ8*>(act), K / kBlock, w, out);
    case DType::Q4_0: return rows_q45<kVnni, R, DType::Q4_0>(static_cast<const ActQ8*>(act), K / kBlock, w, out);
    case DType::Q4_1: return rows_q45<kVnni, R, DType::Q4_1>(static_cast<const ActQ8*>(act), K / kBlock, w, out);
    case DType::Q5_0: return rows_q45<kVnni, R, DType::Q5_0>(static_cast<const ActQ8*>(act), K / kBlock, w, out);
    case DType::Q5_1: return rows_q45<kVnni, R, DType::Q5_1>(static_cast<const ActQ8*>(act), K / kBlock, w, out);
    case DType::Q4_K: return rows_q45_k<kVnni, R, false>(static_cast<const ActQ8K*>(act), K / kSuper, w, out);
    case DType::Q5_K: return rows_q45_k<kVnni, R, true>(static_cast<const ActQ8K*>(act), K / kSuper, w, out);
    case DType::Q6_K: return rows_q6_k<kVnni, R>(static_cast<const ActQ8K*>(act), K / kSuper, w, out);
    default: return;
  }
}

// --- prefill: tiles of 4 activation rows x 4 weight rows ------------------------
//
// The same arithmetic as the four-row decode kernels (rows4_sym, rows_q45,
// rows_q45_k, rows_q6_k), so every element gets the bits it gets one token
// at a time, with each weight block loaded once for four activation rows.
// Q8_0 takes the activations offset to unsigned (a + 128) and takes back
// 128 * (the weight sums), so the lanes hold the same integers as the sign
// trick gives.
template <int MR, DType kType>
void tile_sym(const ActQ8* const* a, int64_t nb, const uint8_t* const* w, float (*out)[4]) {
  __m256 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_ps();
  const __m256i k128 = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < nb; ++b) {
    __m256i q[4], corr[4];
    uint16_t d16[4];
    for (int r = 0; r < 4; ++r) {
      q[r] = block_levels<kType>(w[r], b, &d16[r]);
      if constexpr (kType == DType::Q8_0) corr[r] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k128, q[r]);
    }
    const __m128 dw = scales_of(d16);
    __m256i corr_folded = _mm256_setzero_si256();
    if constexpr (kType == DType::Q8_0) corr_folded = fold4(corr);
    for (int i = 0; i < MR; ++i) {
      __m256i dots[4];
      if constexpr (kType == DType::Q8_0) {
        const __m256i au = _mm256_xor_si256(load(a[i][b].qs), k128);
        for (int r = 0; r < 4; ++r) dots[r] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), au, q[r]);
      } else {
        const __m256i av = load(a[i][b].qs);
        for (int r = 0; r < 4; ++r) dots[r] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q[r], av);
      }
      const __m256i folded =
          _mm256_sub_epi32(_mm256_sub_epi32(fold4(dots), corr_folded), offset_fix<kType>(a[i][b].sum));
      acc[i] = _mm256_fmadd_ps(scales4(dw, a[i][b].d), _mm256_cvtepi32_ps(folded), acc[i]);
    }
  }
  for (int i = 0; i < MR; ++i) unfold4(acc[i], out[i]);
}

// Q4_1 / Q5_1 (a scale and a min): as rows_q45, four activation rows at a time.
template <int MR, int R, DType kType>
void tile_q45_min(const ActQ8* const* a, int64_t nb, const uint8_t* const* w, float (*out)[4]) {
  static_assert(kType == DType::Q4_1 || kType == DType::Q5_1, "Q4_0 and Q5_0 go through tile_sym");
  __m256 acc[MR][R];
  float bias[MR][R] = {};
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m256i q[R];
    float d[R], m[R] = {};
    for (int r = 0; r < R; ++r) {
      if constexpr (kType == DType::Q4_1) {
        const BlockQ4_1* blk = reinterpret_cast<const BlockQ4_1*>(w[r]) + b;
        d[r] = half(blk->d), m[r] = half(blk->m), q[r] = nibbles(blk->qs);
      } else {
        const BlockQ5_1* blk = reinterpret_cast<const BlockQ5_1*>(w[r]) + b;
        d[r] = half(blk->d), m[r] = half(blk->m), q[r] = _mm256_or_si256(nibbles(blk->qs), fifth_bits(blk->qh));
      }
    }
    for (int i = 0; i < MR; ++i) {
      const __m256i av = load(a[i][b].qs);
      for (int r = 0; r < R; ++r) {
        const __m256i isum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q[r], av);
        const float s = d[r] * a[i][b].d;
        acc[i][r] = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(isum), acc[i][r]);
        bias[i][r] += m[r] * a[i][b].d * static_cast<float>(a[i][b].sum);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < R; ++r) out[i][r] = hsum(acc[i][r]) + bias[i][r];
}

// Q4_K / Q5_K: as rows_q45_k, pair of sub-blocks by pair of sub-blocks.
template <int MR, int R, bool kFifthBit>
void tile_q45_k(const ActQ8K* const* a, int64_t nb, const uint8_t* const* w, float (*out)[4]) {
  __m256 acc[MR][R];
  float bias[MR][R] = {};
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = _mm256_setzero_ps();
  const __m256i lo4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t *qs[R], *qh[R], *scales[R];
    uint16_t d16[R], dmin16[R];
    uint8_t sc[R][8], mn[R][8];
    for (int r = 0; r < R; ++r) {
      if constexpr (kFifthBit) {
        const BlockQ5_K* blk = reinterpret_cast<const BlockQ5_K*>(w[r]) + b;
        qs[r] = blk->qs, qh[r] = blk->qh, scales[r] = blk->scales, d16[r] = blk->d, dmin16[r] = blk->dmin;
      } else {
        const BlockQ4_K* blk = reinterpret_cast<const BlockQ4_K*>(w[r]) + b;
        qs[r] = blk->qs, qh[r] = nullptr, scales[r] = blk->scales, d16[r] = blk->d, dmin16[r] = blk->dmin;
      }
      for (int t = 0; t < 8; ++t) scale_min_k4(t, scales[r], &sc[r][t], &mn[r][t]);
    }
    __m256i isum[MR][R];
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < R; ++r) isum[i][r] = _mm256_setzero_si256();
    for (int p = 0; p < 4; ++p) {
      __m256i q_lo[R], q_hi[R];
      for (int r = 0; r < R; ++r) {
        const __m256i q = load(qs[r] + 32 * p);
        q_lo[r] = _mm256_and_si256(q, lo4), q_hi[r] = _mm256_and_si256(_mm256_srli_epi16(q, 4), lo4);
        if constexpr (kFifthBit) {
          const __m256i hbits = load(qh[r]);
          q_lo[r] = _mm256_or_si256(q_lo[r], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * p), one), 4));
          q_hi[r] = _mm256_or_si256(q_hi[r], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * p + 1), one), 4));
        }
      }
      for (int i = 0; i < MR; ++i) {
        const __m256i a_lo = load(a[i][b].qs + 64 * p), a_hi = load(a[i][b].qs + 64 * p + 32);
        for (int r = 0; r < R; ++r) {
          isum[i][r] = scaled_dot<true>(isum[i][r], q_lo[r], a_lo, sc[r][2 * p]);
          isum[i][r] = scaled_dot<true>(isum[i][r], q_hi[r], a_hi, sc[r][2 * p + 1]);
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < R; ++r) {
        int msum = 0;
        for (int t = 0; t < 8; ++t) msum += mn[r][t] * (a[i][b].bsums[2 * t] + a[i][b].bsums[2 * t + 1]);
        acc[i][r] = _mm256_fmadd_ps(_mm256_set1_ps(half(d16[r]) * a[i][b].d), _mm256_cvtepi32_ps(isum[i][r]), acc[i][r]);
        bias[i][r] -= half(dmin16[r]) * a[i][b].d * static_cast<float>(msum);
      }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < R; ++r) out[i][r] = hsum(acc[i][r]) + bias[i][r];
}

// Q6_K: as rows_q6_k, 32 values (two sub-blocks of 16) at a time.
template <int MR, int R>
void tile_q6_k(const ActQ8K* const* a, int64_t nb, const uint8_t* const* w, float (*out)[4]) {
  __m256 acc[MR][R];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = _mm256_setzero_ps();
  const __m256i lo4 = _mm256_set1_epi8(0x0F), lo2 = _mm256_set1_epi8(3);
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ6_K* blk[R];
    for (int r = 0; r < R; ++r) blk[r] = reinterpret_cast<const BlockQ6_K*>(w[r]) + b;
    __m256i isum[MR][R];
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < R; ++r) isum[i][r] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      for (int g = 0; g < 4; ++g) {
        __m256i q[R], scale[R];
        for (int r = 0; r < R; ++r) {
          const __m256i l = load(blk[r]->ql + 64 * h + 32 * (g & 1));
          const __m256i qh = load(blk[r]->qh + 32 * h);
          const __m256i low = g < 2 ? _mm256_and_si256(l, lo4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), lo4);
          q[r] = _mm256_or_si256(low, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), lo2), 4));
          const int8_t* sc = blk[r]->scales + 8 * h + 2 * g;
          scale[r] = _mm256_setr_epi32(sc[0], sc[0], sc[0], sc[0], sc[1], sc[1], sc[1], sc[1]);
        }
        for (int i = 0; i < MR; ++i) {
          const __m256i av = load(a[i][b].qs + 128 * h + 32 * g);
          for (int r = 0; r < R; ++r) {
            const __m256i d = dot_u8s8<true>(_mm256_setzero_si256(), q[r], av);
            isum[i][r] = _mm256_add_epi32(isum[i][r], _mm256_mullo_epi32(d, scale[r]));
          }
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < R; ++r) {
        int bias = 0;
        for (int t = 0; t < 16; ++t) bias += blk[r]->scales[t] * a[i][b].bsums[t];
        const __m256i v = _mm256_sub_epi32(isum[i][r], _mm256_setr_epi32(32 * bias, 0, 0, 0, 0, 0, 0, 0));
        acc[i][r] = _mm256_fmadd_ps(_mm256_set1_ps(half(blk[r]->d) * a[i][b].d), _mm256_cvtepi32_ps(v), acc[i][r]);
      }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < R; ++r) out[i][r] = hsum(acc[i][r]);
}

// 4 x 4 tiles for the types that have one (VNNI only); false: use rows().
inline bool tile4(DType type, const void* const* act, int64_t K, const uint8_t* const* w, float (*out)[4]) {
  const auto* a = reinterpret_cast<const ActQ8* const*>(act);
  switch (type) {
    case DType::Q8_0: tile_sym<4, DType::Q8_0>(a, K / kBlock, w, out); return true;
    case DType::Q4_0: tile_sym<4, DType::Q4_0>(a, K / kBlock, w, out); return true;
    case DType::Q4_1: tile_q45_min<4, 4, DType::Q4_1>(a, K / kBlock, w, out); return true;
    case DType::Q5_0: tile_sym<4, DType::Q5_0>(a, K / kBlock, w, out); return true;
    case DType::Q5_1: tile_q45_min<4, 4, DType::Q5_1>(a, K / kBlock, w, out); return true;
    case DType::Q4_K: tile_q45_k<4, 4, false>(reinterpret_cast<const ActQ8K* const*>(act), K / kSuper, w, out); return true;
    case DType::Q5_K: tile_q45_k<4, 4, true>(reinterpret_cast<const ActQ8K* const*>(act), K / kSuper, w, out); return true;
    case DType::Q6_K: tile_q6_k<4, 4>(reinterpret_cast<const ActQ8K* const*>(act), K / kSuper, w, out); return true;
    default: return false;
  }
}

// The Table::quant_matmul entry. The weight rows are cut into four stripes of
// consecutive rows, walked side by side (row j of every stripe at once):
// four long sequential streams, which the prefetchers follow (four rows next
// to each other would be four streams of a single row each). Every group is
// dotted against every activation row.
template <bool kVnni>
void matmul(DType type, const void* act, int64_t M, int64_t K, const uint8_t* w, size_t row_bytes_w, int64_t N,
            float* y, int64_t ldy) {
  const size_t arow = act_row_bytes(type, K);
  const int64_t L = N / 4;  // rows per stripe; the N % 4 rows past the stripes go one at a time
  for (int64_t j = 0; j < L; ++j) {
    const int64_t rows_j[4] = {j, j + L, j + 2 * L, j + 3 * L};
    const uint8_t* wr[4];
    for (int s = 0; s < 4; ++s) wr[s] = w + rows_j[s] * row_bytes_w;
    int64_t i = 0;
    if constexpr (kVnni) {  // prefill: four activation rows at a time
      for (; i + 4 <= M; i += 4) {
        const void* ai[4];
        for (int t = 0; t < 4; ++t) ai[t] = static_cast<const char*>(act) + (i + t) * arow;
        float out[4][4];
        if (!tile4(type, ai, K, wr, out)) break;
        for (int t = 0; t < 4; ++t)
          for (int s = 0; s < 4; ++s) y[(i + t) * ldy + rows_j[s]] = out[t][s];
      }
    }
    for (; i < M; ++i) {
      float out[4];
      rows<kVnni, 4>(type, static_cast<const char*>(act) + i * arow, K, wr, out);
      for (int s = 0; s < 4; ++s) y[i * ldy + rows_j[s]] = out[s];
    }
  }
  for (int64_t j = 4 * L; j < N; ++j) {
    const uint8_t* wr[1] = {w + j * row_bytes_w};
    for (int64_t i = 0; i < M; ++i) rows<kVnni, 1>(type, static_cast<const char*>(act) + i * arow, K, wr, y + i * ldy + j);
  }
}

}  // namespace strata::quant::simd
