// Memory read bandwidth, measured the way decode reads weights: every thread
// streams its share of a buffer far larger than the caches, in memory backed
// like the weights (transparent huge pages where the kernel grants them). The
// roofline that `strata bench` puts next to decode speed.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/exec.h"

namespace strata {

struct BandwidthProbe {
  int64_t bytes = int64_t{1} << 30;  // buffer size
  int passes = 3;                    // best of, per stream count
  // Independent streams per thread to try (the best counts): one sequential
  // read per thread leaves memory idle on some machines, several streams
  // confuse the prefetchers of others.
  std::vector<int> streams = {1, 4, 8};
};

struct BandwidthResult {
  double gb_s = 0;   // the best (1e9 bytes per second, all threads)
  int streams = 0;   // per thread, where it was reached
  std::vector<std::pair<int, double>> by_streams;  // every count tried
};

BandwidthResult read_bandwidth(const Exec& ex, const BandwidthProbe& probe = {});

}  // namespace strata
