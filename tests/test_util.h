// Shared helpers for tests: where ../shared/data is, temp dirs, running the CLI.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>

namespace strata::test {

// ../shared/data beside the project, or $STRATA_SHARED_DATA. Empty if absent.
std::string shared_data_dir();
// Skips the current test with a visible message when shared data is absent.
#define STRATA_REQUIRE_SHARED_DATA(var)                                                   \
  const std::string var = ::strata::test::shared_data_dir();                              \
  if (var.empty()) GTEST_SKIP() << "shared test data not found (../shared/data or "        \
                                   "STRATA_SHARED_DATA): skipping"

// A fresh empty directory under the build's temp area, removed at exit.
std::string make_temp_dir(const std::string& tag);

struct CliResult {
  int exit_code;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the strata binary with `args` (already shell-quoted as needed).
CliResult run_cli(const std::string& args, const std::string& env = "");
// The same with another binary (e.g. the command line with extra module types).
CliResult run_binary(const std::string& binary, const std::string& args, const std::string& env = "");

std::string read_file(const std::string& path);
// The message of the strata::Error that f throws, or "<no error>".
std::string error_of(const std::function<void()>& f);
void write_file(const std::string& path, const std::string& content);

}  // namespace strata::test
