// BF16 products with AVX512-BF16 dot products (vdpbf16ps), for CPUs that
// have AVX512-BF16 but no AMX tiles (AMD Zen 4 and later, Intel Cooper Lake,
// Sapphire Rapids with AMX withheld by the kernel). Same operands and
// contracts as the AMX kernels (kernels.h), so the callers are shared: one
// vdpbf16ps multiplies 16 pairs of BF16 and adds them to 16 F32 sums, twice
// the multiplications of an F32 FMA, from half the bytes.
//
// Both kernels hold a block of 8 rows x 32 columns of F32 sums in 16
// registers; per pair of k they load two vectors of the packed operand
// (16 columns x one k pair each) and broadcast one 32-bit k pair of each of
// the 8 rows. Every sum runs over k in the same order whatever the call's
// shape or share of the work, so results never depend on the thread count.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"

namespace strata::kernels {
namespace {

constexpr int64_t kTile = 512;  // BF16 elements per 1 KB tile (16 rows x 32)

inline __m512bh pair_of(const uint16_t* p) {  // one k pair broadcast to all 16 lanes
  uint32_t v;
  std::memcpy(&v, p, 4);
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(v)));
}
inline __m512bh vec_of(const uint16_t* p) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p)); }

inline __mmask16 first(int64_t n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); }

// GEMM block: rows i0.. i0+7 of a (within one 16-row tile block) against the
// column tiles j0/16 and j0/16 + 1 of b, over k tiles kb0.. kb1.
void gemm_block(const uint16_t* a, const uint16_t* b, int64_t kbs, int64_t M, int64_t N, int64_t i0, int64_t j0,
                int64_t kb0, int64_t kb1, float* c, int64_t ldc, bool acc) {
  __m512 s[8][2];
  const __mmask16 m0 = first(N - j0), m1 = first(N - j0 - 16);
  for (int i = 0; i < 8; ++i) {
    const float* ci = c + (i0 + i) * ldc + j0;
    const bool load = acc && i0 + i < M;
    s[i][0] = load ? _mm512_maskz_loadu_ps(m0, ci) : _mm512_setzero_ps();
    s[i][1] = load ? _mm512_maskz_loadu_ps(m1, ci + 16) : _mm512_setzero_ps();
  }
  const uint16_t* at = a + (i0 / 16) * kbs * kTile + (i0 % 16) * 32;
  const uint16_t* bt0 = b + (j0 / 16) * kbs * kTile;
  const uint16_t* bt1 = bt0 + kbs * kTile;
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    const uint16_t* ak = at + kb * kTile;
    const uint16_t* b0 = bt0 + kb * kTile;
    const uint16_t* b1 = bt1 + kb * kTile;
    for (int r = 0; r < 16; ++r) {
      const __m512bh v0 = vec_of(b0 + r * 32), v1 = vec_of(b1 + r * 32);
      for (int i = 0; i < 8; ++i) {
        const __m512bh p = pair_of(ak + i * 32 + 2 * r);
        s[i][0] = _mm512_dpbf16_ps(s[i][0], p, v0);
        s[i][1] = _mm512_dpbf16_ps(s[i][1], p, v1);
      }
    }
  }
  for (int i = 0; i < 8 && i0 + i < M; ++i) {
    float* ci = c + (i0 + i) * ldc + j0;
    _mm512_mask_storeu_ps(ci, m0, s[i][0]);
    _mm512_mask_storeu_ps(ci + 16, m1, s[i][1]);
  }
}

