// BF16 GEMM on AMX tiles for mixed-precision training (compiled with the AMX
// flags; used only when the CPU and the kernel grant AMX).
//
// c[M, N] (+)= a[M, K] · b[K, N] with F32 sums. `a` is BF16 row-major (k
// contiguous, row stride lda), so its 16 x 32 tiles load straight from memory;
// `b` is in VNNI order [K/2][ldb][2] (the two k of a pair side by side), so its
// 16-pair x 16-column tiles load straight too; C tiles load from and store to
// `c` directly. K is a multiple of 32 (callers pad with zeros).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/kernels.h"

namespace strata::kernels {
namespace {

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved0[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

TileConfig full_tiles() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  return c;
}

// C tile t (0-3) from/to c (row stride ldc floats) or, at an edge, the
// 16 x 16 buffer e. (The tile number must be a literal in the intrinsics.)
inline void load_c(int t, bool full, const float* c, int64_t ldc, const float* e) {
  const void* p = full ? static_cast<const void*>(c) : static_cast<const void*>(e);
  const int64_t stride = full ? ldc * 4 : 64;
  switch (t) {
    case 0: _tile_loadd(0, p, stride); break;
    case 1: _tile_loadd(1, p, stride); break;
    case 2: _tile_loadd(2, p, stride); break;
    default: _tile_loadd(3, p, stride); break;
  }
}
inline void store_c(int t, bool full, float* c, int64_t ldc, float* e) {
  void* p = full ? static_cast<void*>(c) : static_cast<void*>(e);
  const int64_t stride = full ? ldc * 4 : 64;
  switch (t) {
    case 0: _tile_stored(0, p, stride); break;
    case 1: _tile_stored(1, p, stride); break;
    case 2: _tile_stored(2, p, stride); break;
    default: _tile_stored(3, p, stride); break;
  }
}

}  // namespace

void amx_gemm_bf16(const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, int64_t M, int64_t N, int64_t K,
                   float* c, int64_t ldc, bool accumulate) {
  static const TileConfig cfg = full_tiles();
  _tile_loadconfig(&cfg);
  alignas(64) float edge[4][256];
  // Column blocks whose slice of b (K x 256 BF16) stays in L2 while every
  // row block of a meets it.
  constexpr int64_t kNB = 256;
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
          if (accumulate && !full[t]) {
            const int64_t r0 = i0 + (t / 2) * 16, c0 = j0 + (t % 2) * 16;
            for (int64_t r = 0; r < 16; ++r)
              for (int64_t q = 0; q < 16; ++q)
                edge[t][r * 16 + q] = r0 + r < M && c0 + q < N ? c[(r0 + r) * ldc + c0 + q] : 0.0f;
          }
        }
        if (accumulate) {
          load_c(0, full[0], c_ptr(0), ldc, edge[0]);
          load_c(1, full[1], c_ptr(1), ldc, edge[1]);
          load_c(2, full[2], c_ptr(2), ldc, edge[2]);
          load_c(3, full[3], c_ptr(3), ldc, edge[3]);
        } else {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
        }
        // Rows past M and columns past N read the callers' zero padding (a has
        // rows up to a multiple of 32, b columns up to a multiple of 32).
        const uint16_t* a0 = a + i0 * lda;
        const uint16_t* a1 = a0 + 16 * lda;
        for (int64_t k = 0; k < K; k += 32) {
          _tile_loadd(4, a0 + k, lda * 2);
          _tile_loadd(5, a1 + k, lda * 2);
          _tile_loadd(6, b + (k / 2) * ldb * 2 + j0 * 2, ldb * 4);
          _tile_loadd(7, b + (k / 2) * ldb * 2 + (j0 + 16) * 2, ldb * 4);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        store_c(0, full[0], c_ptr(0), ldc, edge[0]);
        store_c(1, full[1], c_ptr(1), ldc, edge[1]);
        store_c(2, full[2], c_ptr(2), ldc, edge[2]);
        store_c(3, full[3], c_ptr(3), ldc, edge[3]);
        for (int t = 0; t < 4; ++t) {
          if (full[t]) continue;
          const int64_t r0 = i0 + (t / 2) * 16, c0 = j0 + (t % 2) * 16;
          for (int64_t r = 0; r < 16 && r0 + r < M; ++r)
            for (int64_t q = 0; q < 16 && c0 + q < N; ++q) c[(r0 + r) * ldc + c0 + q] = edge[t][r * 16 + q];
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

inline __m256i cvt16(const float* p) { return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(p))); }

}  // namespace

