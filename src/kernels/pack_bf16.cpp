// Rounding F32 operands to BF16 into the layouts of the BF16 products
// (kernels.h): whole 1 KB tiles for the training GEMM, token pairs in VNNI
// order for the matmul against stored weights. Both the AMX tile kernels and
// the AVX512-BF16 dot-product kernels (dot_bf16.cpp) read them, so this file
// needs only AVX512-BF16 (compiled with it; used only when the CPU has it).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"

namespace strata::kernels {
namespace {

inline uint16_t round_bf16(float f) {  // nearest even, as vcvtneps2bf16; NaN stays NaN
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// out[i] holds element i of every r[q] (q = 0..15): a 16 x 16 transpose of
// 16-bit values by interleaving pairs, quads, octets, then 128-bit halves.
inline void transpose16x16_epi16(const __m256i r[16], __m256i out[16]) {
  __m256i a[16], b[16], c[16];
  for (int k = 0; k < 8; ++k) {
    a[2 * k] = _mm256_unpacklo_epi16(r[2 * k], r[2 * k + 1]);
    a[2 * k + 1] = _mm256_unpackhi_epi16(r[2 * k], r[2 * k + 1]);
  }
  // a[2k]: elements 0-3 | 8-11 of rows 2k, 2k+1 interleaved; a[2k+1]: 4-7 | 12-15.
  for (int m = 0; m < 4; ++m)
    for (int h = 0; h < 2; ++h) {
      b[4 * m + 2 * h] = _mm256_unpacklo_epi32(a[4 * m + h], a[4 * m + 2 + h]);
      b[4 * m + 2 * h + 1] = _mm256_unpackhi_epi32(a[4 * m + h], a[4 * m + 2 + h]);
    }
  // b[4m + j]: rows 4m..4m+3 of elements {2j, 2j+1} | {2j+8, 2j+9}.
  for (int q = 0; q < 2; ++q)
    for (int j = 0; j < 4; ++j) {
      c[8 * q + 2 * j] = _mm256_unpacklo_epi64(b[8 * q + j], b[8 * q + 4 + j]);
      c[8 * q + 2 * j + 1] = _mm256_unpackhi_epi64(b[8 * q + j], b[8 * q + 4 + j]);
    }
  // c[8q + e]: rows 8q..8q+7 of element e | e+8.
  for (int e = 0; e < 8; ++e) {
    out[e] = _mm256_permute2x128_si256(c[e], c[8 + e], 0x20);
    out[e + 8] = _mm256_permute2x128_si256(c[e], c[8 + e], 0x31);
  }
}

inline __m256i cvt16(const float* p) { return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(p))); }

}  // namespace

// Element (i, p) of a K-padded A goes to tile (i/16, p/32), row i%16, column p%32.
void bf16_pack_a(const float* src, int64_t rs, int64_t cs, int64_t rows, int64_t cols, uint16_t* dst, int64_t Kp) {
  const int64_t kbs = Kp / 32;
  auto at = [&](int64_t i, int64_t p) -> uint16_t& {
    return dst[((i / 16) * kbs + p / 32) * 512 + (i % 16) * 32 + p % 32];
  };
  if (cs == 1) {  // rows contiguous: 16 values at a time become half a tile row
    for (int64_t i = 0; i < rows; ++i) {
      const float* s = src + i * rs;
      int64_t p = 0;
      for (; p + 16 <= cols; p += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(&at(i, p)), cvt16(s + p));
      for (; p < cols; ++p) at(i, p) = round_bf16(s[p]);
    }
    return;
  }
  if (rs == 1) {  // transposed source: 16 x 16 blocks converted, then transposed in registers
    int64_t i0 = 0;
    for (; i0 + 16 <= rows; i0 += 16) {
      int64_t p0 = 0;
      for (; p0 + 16 <= cols; p0 += 16) {
        __m256i r[16], out[16];
        for (int q = 0; q < 16; ++q) r[q] = cvt16(src + (p0 + q) * cs + i0);  // column p0+q, rows i0..i0+15
        transpose16x16_epi16(r, out);
        for (int i = 0; i < 16; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(&at(i0 + i, p0)), out[i]);
      }
      for (; p0 < cols; ++p0)
        for (int64_t i = 0; i < 16; ++i) at(i0 + i, p0) = round_bf16(src[p0 * cs + i0 + i]);
    }
    for (int64_t i = i0; i < rows; ++i)
      for (int64_t p = 0; p < cols; ++p) at(i, p) = round_bf16(src[i + p * cs]);
    return;
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t p = 0; p < cols; ++p) at(i, p) = round_bf16(src[i * rs + p * cs]);
}

