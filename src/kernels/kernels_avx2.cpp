// AVX2 + FMA kernels (compiled with -mavx2 -mfma; used only when the CPU has them).
#include "kernels/simd_avx2.h"
#include "kernels/simd_kernels.h"

namespace strata::kernels {

const Table& avx2_table() {
  static const Table t = make_table<VecAvx2>();
  return t;
}

}  // namespace strata::kernels
