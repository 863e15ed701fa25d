// AVX-512 kernels (compiled with -mavx512f/bw/vl/dq; used only when the CPU has them).
#include "kernels/simd_avx512.h"
#include "kernels/simd_kernels.h"
#include "kernels/simd_ssm.h"

namespace strata::kernels {

const Table& avx512_table() {
  static const Table t = [] {
    Table r = make_table<VecAvx512>();
    add_ssm_kernels<VecAvx512>(r);
    return r;
  }();
  return t;
}

const Table& amx_table() {
  static const Table t = [] {
    Table a = make_table<VecAvx512>();
    add_ssm_kernels<VecAvx512>(a);
    a.amx_pack_x = amx_pack_x;
    a.amx_matmul_bf16 = amx_matmul_bf16;
    a.amx_gemm_bf16 = amx_gemm_bf16;
    a.amx_pack_a = amx_pack_a;
    a.amx_pack_b = amx_pack_b;
    return a;
  }();
  return t;
}

}  // namespace strata::kernels
