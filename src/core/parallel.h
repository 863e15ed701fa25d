// Work sharing over the cores: strata's own fork-join pool (parallel.cpp
// says why not OpenMP's). Each index range (chunk) is handled by exactly one
// thread and results never depend on the thread count: the chunks come from
// n and grain alone. Threads claim chunks one at a time as they finish the
// last, which balances uneven work (causal triangles, a thread slowed by the
// machine).
#pragma once
#include <cstdint>

namespace strata {

void set_num_threads(int n);  // n <= 0: all cores
int num_threads();

namespace detail {
using ChunkFn = void (*)(void* body, int64_t chunk);
// Runs body(c) once for every c in [0, chunks) over the pool, each chunk on
// whichever thread claims it first. An exception thrown by a chunk is
// rethrown here once every thread has finished.
void run_chunks(int64_t chunks, ChunkFn fn, void* body);
bool in_parallel();  // true on a thread running chunks: nested calls run serially
}  // namespace detail

// Calls fn(begin, end) on disjoint chunks covering [0, n), about `grain`
// indices or more each, spread over the threads.
template <class Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t chunks = (n + grain - 1) / grain;
  if (chunks == 1 || num_threads() == 1 || detail::in_parallel()) {
    fn(int64_t{0}, n);
    return;
  }
  auto body = [&](int64_t c) {
    const int64_t b = c * grain;
    fn(b, b + grain < n ? b + grain : n);
  };
  using Body = decltype(body);
  detail::run_chunks(chunks, [](void* p, int64_t c) { (*static_cast<Body*>(p))(c); }, &body);
}

}  // namespace strata
