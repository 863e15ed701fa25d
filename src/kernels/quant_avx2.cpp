// Quantized products with AVX2 (compiled with -mavx2 -mfma -mf16c).
#include "kernels/quant_simd.h"

namespace strata::quant {

void matmul_avx2(DType type, const void* act, int64_t M, int64_t K, const uint8_t* w, size_t row_bytes, int64_t N,
                 float* y, int64_t ldy) {
  simd::matmul<false>(type, act, M, K, w, row_bytes, N, y, ldy);
}

}  // namespace strata::quant
