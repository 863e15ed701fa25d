// Packing for the blocked GEMM (src/kernels/gemm.cpp), compiled per ISA with
// the micro-kernel it feeds (internal linkage: each ISA's file gets its own
// copy). A panels are [p][MR] (rows side by side), B panels [p][NR].
#pragma once
#include <algorithm>
#include <cstdint>

namespace strata::kernels {
namespace {

// ap[panel][p][i] = A(i0 + panel*MR + i, p0 + p), zero past the last row.
// Unit strides get their own loops (plain copies, or a transpose through a
// small block), since packing is a sizeable share when N is short.
template <int MR>
void pack_a_panels(const float* a_data, int64_t a_rs, int64_t a_cs, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                   float* ap) {
  const int64_t full = a_rs == 1 ? mc / MR * MR : 0;
  if (full > 0) {  // columns of A contiguous: read each one once, across all panels
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = a_data + i0 + (p0 + p) * a_cs;
      for (int64_t r0 = 0; r0 < full; r0 += MR)
        for (int i = 0; i < MR; ++i) ap[r0 * kc + p * MR + i] = src[r0 + i];
    }
  }
  for (int64_t r0 = full; r0 < mc; r0 += MR) {
    const int64_t rows = std::min<int64_t>(MR, mc - r0);
    float* dst = ap + r0 * kc;
    const float* src = a_data + (i0 + r0) * a_rs + p0 * a_cs;
    if (rows == MR && a_cs == 1) {
      constexpr int64_t kB = 16;
      float blk[MR][kB];
      int64_t p = 0;
      for (; p + kB <= kc; p += kB) {
        for (int i = 0; i < MR; ++i)
          for (int64_t q = 0; q < kB; ++q) blk[i][q] = src[i * a_rs + p + q];
        for (int64_t q = 0; q < kB; ++q)
          for (int i = 0; i < MR; ++i) dst[(p + q) * MR + i] = blk[i][q];
      }
      for (; p < kc; ++p)
        for (int i = 0; i < MR; ++i) dst[p * MR + i] = src[i * a_rs + p];
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        int64_t i = 0;
        for (; i < rows; ++i) dst[p * MR + i] = src[i * a_rs + p * a_cs];
        for (; i < MR; ++i) dst[p * MR + i] = 0.0f;
      }
    }
  }
}

// bp[panel][p][j] = B(p0 + p, j0 + panel*nr + j), zero past the last column.
template <int NR>
void pack_b_panels(const float* b_data, int64_t b_rs, int64_t b_cs, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
                   float* bp) {
  constexpr int64_t nr = NR;
  for (int64_t c0 = 0; c0 < nc; c0 += nr) {
    const int64_t cols = std::min<int64_t>(nr, nc - c0);
    float* dst = bp + c0 * kc;
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = b_data + (p0 + p) * b_rs + (j0 + c0) * b_cs;
      int64_t j = 0;
      if (b_cs == 1)
        for (; j < cols; ++j) dst[p * nr + j] = src[j];
      else
        for (; j < cols; ++j) dst[p * nr + j] = src[j * b_cs];
      for (; j < nr; ++j) dst[p * nr + j] = 0.0f;
    }
  }
}

}  // namespace
}  // namespace strata::kernels
