// Which library runs the F32 training GEMM (src/kernels/gemm.cpp): oneDNN's
// sgemm where strata was built with it and the CPU has SIMD, else the own
// blocked GEMM. STRATA_GEMM=own in the environment picks the own one
// (STRATA_GEMM=onednn is the default; any other value is an error).
#pragma once
#include <cstdint>

#include "kernels/ops.h"

namespace strata::ops {

enum class GemmBackend { Own, OneDnn };
bool onednn_available();  // built with oneDNN and the active ISA is not scalar
void set_gemm_backend(GemmBackend b);
GemmBackend gemm_backend();  // the setting, or Own where oneDNN is unavailable

// One thread's share c[M, N] (+)= a[M, K] · b[K, N] by oneDNN on the calling
// thread. False (c untouched) when the views have no BLAS layout or oneDNN is
// not built in; throws if oneDNN itself fails.
bool onednn_gemm_serial(int64_t M, int64_t N, int64_t K, MatRef a, MatRef b, float* c, int64_t ldc, bool accumulate);

}  // namespace strata::ops
