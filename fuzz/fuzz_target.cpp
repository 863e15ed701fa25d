// One libFuzzer target (fuzz/CMakeLists.txt compiles this file once per
// entry point, with STRATA_FUZZ_TARGET set to its name).
#include <cstring>

#include "entry_points.h"

#ifndef STRATA_FUZZ_TARGET
#error "STRATA_FUZZ_TARGET must name an entry point"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto run = [] {
    for (const strata::fuzz::Target& t : strata::fuzz::targets())
      if (std::strcmp(t.name, STRATA_FUZZ_TARGET) == 0) return t.run;
    __builtin_trap();
  }();
  run(data, size);
  return 0;
}
