#include "kernels/exec.h"

#include <cstdlib>
#include <cstring>

#include "kernels/kernels.h"
#include "strata/error.h"

namespace strata {
namespace {

ops::GemmBackend env_gemm() {
  const char* env = std::getenv("STRATA_GEMM");
  if (!env || !*env || std::strcmp(env, "onednn") == 0) return ops::GemmBackend::OneDnn;
  if (std::strcmp(env, "own") == 0) return ops::GemmBackend::Own;
  fail("STRATA_GEMM=", env, ": expected own or onednn");
}

}  // namespace

bool onednn_available(Isa isa) {
#ifdef STRATA_HAVE_ONEDNN
  return isa != Isa::Scalar;
#else
  (void)isa;
  return false;
#endif
}

Exec Exec::defaults() { return Exec(active_isa(), ops::Precision::F32, env_gemm()); }

Exec::Exec(Isa isa, ops::Precision precision, ops::GemmBackend gemm)
    : isa_(isa), kt_(&kernels::table(isa)), precision_(precision), gemm_(gemm) {
  if (!isa_supported(isa)) fail("ISA ", isa_name(isa), " is not supported by this CPU");
}

bool Exec::bf16_products() const { return precision_ == ops::Precision::BF16 && kt_->bf16_gemm; }

ops::GemmBackend Exec::gemm() const {
  return gemm_ == ops::GemmBackend::OneDnn && onednn_available(isa_) ? ops::GemmBackend::OneDnn
                                                                       : ops::GemmBackend::Own;
}

Exec Exec::with_isa(Isa isa) const { return Exec(isa, precision_, gemm_); }
Exec Exec::with_precision(ops::Precision p) const { return Exec(isa_, p, gemm_); }
Exec Exec::with_gemm(ops::GemmBackend b) const { return Exec(isa_, precision_, b); }

}  // namespace strata
