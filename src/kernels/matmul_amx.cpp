// BF16 matmul on AMX tiles (compiled with -mamx-tile -mamx-bf16 -mavx512bf16;
// used only when the CPU and the kernel grant AMX).
//
// y[M, N] = x[M, K] · w[N, K]ᵀ with w BF16 in its stored [out, in] layout: a
// 16 x 32 block of w is an AMX "A" tile loaded straight from the weights (row
// stride K), so weights need no repacking and decode keeps reading the same
// memory. The activations are the "B" operand: rounded to BF16 and packed once
// per call into VNNI order (pairs of consecutive k of one token side by side).
// A C tile is then 16 weight rows x 16 tokens of F32 sums, written transposed
// into y.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/amx_tiles.h"
#include "kernels/kernels.h"

namespace strata::kernels {
namespace {

// Writes the C tile (16 weight rows x 16 tokens) transposed into y.
inline void store_transposed(const float* c, float* y, int64_t ldy, int64_t tokens) {
  for (int64_t n = 0; n < tokens; ++n)
    for (int m = 0; m < 16; ++m) y[n * ldy + m] = c[m * 16 + n];
}

}  // namespace

void amx_matmul_bf16(const uint16_t* packed, int64_t M, int64_t K, const uint16_t* w, int64_t N, float* y,
                     int64_t ldy) {
  static const TileConfig cfg = full_tiles();  // tmm0-3: C (2 x 2), tmm4-5: A (weights), tmm6-7: B (tokens)
  _tile_loadconfig(&cfg);
  const int64_t kb_count = K / 32, token_blocks = (M + 15) / 16;
  const int64_t wstride = K * 2;  // bytes between weight rows
  alignas(64) float c[4][256];
  // Cache blocking: 128 weight rows (256 KB at K=1024..) meet 128 tokens at a time.
  for (int64_t n0 = 0; n0 < N; n0 += 128) {
    const int64_t n1 = n0 + 128 < N ? n0 + 128 : N;
    for (int64_t t0 = 0; t0 < token_blocks; t0 += 8) {
      const int64_t t1 = t0 + 8 < token_blocks ? t0 + 8 : token_blocks;
      for (int64_t nb = n0; nb < n1; nb += 32) {
        const bool two_a = nb + 32 <= n1;
        for (int64_t tb = t0; tb < t1; tb += 2) {
          const bool two_b = tb + 1 < t1;
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
          const uint16_t* b0 = packed + tb * 16 * K;
          const uint16_t* b1 = b0 + 16 * K;
          const uint16_t* a0 = w + nb * K;
          const uint16_t* a1 = a0 + 16 * K;
          for (int64_t kb = 0; kb < kb_count; ++kb) {
            _tile_loadd(4, a0 + kb * 32, wstride);
            _tile_loadd(6, b0 + kb * 512, 64);
            _tile_dpbf16ps(0, 4, 6);
            if (two_b) {
              _tile_loadd(7, b1 + kb * 512, 64);
              _tile_dpbf16ps(1, 4, 7);
            }
            if (two_a) {
              _tile_loadd(5, a1 + kb * 32, wstride);
              _tile_dpbf16ps(2, 5, 6);
              if (two_b) _tile_dpbf16ps(3, 5, 7);
            }
          }
          _tile_stored(0, c[0], 64);
          _tile_stored(1, c[1], 64);
          _tile_stored(2, c[2], 64);
          _tile_stored(3, c[3], 64);
          for (int bi = 0; bi < (two_b ? 2 : 1); ++bi) {
            const int64_t tok0 = (tb + bi) * 16;
            const int64_t tokens = M - tok0 < 16 ? M - tok0 : 16;
            if (tokens <= 0) continue;
            store_transposed(c[bi], y + tok0 * ldy + nb, ldy, tokens);
            if (two_a) store_transposed(c[2 + bi], y + tok0 * ldy + nb + 16, ldy, tokens);
          }
        }
      }
    }
  }
  _tile_release();
}

}  // namespace strata::kernels
