// AVX2 + FMA kernels (compiled with -mavx2 -mfma; used only when the CPU has them).
#include "kernels/quant.h"
#include "kernels/simd_avx2.h"
#include "kernels/simd_kernels.h"
#include "kernels/simd_ssm.h"

namespace strata::kernels {

const Table& avx2_table() {
  static const Table t = [] {
    Table r = make_table<VecAvx2>();
    add_ssm_kernels<VecAvx2>(r);
    r.quant_matmul = quant::matmul_avx2;
    return r;
  }();
  return t;
}

}  // namespace strata::kernels
