// The compute kernels, one table per instruction set. Every entry has a plain
// scalar reference (kernels_scalar.cpp) and AVX2 / AVX-512 versions generated
// from one template (simd_kernels.h) compiled per ISA. Kernels are
// single-threaded; src/kernels/ops.h spreads them over the cores.
#pragma once
#include <cstdint>

#include "core/cpu.h"
#include "kernels/ssm.h"
#include "strata/tensor.h"

namespace strata::kernels {

struct Table {
  // y[i*ldy + j] = sum_k x[i*ldx + k] * w[j*ldw + k]   for i < M, j < N, k < K
  // (x: M rows of activations, w: N rows of weights in [out, in] layout).
  // Every y element is one dot product accumulated in the same order whatever
  // M, N or the position of the row in the call (the order of `dot`), so
  // results never depend on batching or threading.
  void (*matmul_f32)(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw, int64_t N,
                     float* y, int64_t ldy);
  void (*matmul_bf16)(const float* x, int64_t ldx, int64_t M, int64_t K, const uint16_t* w, int64_t ldw, int64_t N,
                      float* y, int64_t ldy);
  // y = w * (x / sqrt(mean(x^2) + eps)) over one row of n.
  void (*rmsnorm)(const float* x, const float* w, float* y, int64_t n, float eps);
  // In place: x = exp(x - max) / sum.
  void (*softmax)(float* x, int64_t n);
  // out = silu(gate) * up = gate / (1 + exp(-gate)) * up.
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);
  // Its backward, with s = sigmoid(gate): d holds d(out) on entry and d(up) =
  // d * gate * s on exit; dgate = d * up * s * (1 + gate * (1 - s)).
  void (*silu_mul_backward)(const float* gate, const float* up, float* d, float* dgate, int64_t n);
  // rotate_half RoPE on n_heads heads of head_dim, in place; cos/sin hold
  // head_dim/2 values for this position: pairs (i, i + head_dim/2).
  void (*rope)(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin);
  float (*dot)(const float* a, const float* b, int64_t n);
  // y += a * x
  void (*axpy)(float a, const float* x, float* y, int64_t n);
  // Attention's weighted sum of values: for every row r < rows,
  //   out[r*ldo + d] (+)= sum over begin[r] <= t < end[r] of p[r*ldp + t] * v[t*ldv + d]   (d < dim)
  // accumulated in increasing t exactly as repeated `axpy` calls would, from
  // 0 (or from out when accumulate), so a block of query rows gives the bits
  // of one row at a time, and keys split into runs give the bits of one run.
  void (*attn_pv)(const float* p, int64_t ldp, int64_t rows, const int64_t* begin, const int64_t* end, const float* v,
                  int64_t ldv, int64_t dim, float* out, int64_t ldo, bool accumulate);
  void (*bf16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  // Register block of the packed GEMM (src/kernels/gemm.cpp): for i < gemm_mr, j < gemm_nr
  //   s = sum over p < kc of ap[p*gemm_mr + i] * bp[p*gemm_nr + j]   (in increasing p, from 0)
  //   c[i*ldc + j] = accumulate ? c[i*ldc + j] + s : s
  // with ap, bp packed panels.
  void (*gemm_micro)(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, bool accumulate);
  int gemm_mr, gemm_nr;
  // Its packing (src/kernels/gemm_pack.h), element (i, p) of A at
  // a[i*a_rs + p*a_cs]: rows i0.. i0+mc, k p0.. p0+kc into MR-row panels; and
  // B's k p0.. p0+kc, columns j0.. j0+nc into NR-column panels. Zero padded.
  void (*gemm_pack_a)(const float* a, int64_t a_rs, int64_t a_cs, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                      float* ap);
  void (*gemm_pack_b)(const float* b, int64_t b_rs, int64_t b_cs, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
                      float* bp);
  // The sum of n floats read as `streams` (1, 2, 4 or 8) independent streams:
  // the values cut into equal parts walked side by side, each with
  // accumulators of its own, two vectors a step. The roofline probe of
  // `strata bench` (src/eval/bandwidth.h) tries several counts: which one
  // pulls the most from memory depends on the machine's prefetchers.
  float (*read_streams)(const float* p, int64_t n, int streams);

  // BF16 products (null below AVX512-BF16): products with BF16 operands and
  // F32 sums, on AMX tiles (gemm_amx.cpp, matmul_amx.cpp) or AVX512-BF16 dot
  // products (dot_bf16.cpp). Both round the F32 operands to BF16 (nearest
  // even) first, so results differ from the F32 paths by BF16-level error.
  //
  // Against stored BF16 weights (prefill, M >= 16 rows, K a multiple of 32):
  // the activations are first packed to BF16 (VNNI order, token blocks
  // [begin, end) of 16) into bf16_packed_x_elems(M, K) elements; then any
  // range of weight rows (N a multiple of 16) is multiplied against them.
  void (*bf16_pack_x)(const float* x, int64_t M, int64_t K, uint16_t* packed, int64_t block_begin, int64_t block_end);
  void (*bf16_matmul)(const uint16_t* packed, int64_t M, int64_t K, const uint16_t* w, int64_t N, float* y,
                      int64_t ldy);
  // The training GEMM: c[M, N] (+)= a[M, K] · b[K, N] from operands in whole
  // tiles (1 KB each, kbs = Kp / 32 tiles per block):
  //   a: tile (rb, kb) = rows 16rb.. x k 32kb.., row-major, at a + (rb*kbs + kb)*512;
  //   b: tile (cb, kb) = k-pairs 16kb.. x columns 16cb.., VNNI, at b + (cb*kbs + kb)*512.
  // Rows up to a multiple of 32, columns up to a multiple of 32 and k up to Kp
  // must be readable and zero past M, N, K.
  void (*bf16_gemm)(const uint16_t* a, const uint16_t* b, int64_t M, int64_t N, int64_t Kp, float* c, int64_t ldc,
                    bool accumulate);
  // Round an F32 view (element (i, p) at src[i*rs + p*cs]) into those
  // layouts: a rows x cols block as A, a K x N block as B.
  void (*bf16_pack_a)(const float* src, int64_t rs, int64_t cs, int64_t rows, int64_t cols, uint16_t* dst, int64_t Kp);
  void (*bf16_pack_b)(const float* src, int64_t rs, int64_t cs, int64_t K, int64_t N, uint16_t* dst, int64_t Kp);

  // State-space mixers (kernels/ssm.h).
  void (*scan_forward)(const ScanArgs& a) = nullptr;
  void (*scan_backward)(const ScanGradArgs& a) = nullptr;
  // One output row of a causal depthwise convolution: for c < n,
  //   y[c] = bias[c] + sum over j < k (in increasing j) of w[j * ldw + c] * in[j][c]
  // (taps tap-major, in[k-1] the current row, k <= kConvMaxTaps), then SiLU when silu.
  void (*dwconv_row)(const float* const* in, const float* w, int64_t ldw, const float* bias, int64_t k, int64_t n,
                     float* y, bool silu) = nullptr;
  // x[i] = softplus(x[i] + bias[i]) = max(v, 0) + log1p(exp(-|v|)), in place.
  void (*softplus_bias)(float* x, const float* bias, int64_t n) = nullptr;
  // Gated linear attention's decay factors (kernels/linear_attention.h):
  // y[i] = s * x[i] * exp(a[i] - b[i]) (b null: exp(a[i])) for i < n.
  void (*mul_exp)(const float* x, const float* a, const float* b, float s, float* y, int64_t n) = nullptr;

  // Products with block-quantized weights (kernels/quant.h): activation rows
  // quantized by quant::quantize_act_row for `type`, weight rows `row_bytes`
  // apart; y[i*ldy + j] = dot(act row i, weight row j) for i < M, j < N,
  // computed alike whatever M and N. AVX-512 uses VNNI where the CPU has it.
  void (*quant_matmul)(DType type, const void* act, int64_t M, int64_t K, const uint8_t* w, size_t row_bytes,
                       int64_t N, float* y, int64_t ldy) = nullptr;
  // Rows of block-quantized weights (`row_bytes` apart, K values each)
  // dequantized and rounded to BF16 (nearest even) into rows x K values at
  // dst: the weight panels of a quantized prefill on the BF16 products.
  // Null below AVX512-BF16.
  void (*dequant_bf16)(DType type, const uint8_t* w, size_t row_bytes, int64_t rows, int64_t K,
                       uint16_t* dst) = nullptr;
};

// The BF16 kernels (pack_bf16.cpp, gemm_amx.cpp, matmul_amx.cpp, dot_bf16.cpp).
int64_t bf16_packed_x_elems(int64_t M, int64_t K);
void bf16_pack_x(const float* x, int64_t M, int64_t K, uint16_t* packed, int64_t block_begin, int64_t block_end);
void bf16_pack_a(const float* src, int64_t rs, int64_t cs, int64_t rows, int64_t cols, uint16_t* dst, int64_t Kp);
void bf16_pack_b(const float* src, int64_t rs, int64_t cs, int64_t K, int64_t N, uint16_t* dst, int64_t Kp);
void amx_matmul_bf16(const uint16_t* packed, int64_t M, int64_t K, const uint16_t* w, int64_t N, float* y,
                     int64_t ldy);
void amx_gemm_bf16(const uint16_t* a, const uint16_t* b, int64_t M, int64_t N, int64_t Kp, float* c, int64_t ldc,
                   bool accumulate);
void dot_matmul_bf16(const uint16_t* packed, int64_t M, int64_t K, const uint16_t* w, int64_t N, float* y,
                     int64_t ldy);
void dot_gemm_bf16(const uint16_t* a, const uint16_t* b, int64_t M, int64_t N, int64_t Kp, float* c, int64_t ldc,
                   bool accumulate);
void dequant_rows_bf16(DType type, const uint8_t* w, size_t row_bytes, int64_t rows, int64_t K, uint16_t* dst);

const Table& table(Isa isa);
inline const Table& active() { return table(active_isa()); }

// Per-ISA tables (defined in kernels_<isa>.cpp).
const Table& scalar_table();
const Table& avx2_table();
const Table& avx512_table();
const Table& avx512bf16_table();
const Table& amx_table();

}  // namespace strata::kernels
