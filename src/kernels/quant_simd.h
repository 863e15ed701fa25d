// The products of quantized weights with quantized activations (quant.h) in
// 256-bit integer SIMD, compiled twice: AVX2 (quant_avx2.cpp: u8 x s8 pairs by
// vpmaddubsw + vpmaddwd) and AVX-512 VNNI (quant_vnni.cpp: vpdpbusd).
//
// Memory is what decode waits for, so four weight rows are walked side by
// side (four independent streams per thread). Each (activation row, weight
// row) result runs the same instructions in the same order whatever M, N or
// the row's place in its group, so one token at a time gives the bits of a
// prefill.
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
    for (int64_t i = 0; i < M; ++i) {
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
