// Instruction-set selection. Kernels exist for a portable scalar path, AVX2+FMA,
// AVX-512 (F/BW/VL/DQ), AVX-512 with AVX512-BF16 dot products for the BF16
// products, and AVX-512 with AMX tiles for them; the best one the CPU supports
// is used unless STRATA_ISA=scalar|avx2|avx512|avx512bf16|amx forces one
// (tests run every path this way).
#pragma once
#include <string_view>

namespace strata {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3, Amx = 4 };

// Every ISA, slowest first (tests enumerate them).
inline constexpr Isa kAllIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16, Isa::Amx};

std::string_view isa_name(Isa isa);
// The ISAs with BF16 products (kernels::Table::bf16_*).
inline bool isa_has_bf16_products(Isa isa) { return isa >= Isa::Avx512Bf16; }
bool isa_supported(Isa isa);  // by this CPU and OS (AMX: also asks Linux for the tile state)
Isa best_isa();
// The ISA in use: STRATA_ISA if set (an unknown or unsupported value is an
// error), else best_isa(). Decided once, changeable with set_active_isa.
Isa active_isa();
void set_active_isa(Isa isa);  // throws if unsupported

}  // namespace strata