// Element (p, j) of a K-padded B goes to tile (j/16, p/32), pair row (p%32)/2,
// column j%16, half p%2.
void bf16_pack_b(const float* src, int64_t rs, int64_t cs, int64_t K, int64_t N, uint16_t* dst, int64_t Kp) {
  const int64_t kbs = Kp / 32;
  auto at = [&](int64_t p, int64_t j) -> uint16_t& {
    return dst[((j / 16) * kbs + p / 32) * 512 + ((p % 32) / 2) * 32 + (j % 16) * 2 + p % 2];
  };
  if (cs == 1) {  // rows p and p+1 of the source interleave 16 bits at a time into one tile row
    int64_t p = 0;
    for (; p + 2 <= K; p += 2) {
      const float* r0 = src + p * rs;
      const float* r1 = r0 + rs;
      int64_t j = 0;
      for (; j + 16 <= N; j += 16) {
        const __m256i x = cvt16(r0 + j), y = cvt16(r1 + j);
        const __m256i lo = _mm256_unpacklo_epi16(x, y), hi = _mm256_unpackhi_epi16(x, y);
        uint16_t* d = &at(p, j);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
      }
      for (; j < N; ++j) {
        at(p, j) = round_bf16(r0[j]);
        at(p + 1, j) = round_bf16(r1[j]);
      }
    }
    for (; p < K; ++p)
      for (int64_t j = 0; j < N; ++j) at(p, j) = round_bf16(src[p * rs + j]);
    return;
  }
  if (rs == 1) {  // column j of the source is contiguous: its pairs are whole 32-bit words
    alignas(64) uint16_t row[32];
    for (int64_t j = 0; j < N; ++j) {
      const float* s = src + j * cs;
      int64_t p0 = 0;
      for (; p0 + 32 <= K; p0 += 32) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(row), cvt16(s + p0));
        _mm256_store_si256(reinterpret_cast<__m256i*>(row + 16), cvt16(s + p0 + 16));
        uint32_t* t32 = reinterpret_cast<uint32_t*>(&at(p0, j));  // pair row 0 of this column
        for (int r = 0; r < 16; ++r) std::memcpy(t32 + r * 16, row + 2 * r, 4);
      }
      for (int64_t p = p0; p < K; ++p) at(p, j) = round_bf16(s[p]);
    }
    return;
  }
  for (int64_t p = 0; p < K; ++p)
    for (int64_t j = 0; j < N; ++j) at(p, j) = round_bf16(src[p * rs + j * cs]);
}

int64_t bf16_packed_x_elems(int64_t M, int64_t K) { return (M + 15) / 16 * 16 * K; }

void bf16_pack_x(const float* x, int64_t M, int64_t K, uint16_t* packed, int64_t block_begin, int64_t block_end) {
  const int64_t kb_count = K / 32;
  alignas(64) uint16_t row[32];
  for (int64_t tb = block_begin; tb < block_end; ++tb) {
    uint32_t* dst = reinterpret_cast<uint32_t*>(packed + tb * 16 * K);  // [kb][kk][n] of token pairs
    for (int n = 0; n < 16; ++n) {
      const int64_t t = tb * 16 + n;
      for (int64_t kb = 0; kb < kb_count; ++kb) {
        if (t < M) {
          const float* src = x + t * K + kb * 32;
          const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
          _mm512_store_si512(row, reinterpret_cast<__m512i>(v));
        } else {
          std::memset(row, 0, sizeof(row));
        }
        uint32_t pairs[16];
        std::memcpy(pairs, row, sizeof(pairs));
        uint32_t* blk = dst + kb * 256;
        for (int kk = 0; kk < 16; ++kk) blk[kk * 16 + n] = pairs[kk];
      }
    }
  }
}

}  // namespace strata::kernels
