// 16-lane float vector for AVX-512 (F/BW/VL/DQ). Included only by
// kernels_avx512.cpp, which is compiled with the matching -m flags.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace strata::kernels {
namespace {

struct VecAvx512 {
  using R = __m512;
  static constexpr int kWidth = 16;
  static constexpr int kRowsX = 4;  // prefill micro-kernel: 4 activation rows x 4 weight rows
  static constexpr int kRowsW = 4;
  static constexpr int kRowsWGemv = 8;  // decode: 8 independent accumulators hide FMA latency
  static constexpr int kGemmMR = 8, kGemmNV = 3;  // GEMM block 8 x 48: 24 of the 32 registers accumulate

  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float v) { return _mm512_set1_ps(v); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R load_bf16(const uint16_t* p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static R round(R a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for integral-valued n in the normal exponent range.
  static R pow2(R n) {
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static float reduce_add(R v) {
    // Fixed pairwise order: 16 -> 8 -> 4 -> 2 -> 1.
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
  }
  static float reduce_max(R v) { return _mm512_reduce_max_ps(v); }
};

}  // namespace
}  // namespace strata::kernels
