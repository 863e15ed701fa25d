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

}  // namespace strata::kernels
