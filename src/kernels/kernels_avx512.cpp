// AVX-512 kernels (compiled with -mavx512f/bw/vl/dq; used only when the CPU has them).
#include "kernels/simd_avx512.h"
#include "kernels/simd_kernels.h"

namespace strata::kernels {

const Table& avx512_table() {
  static const Table t = make_table<VecAvx512>();
  return t;
}

}  // namespace strata::kernels
