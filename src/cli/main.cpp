// strata: one binary; the command line is cli::run (src/cli/app.cpp).
#include "cli/common.h"

int main(int argc, char** argv) { return strata::cli::run(argc, argv); }
