#include "kernels/kernels.h"

namespace strata::kernels {

const Table& table(Isa isa) {
  switch (isa) {
    case Isa::Amx: return amx_table();
    case Isa::Avx512Bf16: return avx512bf16_table();
    case Isa::Avx512: return avx512_table();
    case Isa::Avx2: return avx2_table();
    case Isa::Scalar: break;
  }
  return scalar_table();
}

}  // namespace strata::kernels
