#include "core/cpu.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "strata/error.h"

namespace strata {
namespace {

Isa parse_env_isa() {
  const char* env = std::getenv("STRATA_ISA");
  if (!env || !*env) return best_isa();
  std::string v = env;
  Isa isa;
  if (v == "scalar") isa = Isa::Scalar;
  else if (v == "avx2") isa = Isa::Avx2;
  else if (v == "avx512") isa = Isa::Avx512;
  else if (v == "avx512bf16") isa = Isa::Avx512Bf16;
  else if (v == "amx") isa = Isa::Amx;
  else fail("STRATA_ISA='", v, "': expected scalar, avx2, avx512, avx512bf16 or amx");
  if (!isa_supported(isa)) fail("STRATA_ISA=", v, ": this CPU does not support it");
  return isa;
}

Isa& active_slot() {
  static Isa isa = parse_env_isa();
  return isa;
}

}  // namespace

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512bf16";
    case Isa::Amx: return "amx";
  }
  return "?";
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case Isa::Avx512:
      return isa_supported(Isa::Avx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    case Isa::Avx512Bf16:
      return isa_supported(Isa::Avx512) && __builtin_cpu_supports("avx512bf16");
    case Isa::Amx: {
      // Linux hands out the 8 KB tile state only on request (once per process).
      static const bool granted = [] {
        if (!isa_supported(Isa::Avx512Bf16) || !__builtin_cpu_supports("amx-tile") ||
            !__builtin_cpu_supports("amx-bf16"))
          return false;
        constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
        return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
      }();
      return granted;
    }
  }
  return false;
}

Isa best_isa() {
  if (isa_supported(Isa::Amx)) return Isa::Amx;
  if (isa_supported(Isa::Avx512Bf16)) return Isa::Avx512Bf16;
  if (isa_supported(Isa::Avx512)) return Isa::Avx512;
  if (isa_supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Scalar;
}

Isa active_isa() { return active_slot(); }

void set_active_isa(Isa isa) {
  if (!isa_supported(isa)) fail("ISA ", isa_name(isa), " is not supported by this CPU");
  active_slot() = isa;
}

}  // namespace strata
