// The strata command line with one more module type registered
// (tests/extra/running_mean.h): the very commands users run, on a mixer the
// engine does not know (tests/extra/test_extra_module.cpp drives it).
#include "cli/common.h"
#include "extra/running_mean.h"

int main(int argc, char** argv) {
  strata::test::register_running_mean();
  return strata::cli::run(argc, argv);
}
