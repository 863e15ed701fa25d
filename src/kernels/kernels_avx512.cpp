// AVX-512 kernels (compiled with -mavx512f/bw/vl/dq; used only when the CPU has them).
#include "kernels/quant.h"
#include "kernels/simd_avx512.h"
#include "kernels/simd_kernels.h"
#include "kernels/simd_ssm.h"

namespace strata::kernels {

const Table& avx512_table() {
  static const Table t = [] {
    Table r = make_table<VecAvx512>();
    add_ssm_kernels<VecAvx512>(r);
    r.quant_matmul = __builtin_cpu_supports("avx512vnni") ? quant::matmul_vnni : quant::matmul_avx2;
    return r;
  }();
  return t;
}

// AVX-512 plus BF16 products: AVX512-BF16 dot products, or AMX tiles.
const Table& avx512bf16_table() {
  static const Table t = [] {
    Table a = avx512_table();
    a.bf16_pack_x = bf16_pack_x;
    a.bf16_matmul = dot_matmul_bf16;
    a.bf16_gemm = dot_gemm_bf16;
    a.bf16_pack_a = bf16_pack_a;
    a.bf16_pack_b = bf16_pack_b;
    a.dequant_bf16 = dequant_rows_bf16;
    return a;
  }();
  return t;
}

const Table& amx_table() {
  static const Table t = [] {
    Table a = avx512bf16_table();
    a.bf16_matmul = amx_matmul_bf16;
    a.bf16_gemm = amx_gemm_bf16;
    return a;
  }();
  return t;
}

}  // namespace strata::kernels
