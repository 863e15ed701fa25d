// Replays the fuzzing corpus kept in the project (tests/fuzz-corpus/<target>/:
// inputs that once broke a parser, and a few the fuzzer found interesting)
// through the same entry points the libFuzzer targets call (fuzz/), so a
// build without clang still checks them. Each input must be parsed or
// refused with strata's own error; anything else fails here (and under the
// sanitizer build, any memory error or leak too).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "entry_points.h"

namespace strata::fuzz {
namespace {

namespace fs = std::filesystem;

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class FuzzCorpus : public ::testing::TestWithParam<Target> {};

TEST_P(FuzzCorpus, EveryInputIsParsedOrRefusedCleanly) {
  const Target& t = GetParam();
  const fs::path dir = fs::path(STRATA_SOURCE_DIR) / "tests" / "fuzz-corpus" / t.name;
  ASSERT_TRUE(fs::is_directory(dir)) << dir << " is missing";
  // Edge cases every target must take: nothing, one byte, a JSON null, a GGUF magic alone.
  for (const std::string& s : {std::string(), std::string(1, '\0'), std::string("null"), std::string("GGUF")})
    EXPECT_NO_THROW(t.run(reinterpret_cast<const uint8_t*>(s.data()), s.size())) << t.name;
  int inputs = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string b = bytes_of(e.path());
    EXPECT_NO_THROW(t.run(reinterpret_cast<const uint8_t*>(b.data()), b.size())) << e.path();
    ++inputs;
  }
  EXPECT_GT(inputs, 0) << dir;
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzCorpus, ::testing::ValuesIn(targets()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace strata::fuzz
