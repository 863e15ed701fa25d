// oneDNN's sgemm as one backend of the F32 training GEMM (src/kernels/gemm.cpp),
// where strata was built with it; Exec::gemm() says whether a context uses it
// (STRATA_GEMM=own|onednn sets the process default).
#pragma once
#include <cstdint>

#include "kernels/ops.h"

namespace strata::ops {

// One thread's share c[M, N] (+)= a[M, K] · b[K, N] by oneDNN on the calling
// thread. False (c untouched) when the views have no BLAS layout or oneDNN is
// not built in; throws if oneDNN itself fails.
bool onednn_gemm_serial(int64_t M, int64_t N, int64_t K, MatRef a, MatRef b, float* c, int64_t ldc, bool accumulate);

}  // namespace strata::ops
