#include "eval/bandwidth.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "strata/error.h"

namespace strata {

BandwidthResult read_bandwidth(const Exec& ex, const BandwidthProbe& probe) {
  const int64_t n = probe.bytes / static_cast<int64_t>(sizeof(float));
  const size_t len = static_cast<size_t>(n) * sizeof(float);
  // Anonymous memory with the huge-page hint, as the weights get (Tensor::relocate).
  void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) fail("bandwidth probe: cannot map ", len, " bytes");
  madvise(mem, len, MADV_HUGEPAGE);
  float* buf = static_cast<float*>(mem);
  std::fill(buf, buf + n, 1.0f);  // every page resident before timing
  const kernels::Table& kt = ex.kernels();
  const int64_t threads = num_threads();
  BandwidthResult r;
  for (int streams : probe.streams) {
    double best = 0;
    for (int pass = 0; pass < probe.passes; ++pass) {
      std::vector<float> partial(static_cast<size_t>(threads));
      const auto t0 = std::chrono::steady_clock::now();
      parallel_for(threads, 1, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          const int64_t lo = n / threads * t, hi = t + 1 == threads ? n : n / threads * (t + 1);
          partial[t] = kt.read_streams(buf + lo, hi - lo, streams);
        }
      });
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      float sum = 0;
      for (float v : partial) sum += v;
      if (sum < 0) best = 0;  // keeps the reads alive
      best = std::max(best, static_cast<double>(len) / s / 1e9);
    }
    r.by_streams.emplace_back(streams, best);
    if (best > r.gb_s) r.gb_s = best, r.streams = streams;
  }
  munmap(mem, len);
  return r;
}

}  // namespace strata
