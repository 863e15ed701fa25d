// Weight rows of the block formats widened to BF16 panels for the BF16
// products of a quantized prefill (ops.cpp): the reference dequantization
// (quant_dequant.h) vectorized by the compiler, then rounded to BF16 (nearest
// even) 32 values at a time. Compiled with AVX512-BF16 and without fused
// multiply-adds (CMakeLists.txt); used only when the CPU has AVX512-BF16.
#include <immintrin.h>

#include <algorithm>

#include "kernels/kernels.h"
#include "kernels/quant_dequant.h"
#include "strata/error.h"

namespace strata::kernels {

void dequant_rows_bf16(DType type, const uint8_t* w, size_t row_bytes, int64_t rows, int64_t K, uint16_t* dst) {
  constexpr int64_t kChunk = 1024;  // a multiple of every block, 4 KB of floats in L1
  alignas(64) float buf[kChunk];
  const int64_t block = dtype_block(type);
  if (K % block != 0 || K % 32 != 0) fail("dequant_bf16: ", K, " values are not whole ", dtype_name(type), " blocks");
  const size_t chunk_bytes = static_cast<size_t>(kChunk / block) * static_cast<size_t>(dtype_block_bytes(type));
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* in = w + r * row_bytes;
    uint16_t* out = dst + r * K;
    for (int64_t k0 = 0; k0 < K; k0 += kChunk, in += chunk_bytes) {
      const int64_t n = std::min(kChunk, K - k0);
      if (!quant::dequantize_blocks(type, in, buf, n / block, [](uint16_t h) { return _cvtsh_ss(h); }))
        fail("dequant_bf16: ", dtype_name(type), " is not a quantized type");
      for (int64_t i = 0; i < n; i += 32) {
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_load_ps(buf + i + 16), _mm512_load_ps(buf + i));
        _mm512_storeu_si512(out + k0 + i, reinterpret_cast<__m512i>(v));
      }
    }
  }
}

}  // namespace strata::kernels
