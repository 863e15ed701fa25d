#include "cli/gnuplot.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "strata/error.h"

namespace strata::cli {
namespace {

// The gnuplot executable on PATH, or "".
std::string find_gnuplot() {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    const std::string exe = (dir.empty() ? std::string(".") : dir) + "/gnuplot";
    struct stat st;
    if (::stat(exe.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(exe.c_str(), X_OK) == 0) return exe;
  }
  return {};
}

std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

std::string gp_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string png_terminal(int width, int height) {
  const std::string size = std::to_string(width) + "," + std::to_string(height);
  return "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n  set terminal pngcairo size " + size +
         " noenhanced\n} else {\n  set terminal png size " + size + " noenhanced\n}\n";
}

void run_gnuplot(const std::string& script, const std::string& out) {
  if (out.find_first_of("\n\r") != std::string::npos) fail("path contains a newline: cannot plot");
  const std::string gnuplot = find_gnuplot();
  if (gnuplot.empty()) fail("gnuplot not found in PATH: install it (Debian: apt-get install gnuplot-nox)");
  // gnuplot dying early must give an error, not kill us with SIGPIPE.
  struct sigaction ign {}, old {};
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ign, &old);
  FILE* p = ::popen(sh_quote(gnuplot).c_str(), "w");
  if (!p) {
    ::sigaction(SIGPIPE, &old, nullptr);
    fail("cannot start gnuplot (", gnuplot, ")");
  }
  const bool wrote = std::fwrite(script.data(), 1, script.size(), p) == script.size();
  const int status = ::pclose(p);
  ::sigaction(SIGPIPE, &old, nullptr);
  if (!wrote || status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("gnuplot failed writing ", out, " (its messages are above)");
  std::error_code ec;
  if (!std::filesystem::is_regular_file(out, ec) || std::filesystem::file_size(out, ec) == 0)
    fail(out, ": gnuplot wrote no image");
}

}  // namespace strata::cli
