// Block-quantized weights in GGUF's layouts (docs/quantization.md): the block
// formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (32 values a block) and the K-quants Q4_K, Q5_K,
// Q6_K (256 values a super-block), byte for byte as llama.cpp stores them, so
// a GGUF tensor is used in place from the file mapping.
//
// Here: the block structs, the reference quantizers (the same arithmetic as
// ggml's reference quantizers, so blocks are bit-identical and files written
// here quantize as llama.cpp's own tools would), dequantization, and the
// activation side of the products: an activation row is quantized once per
// call to signed 8-bit blocks (Q8 per 32 values with their sum, or Q8K per
// 256 with sums of 16) and every weight row is dotted against it in integer
// arithmetic. The scalar dot products here are the reference for the SIMD
// kernels (quant_avx2.cpp, quant_avx512.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "strata/tensor.h"

namespace strata::quant {

inline constexpr int kBlock = 32;    // values per block of Q8_0 / Q4_0 / Q4_1
inline constexpr int kSuper = 256;   // values per super-block of the K-quants

struct BlockQ8_0 {
  uint16_t d;  // F16 scale
  int8_t qs[kBlock];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kBlock / 2];  // value j in the low nibble of byte j, value j + 16 in the high nibble
};
struct BlockQ4_1 {
  uint16_t d, m;  // value = q * d + m
  uint8_t qs[kBlock / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // fifth bits: bit j for value j
  uint8_t qs[kBlock / 2];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kBlock / 2];
};
struct BlockQ4_K {
  uint16_t d, dmin;     // super-block scales of the 6-bit sub-block scales and mins
  uint8_t scales[12];   // 8 scales and 8 mins of 6 bits (packing: scale_min_k4)
  uint8_t qs[kSuper / 2];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[kSuper / 8];  // the fifth bits
  uint8_t qs[kSuper / 2];
};
struct BlockQ6_K {
  uint8_t ql[kSuper / 2];      // low 4 bits
  uint8_t qh[kSuper / 4];      // high 2 bits
  int8_t scales[kSuper / 16];  // 16 sub-blocks of 16
  uint16_t d;
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// Activations quantized for the products: per 32 values (Q8_0 / Q4_0 / Q4_1
// weights) with the sum of the quants, or per 256 (K-quants) with sums per 16.
struct ActQ8 {
  float d;
  int32_t sum;
  int8_t qs[kBlock];
};
struct ActQ8K {
  float d;
  int16_t bsums[kSuper / 16];
  int8_t qs[kSuper];
};

// Unpacks sub-block j's 6-bit scale and min of a Q4_K / Q5_K super-block.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Rounds to the nearest integer, ties to even (|x| < 2^22), as the reference quantizers do.
inline int nearest_int(float x) {
  float v = x + 12582912.f;  // 1.5 * 2^23: the integer lands in the low mantissa bits
  int32_t i;
  __builtin_memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// Reference quantization of n values (a multiple of the type's block) into
// blocks, and back. Types: the quantized DTypes.
void quantize_row(DType type, const float* x, void* out, int64_t n);
void dequantize_row(DType type, const void* in, float* y, int64_t n);

// The activation format a weight type is multiplied against, and its bytes
// for a row of K values.
bool uses_q8k(DType type);
size_t act_row_bytes(DType weight_type, int64_t K);
// Quantizes one activation row of K values for products with `weight_type`.
void quantize_act_row(DType weight_type, const float* x, void* act, int64_t K);

// Reference products: y[i*ldy + j] = dot(act row i, weight row j) for i < M,
// j < N, weight rows `row_bytes` apart. Every y element is computed alike
// whatever M and N (the SIMD kernels keep that too, so decode and prefill agree).
void matmul_scalar(DType type, const void* act, int64_t M, int64_t K, const uint8_t* w, size_t row_bytes, int64_t N,
                   float* y, int64_t ldy);
float dot_scalar(DType type, const void* w_row, const void* act_row, int64_t K);
// The same in SIMD (quant_simd.h): AVX2, and AVX-512 VNNI.
void matmul_avx2(DType type, const void* act, int64_t M, int64_t K, const uint8_t* w, size_t row_bytes, int64_t N,
                 float* y, int64_t ldy);
void matmul_vnni(DType type, const void* act, int64_t M, int64_t K, const uint8_t* w, size_t row_bytes, int64_t N,
                 float* y, int64_t ldy);

}  // namespace strata::quant
