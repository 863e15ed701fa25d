// Instruction-set selection. Kernels exist for a portable scalar path, AVX2+FMA,
// AVX-512 (F/BW/VL/DQ) and AVX-512 plus AMX tiles for BF16 matmuls; the best
// one the CPU supports is used unless STRATA_ISA=scalar|avx2|avx512|amx forces
// one (tests run every path this way).
#pragma once
#include <string_view>

namespace strata {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2, Amx = 3 };

std::string_view isa_name(Isa isa);
bool isa_supported(Isa isa);  // by this CPU and OS (AMX: also asks Linux for the tile state)
Isa best_isa();
// The ISA in use: STRATA_ISA if set (an unknown or unsupported value is an
// error), else best_isa(). Decided once, changeable with set_active_isa.
Isa active_isa();
void set_active_isa(Isa isa);  // throws if unsupported

}  // namespace strata
