// BF16 GEMM on AMX tiles for mixed-precision training (compiled with the AMX
// flags; used only when the CPU and the kernel grant AMX).
//
// c[M, N] (+)= a[M, K] · b[K, N] with F32 sums. Both operands are first
// rounded to BF16 into whole 1 KB tiles (kernels.h: A tiles row-major, B tiles
// in VNNI pairs), so every tile load reads 1 KB of contiguous memory; C tiles
// load from and store to `c` directly (edges through a small buffer).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/amx_tiles.h"
#include "kernels/kernels.h"

namespace strata::kernels {
namespace {

// C tile t (0-3) from/to c (row stride ldc floats) or, at an edge, the
// 16 x 16 buffer e. (The tile number must be a literal in the intrinsics.)
inline void load_c(int t, bool full, const float* c, int64_t ldc, const float* e) {
  const void* p = full ? static_cast<const void*>(c) : static_cast<const void*>(e);
  const int64_t stride = full ? ldc * 4 : 64;
  switch (t) {
    case 0:
      _tile_loadd(0, p, stride);
      break;
    case 1:
      _tile_loadd(1, p, stride);
      break;
    case 2:
      _tile_loadd(2, p, stride);
      break;
    default:
      _tile_loadd(3, p, stride);
      break;
  }
}
inline void store_c(int t, bool full, float* c, int64_t ldc, float* e) {
  void* p = full ? static_cast<void*>(c) : static_cast<void*>(e);
  const int64_t stride = full ? ldc * 4 : 64;
  switch (t) {
    case 0:
      _tile_stored(0, p, stride);
      break;
    case 1:
      _tile_stored(1, p, stride);
      break;
    case 2:
      _tile_stored(2, p, stride);
      break;
    default:
      _tile_stored(3, p, stride);
      break;
  }
}

}  // namespace

void amx_gemm_bf16(const uint16_t* a, const uint16_t* b, int64_t M, int64_t N, int64_t Kp, float* c, int64_t ldc,
                   bool accumulate) {
  static const TileConfig cfg = full_tiles();  // tmm0-3: C (2 x 2), tmm4-5: A, tmm6-7: B
  _tile_loadconfig(&cfg);
  alignas(64) float edge[4][256];
  const int64_t kbs = Kp / 32, tile = 512;  // tiles per row block / column block; elements per tile
  // Reduction blocks of kKB tiles and column blocks of kNB: the B tiles of a
  // block (kKB*32 x kNB BF16, 256 KB) stay in L2 while every row block meets
  // them; C is reloaded once per reduction block.
  constexpr int64_t kNB = 256, kKB = 16;
  for (int64_t kb0 = 0; kb0 < kbs; kb0 += kKB) {
    const int64_t kb1 = std::min(kbs, kb0 + kKB);
    const bool acc = accumulate || kb0 > 0;
    for (int64_t n0 = 0; n0 < N; n0 += kNB) {
      const int64_t n1 = std::min(N, n0 + kNB);
      for (int64_t i0 = 0; i0 < M; i0 += 32) {
        for (int64_t j0 = n0; j0 < n1; j0 += 32) {
          // 2 x 2 C tiles; a tile that would cross the edge of c goes through `edge`.
          bool full[4];
          for (int t = 0; t < 4; ++t) {
            const int64_t r = i0 + (t / 2) * 16, col = j0 + (t % 2) * 16;
            full[t] = r + 16 <= M && col + 16 <= N;
          }
          auto c_ptr = [&](int t) { return c + (i0 + (t / 2) * 16) * ldc + j0 + (t % 2) * 16; };
          for (int t = 0; t < 4; ++t) {
            if (full[t]) continue;
            const int64_t r0 = i0 + (t / 2) * 16, c0 = j0 + (t % 2) * 16;
            for (int64_t r = 0; r < 16; ++r)
              for (int64_t q = 0; q < 16; ++q)
                edge[t][r * 16 + q] = acc && r0 + r < M && c0 + q < N ? c[(r0 + r) * ldc + c0 + q] : 0.0f;
          }
          if (acc) {
            for (int t = 0; t < 4; ++t) load_c(t, full[t], c_ptr(t), ldc, edge[t]);
          } else {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
          }
          // Rows past M and columns past N read the callers' zero padding.
          const uint16_t* a0 = a + (i0 / 16) * kbs * tile;
          const uint16_t* a1 = a0 + kbs * tile;
          const uint16_t* b0 = b + (j0 / 16) * kbs * tile;
          const uint16_t* b1 = b0 + kbs * tile;
          for (int64_t kb = kb0; kb < kb1; ++kb) {
            _tile_loadd(4, a0 + kb * tile, 64);
            _tile_loadd(5, a1 + kb * tile, 64);
            _tile_loadd(6, b0 + kb * tile, 64);
            _tile_loadd(7, b1 + kb * tile, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
          }
          for (int t = 0; t < 4; ++t) store_c(t, full[t], c_ptr(t), ldc, edge[t]);
          for (int t = 0; t < 4; ++t) {
            if (full[t]) continue;
            const int64_t r0 = i0 + (t / 2) * 16, c0 = j0 + (t % 2) * 16;
            for (int64_t r = 0; r < 16 && r0 + r < M; ++r)
              for (int64_t q = 0; q < 16 && c0 + q < N; ++q) c[(r0 + r) * ldc + c0 + q] = edge[t][r * 16 + q];
          }
        }
      }
    }
  }
  _tile_release();
}

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
void amx_pack_a(const float* src, int64_t rs, int64_t cs, int64_t rows, int64_t cols, uint16_t* dst, int64_t Kp) {
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
void amx_pack_b(const float* src, int64_t rs, int64_t cs, int64_t K, int64_t N, uint16_t* dst, int64_t Kp) {
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

}  // namespace strata::kernels
