// Shared helpers for tests: where ../shared/data is, temp dirs, running the CLI.
#pragma once
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

namespace strata::test {

// ../shared/data beside the project, or $STRATA_SHARED_DATA. Empty if absent.
std::string shared_data_dir();
// Skips the current test with a visible message when shared data is absent.
#define STRATA_REQUIRE_SHARED_DATA(var)                                                   \
  const std::string var = ::strata::test::shared_data_dir();                              \
  if (var.empty()) GTEST_SKIP() << "shared test data not found (../shared/data or "        \
                                   "STRATA_SHARED_DATA): skipping"

// The folder of llama.cpp's prebuilt libraries (libggml-base.so, libllama*.so)
// that scripts/setup_llamacpp.sh installs: $STRATA_LLAMACPP_LIBS, else that
// script's default folder. Empty if absent.
std::string llamacpp_lib_dir();
#define STRATA_REQUIRE_LLAMACPP(var)                                                              \
  const std::string var = ::strata::test::llamacpp_lib_dir();                                     \
  if (var.empty()) GTEST_SKIP() << "llama.cpp libraries not found (scripts/setup_llamacpp.sh or " \
                                   "STRATA_LLAMACPP_LIBS): skipping the comparison with llama.cpp"

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
// The command line with `input` on its standard input.
CliResult run_cli_with_input(const std::string& args, const std::string& input);

std::string read_file(const std::string& path);
// The message of the strata::Error that f throws, or "<no error>".
std::string error_of(const std::function<void()>& f);
void write_file(const std::string& path, const std::string& content);

// RUN_DIR/metrics.jsonl, one object per line.
std::vector<nlohmann::json> read_metrics_lines(const std::string& run_dir);
// DIR/tokens.bin: n uint16 tokens below `vocab`, a learnable pattern (next =
// previous + 1) with 20% seeded noise, so a training loss can fall.
std::string write_pattern_tokens(const std::string& dir, int64_t n, int vocab);

// The relative L2 error ||a - b|| / ||b|| of n values (infinite if any is not finite).
double relative_error(const float* a, const float* b, int64_t n);
// For paths that round activations to BF16 (the BF16 products) where exact
// paths agree bit for bit: logits of a model agree to a few BF16 roundings
// (relative L2 error at most 2^-5; a BF16 value carries 2^-9).
#define STRATA_EXPECT_BF16_CLOSE(a, b, n, what) \
  EXPECT_LE(::strata::test::relative_error((a), (b), (n)), 1.0 / 32) << (what)

}  // namespace strata::test
