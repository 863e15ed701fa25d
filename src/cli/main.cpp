// strata: one binary; the command line is cli::run (src/cli/app.cpp).
#include <csignal>

#include "cli/common.h"

int main(int argc, char** argv) {
  // Past a file size limit (ulimit -f), writes fail with EFBIG and the writer
  // names the file, instead of the process dying from SIGXFSZ mid-checkpoint.
  std::signal(SIGXFSZ, SIG_IGN);
  return strata::cli::run(argc, argv);
}
