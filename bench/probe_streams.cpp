// The read-bandwidth probe per number of streams per thread, rounds run one
// after another in one process (the machine is shared and its bandwidth moves
// by the minute): prints each round and the medians.
//   build-bench/probe_streams [rounds] [threads]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "eval/bandwidth.h"

int main(int argc, char** argv) {
  using namespace strata;
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  set_num_threads(argc > 2 ? std::atoi(argv[2]) : 0);
  const Exec ex = Exec::defaults();
  BandwidthProbe p;
  p.passes = 1;
  p.streams = {1, 2, 4, 8};
  std::map<int, std::vector<double>> all;
  std::vector<double> best;
  for (int r = 0; r < rounds; ++r) {
    const BandwidthResult res = read_bandwidth(ex, p);
    std::printf("round %d:", r);
    for (auto [s, gb] : res.by_streams) {
      all[s].push_back(gb);
      std::printf("  %d stream%s %.1f GB/s", s, s > 1 ? "s" : "", gb);
    }
    best.push_back(res.gb_s);
    std::printf("\n");
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("medians (isa %s, %d threads):", std::string(isa_name(ex.isa())).c_str(), num_threads());
  for (auto& [s, v] : all) std::printf("  %d: %.1f", s, median(v));
  std::printf("  best of each round: %.1f GB/s\n", median(best));
}
