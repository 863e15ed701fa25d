// Quantized products with AVX-512 VNNI dot products on 256-bit vectors
// (compiled with -mavx512vnni -mavx512vl; used only when the CPU has them).
#include "kernels/quant_simd.h"

namespace strata::quant {

void matmul_vnni(DType type, const void* act, int64_t M, int64_t K, const uint8_t* w, size_t row_bytes, int64_t N,
                 float* y, int64_t ldy) {
  simd::matmul<true>(type, act, M, K, w, row_bytes, N, y, ldy);
}

}  // namespace strata::quant