void amx_to_bf16_rows(const float* src, int64_t rs, int64_t cs, int64_t rows, int64_t cols, uint16_t* dst,
                      int64_t ldd) {
  if (cs == 1) {
    for (int64_t i = 0; i < rows; ++i) {
      const float* s = src + i * rs;
      uint16_t* d = dst + i * ldd;
      int64_t p = 0;
      for (; p + 16 <= cols; p += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + p), cvt16(s + p));
      for (; p < cols; ++p) d[p] = round_bf16(s[p]);
    }
    return;
  }
  if (rs == 1) {  // transposed source: 16 rows of dst come from 16 contiguous floats of each source row
    alignas(64) uint16_t blk[32][16];
    int64_t i0 = 0;
    for (; i0 + 16 <= rows; i0 += 16)
      for (int64_t p0 = 0; p0 < cols; p0 += 32) {
        const int64_t n = std::min<int64_t>(32, cols - p0);
        for (int64_t q = 0; q < n; ++q)
          _mm256_store_si256(reinterpret_cast<__m256i*>(blk[q]), cvt16(src + (p0 + q) * cs + i0));
        for (int64_t i = 0; i < 16; ++i)
          for (int64_t q = 0; q < n; ++q) dst[(i0 + i) * ldd + p0 + q] = blk[q][i];
      }
    for (int64_t i = i0; i < rows; ++i)
      for (int64_t p = 0; p < cols; ++p) dst[i * ldd + p] = round_bf16(src[i + p * cs]);
    return;
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t p = 0; p < cols; ++p) dst[i * ldd + p] = round_bf16(src[i * rs + p * cs]);
}

void amx_to_bf16_vnni(const float* src, int64_t rs, int64_t cs, int64_t K, int64_t N, uint16_t* dst, int64_t ldd) {
  auto at = [&](int64_t p, int64_t j) -> uint16_t& { return dst[(p / 2) * ldd * 2 + j * 2 + (p % 2)]; };
  if (cs == 1) {  // rows p and p+1 of the source interleave 16 bits at a time
    int64_t p = 0;
    for (; p + 2 <= K; p += 2) {
      const float* r0 = src + p * rs;
      const float* r1 = r0 + rs;
      uint16_t* d = dst + (p / 2) * ldd * 2;
      int64_t j = 0;
      for (; j + 16 <= N; j += 16) {
        const __m256i a = cvt16(r0 + j), b = cvt16(r1 + j);
        const __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + j * 2), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + j * 2 + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
      }
      for (; j < N; ++j) {
        d[j * 2] = round_bf16(r0[j]);
        d[j * 2 + 1] = round_bf16(r1[j]);
      }
    }
    for (; p < K; ++p)
      for (int64_t j = 0; j < N; ++j) at(p, j) = round_bf16(src[p * rs + j]);
    return;
  }
  if (rs == 1) {  // column j of the source is contiguous: its pairs are whole 32-bit words of dst
    uint32_t* d32 = reinterpret_cast<uint32_t*>(dst);
    alignas(64) uint16_t row[32];
    for (int64_t j0 = 0; j0 < N; j0 += 16) {
      const int64_t jn = std::min<int64_t>(16, N - j0);
      for (int64_t p0 = 0; p0 + 32 <= K; p0 += 32)
        for (int64_t j = j0; j < j0 + jn; ++j) {
          const float* s = src + j * cs + p0;
          _mm256_store_si256(reinterpret_cast<__m256i*>(row), cvt16(s));
          _mm256_store_si256(reinterpret_cast<__m256i*>(row + 16), cvt16(s + 16));
          uint32_t pairs[16];
          __builtin_memcpy(pairs, row, sizeof(pairs));
          for (int64_t r = 0; r < 16; ++r) d32[(p0 / 2 + r) * ldd + j] = pairs[r];
        }
      for (int64_t p = K / 32 * 32; p < K; ++p)
        for (int64_t j = j0; j < j0 + jn; ++j) at(p, j) = round_bf16(src[j * cs + p]);
    }
    return;
  }
  for (int64_t p = 0; p < K; ++p)
    for (int64_t j = 0; j < N; ++j) at(p, j) = round_bf16(src[p * rs + j * cs]);
}

}  // namespace strata::kernels
