// Work sharing over the cores. OpenMP underneath; each index range is handled
// by exactly one thread and results never depend on the thread count. Chunks
// are dealt round-robin, which balances triangular (causal) work too.
#pragma once
#include <cstdint>

namespace strata {

void set_num_threads(int n);  // n <= 0: all cores
int num_threads();

// Calls fn(begin, end) on disjoint chunks covering [0, n), about `grain`
// indices or more each, spread over the threads.
template <class Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t chunks = (n + grain - 1) / grain;
  if (chunks == 1 || num_threads() == 1) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel for schedule(static, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * grain;
    const int64_t e = b + grain < n ? b + grain : n;
    fn(b, e);
  }
}

}  // namespace strata