// Matmul block: weight rows n0.. n0+R-1 (as stored, row stride K) against
// token blocks tb.. tb+TB-1 of the packed activations; y gets the transpose.
template <int R, int TB>
void matmul_block(const uint16_t* packed, int64_t M, int64_t K, const uint16_t* w, int64_t n0, int64_t tb, float* y,
                  int64_t ldy) {
  __m512 s[R][TB];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TB; ++t) s[i][t] = _mm512_setzero_ps();
  const uint16_t* x0 = packed + tb * 16 * K;
  const uint16_t* wr = w + n0 * K;
  for (int64_t kb = 0; kb < K / 32; ++kb) {
    for (int kk = 0; kk < 16; ++kk) {
      __m512bh v[TB];
      for (int t = 0; t < TB; ++t) v[t] = vec_of(x0 + t * 16 * K + kb * kTile + kk * 32);
      for (int i = 0; i < R; ++i) {
        const __m512bh p = pair_of(wr + i * K + kb * 32 + 2 * kk);
        for (int t = 0; t < TB; ++t) s[i][t] = _mm512_dpbf16_ps(s[i][t], p, v[t]);
      }
    }
  }
  alignas(64) float out[R][16];
  for (int t = 0; t < TB; ++t) {
    const int64_t tok0 = (tb + t) * 16, tokens = std::min<int64_t>(16, M - tok0);
    for (int i = 0; i < R; ++i) _mm512_store_ps(out[i], s[i][t]);
    for (int64_t q = 0; q < tokens; ++q)
      for (int i = 0; i < R; ++i) y[(tok0 + q) * ldy + n0 + i] = out[i][q];
  }
}

template <int TB>
void matmul_rows(const uint16_t* packed, int64_t M, int64_t K, const uint16_t* w, int64_t n0, int64_t rows,
                 int64_t tb, float* y, int64_t ldy) {
  switch (rows) {
    case 1: return matmul_block<1, TB>(packed, M, K, w, n0, tb, y, ldy);
    case 2: return matmul_block<2, TB>(packed, M, K, w, n0, tb, y, ldy);
    case 3: return matmul_block<3, TB>(packed, M, K, w, n0, tb, y, ldy);
    case 4: return matmul_block<4, TB>(packed, M, K, w, n0, tb, y, ldy);
    case 5: return matmul_block<5, TB>(packed, M, K, w, n0, tb, y, ldy);
    case 6: return matmul_block<6, TB>(packed, M, K, w, n0, tb, y, ldy);
    case 7: return matmul_block<7, TB>(packed, M, K, w, n0, tb, y, ldy);
    default: return matmul_block<8, TB>(packed, M, K, w, n0, tb, y, ldy);
  }
}

}  // namespace

void dot_gemm_bf16(const uint16_t* a, const uint16_t* b, int64_t M, int64_t N, int64_t Kp, float* c, int64_t ldc,
                   bool accumulate) {
  const int64_t kbs = Kp / 32;
  // Equal reduction blocks of up to 16 tiles (512 k) and column blocks of
  // 256: a block of b (up to 256 KB) stays in L2 while 8 rows of a (up to
  // 8 KB) meet all of it from L1.
  constexpr int64_t kMaxKB = 16, kNB = 256;
  const int64_t kKB = (kbs + (kbs + kMaxKB - 1) / kMaxKB - 1) / ((kbs + kMaxKB - 1) / kMaxKB);
  for (int64_t kb0 = 0; kb0 < kbs; kb0 += kKB) {
    const int64_t kb1 = std::min(kbs, kb0 + kKB);
    const bool acc = accumulate || kb0 > 0;
    for (int64_t n0 = 0; n0 < N; n0 += kNB)
      for (int64_t i0 = 0; i0 < M; i0 += 8)
        for (int64_t j0 = n0; j0 < std::min(N, n0 + kNB); j0 += 32)
          gemm_block(a, b, kbs, M, N, i0, j0, kb0, kb1, c, ldc, acc);
  }
}

void dot_matmul_bf16(const uint16_t* packed, int64_t M, int64_t K, const uint16_t* w, int64_t N, float* y,
                     int64_t ldy) {
  const int64_t token_blocks = (M + 15) / 16;
  // 128 weight rows meet 128 tokens at a time; 8 rows of weights (16 KB at
  // K = 1024) stay in L1 while the block's tokens pass.
  for (int64_t n0 = 0; n0 < N; n0 += 128) {
    const int64_t n1 = std::min(N, n0 + 128);
    for (int64_t t0 = 0; t0 < token_blocks; t0 += 8) {
      const int64_t t1 = std::min(token_blocks, t0 + 8);
      for (int64_t nb = n0; nb < n1; nb += 8) {
        const int64_t rows = std::min<int64_t>(8, n1 - nb);
        int64_t tb = t0;
        for (; tb + 2 <= t1; tb += 2) matmul_rows<2>(packed, M, K, w, nb, rows, tb, y, ldy);
        if (tb < t1) matmul_rows<1>(packed, M, K, w, nb, rows, tb, y, ldy);
      }
    }
  }
}

}  // namespace strata::kernels
