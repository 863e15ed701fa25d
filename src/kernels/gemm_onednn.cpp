// oneDNN's sgemm as the F32 training GEMM where it is built in. On this
// machine it runs the training shapes 9-33% faster per core than the own
// blocked GEMM, and equal on dW += dYᵀ X (docs/benchmarks.md); the own GEMM
// stays the portable path and the reference the tests compare against.
// oneDNN only ever runs single-threaded pieces here, whose shapes gemm.cpp
// derives from the problem alone, so an element's sum never depends on the
// thread count.
#include "kernels/gemm_onednn.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#ifdef STRATA_HAVE_ONEDNN
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#endif

#include "core/cpu.h"
#include "strata/error.h"

namespace strata::ops {
namespace {

#ifdef STRATA_HAVE_ONEDNN
// A view as a row-major BLAS operand: 'N' with leading dimension rs (columns
// contiguous), or 'T' with leading dimension cs (rows contiguous). False for
// views with no such layout.
bool blas_layout(MatRef m, int64_t rows, int64_t cols, char& trans, int64_t& ld) {
  if (m.cs == 1 && (rows == 1 || m.rs >= std::max<int64_t>(cols, 1))) {
    trans = 'N', ld = rows == 1 ? std::max<int64_t>(cols, 1) : m.rs;
    return true;
  }
  if (m.rs == 1 && (cols == 1 || m.cs >= std::max<int64_t>(rows, 1))) {
    trans = 'T', ld = cols == 1 ? std::max<int64_t>(rows, 1) : m.cs;
    return true;
  }
  return false;
}
#endif

}  // namespace

bool onednn_gemm_serial(int64_t M, int64_t N, int64_t K, MatRef a, MatRef b, float* c, int64_t ldc, bool accumulate) {
#ifdef STRATA_HAVE_ONEDNN
  char ta, tb;
  int64_t lda, ldb;
  if (K == 0 || !blas_layout(a, M, K, ta, lda) || !blas_layout(b, K, N, tb, ldb)) return false;
  // oneDNN (built on OpenMP) would start a team of its own threads: keep it
  // to this one; strata's pool already shares the work (the setting is per
  // calling thread).
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const dnnl_status_t st =
      dnnl_sgemm(ta, tb, M, N, K, 1.0f, a.data, lda, b.data, ldb, accumulate ? 1.0f : 0.0f, c, ldc);
  omp_set_num_threads(saved);
  // The views were checked above, so a failure here is oneDNN's own (c may be
  // partly written: no fallback can repair that).
  if (st != dnnl_success) fail("oneDNN sgemm failed with status ", static_cast<int>(st));
  return true;
#else
  (void)M, (void)N, (void)K, (void)a, (void)b, (void)c, (void)ldc, (void)accumulate;
  return false;
#endif
}

}  // namespace strata::ops
