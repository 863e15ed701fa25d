#include "test_util.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/rng.h"
#include "strata/error.h"

namespace fs = std::filesystem;

namespace strata::test {

std::string shared_data_dir() {
  if (const char* env = std::getenv("STRATA_SHARED_DATA"); env && *env) {
    return fs::exists(fs::path(env) / "stories260K.bin") ? std::string(env) : std::string();
  }
  fs::path p = fs::path(STRATA_SOURCE_DIR) / ".." / "shared" / "data";
  if (fs::exists(p / "stories260K.bin")) return fs::weakly_canonical(p).string();
  return {};
}

std::string llamacpp_lib_dir() {
  if (const char* env = std::getenv("STRATA_LLAMACPP_LIBS"); env && *env)
    return fs::exists(fs::path(env) / "libggml-base.so") ? std::string(env) : std::string();
  fs::path home;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) home = x;
  else if (const char* h = std::getenv("HOME"); h && *h) home = fs::path(h) / ".cache";
  else return {};
  const fs::path p = home / "strata" / "node-llama-cpp-3.21.1" / "node_modules" / "@node-llama-cpp" / "linux-x64" /
                     "bins" / "linux-x64";
  return fs::exists(p / "libggml-base.so") ? p.string() : std::string();
}

namespace {
struct TempRoot {
  fs::path root;
  TempRoot() {
    std::string tmpl = (fs::temp_directory_path() / "strata-test-XXXXXX").string();
    char* r = mkdtemp(tmpl.data());
    root = r ? fs::path(r) : fs::temp_directory_path();
  }
  ~TempRoot() {
    std::error_code ec;
    if (!std::getenv("STRATA_KEEP_TEMP")) fs::remove_all(root, ec);
  }
};
TempRoot& temp_root() {
  static TempRoot r;
  return r;
}
}  // namespace

std::string make_temp_dir(const std::string& tag) {
  static int counter = 0;
  fs::path p = temp_root().root / (tag + "-" + std::to_string(counter++));
  fs::create_directories(p);
  return p.string();
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary);
  f << content;
}

CliResult run_cli(const std::string& args, const std::string& env) { return run_binary(STRATA_CLI_PATH, args, env); }

namespace {

CliResult run_with_stdin(const std::string& binary, const std::string& args, const std::string& env,
                         const std::string& in) {
  std::string dir = make_temp_dir("cli");
  std::string out = dir + "/out", err = dir + "/err";
  std::string cmd = env + (env.empty() ? "" : " ") + std::string("'") + binary + "' " + args + " >'" + out +
                    "' 2>'" + err + "' <'" + in + "'";
  int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

}  // namespace

CliResult run_binary(const std::string& binary, const std::string& args, const std::string& env) {
  return run_with_stdin(binary, args, env, "/dev/null");
}

CliResult run_cli_with_input(const std::string& args, const std::string& input) {
  const std::string in = make_temp_dir("cli-in") + "/stdin";
  write_file(in, input);
  return run_with_stdin(STRATA_CLI_PATH, args, "", in);
}

double relative_error(const float* a, const float* b, int64_t n) {
  double diff = 0, ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    ref += static_cast<double>(b[i]) * b[i];
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

std::vector<nlohmann::json> read_metrics_lines(const std::string& run_dir) {
  std::vector<nlohmann::json> out;
  std::ifstream f(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(f, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string write_pattern_tokens(const std::string& dir, int64_t n, int vocab) {
  const std::string path = dir + "/tokens.bin";
  std::ofstream f(path, std::ios::binary);
  Rng r(9);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t v = static_cast<uint16_t>(r.uniform() < 0.8f ? (i % vocab) : r.next() % vocab);
    f.write(reinterpret_cast<const char*>(&v), 2);
  }
  return path;
}

}  // namespace strata::test
