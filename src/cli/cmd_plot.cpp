// strata plot: train and validation loss of a run (metrics.jsonl) to a PNG via gnuplot.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "cli/common.h"
#include "strata/error.h"
#include "train/run_state.h"

namespace strata::cli {

namespace {

namespace fs = std::filesystem;

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

// A gnuplot single-quoted string: only ' needs escaping (doubled).
std::string gp_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

void append_block(std::string& script, const char* name, const std::vector<std::pair<int64_t, double>>& pts) {
  script += cat("$", name, " << EOD\n");
  char buf[64];
  for (const auto& [step, v] : pts) {
    std::snprintf(buf, sizeof buf, "%lld %.9g\n", (long long)step, v);
    script += buf;
  }
  script += "EOD\n";
}

void plot(const std::string& run, std::string out) {
  const fs::path metrics = fs::is_directory(run) ? fs::path(run) / kMetricsFile : fs::path(run);
  if (!fs::exists(metrics)) fail(metrics.string(), ": no such file (is '", run, "' a training run directory?)");
  if (out.empty()) out = (metrics.parent_path().empty() ? fs::path(".") : metrics.parent_path()) / "loss.png";
  if ((out + run).find_first_of("\n\r") != std::string::npos) fail("path contains a newline: cannot plot");
  const MetricsSeries m = read_metrics(metrics.string());
  if (m.loss.empty() && m.val_loss.empty()) fail(metrics.string(), ": no 'loss' or 'val_loss' values to plot");

  const std::string gnuplot = find_gnuplot();
  if (gnuplot.empty()) fail("gnuplot not found in PATH: install it (Debian: apt-get install gnuplot-nox)");

  std::string script =
      "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
      "  set terminal pngcairo size 1000,600 noenhanced\n"
      "} else {\n"
      "  set terminal png size 1000,600 noenhanced\n"
      "}\n";
  script += "set output " + gp_quote(out) + "\n";
  script += "set title " + gp_quote(run) + "\n";
  script += "set xlabel 'step'\nset ylabel 'loss'\nset grid\nset key top right\n";
  append_block(script, "train", m.loss);
  append_block(script, "val", m.val_loss);
  std::string plots;
  if (!m.loss.empty()) plots += "$train using 1:2 with lines lw 1.5 lc rgb '#1f77b4' title 'train loss'";
  if (!m.val_loss.empty())
    plots += std::string(plots.empty() ? "" : ", ") +
             "$val using 1:2 with linespoints pt 7 ps 0.8 lw 1.5 lc rgb '#d62728' title 'val loss'";
  script += "plot " + plots + "\nset output\n";

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
  if (!fs::is_regular_file(out, ec) || fs::file_size(out, ec) == 0) fail(out, ": gnuplot wrote no image");
  std::fprintf(stderr, "wrote %s (%zu train points, %zu validation points)\n", out.c_str(), m.loss.size(),
               m.val_loss.size());
}

}  // namespace

void register_plot(CLI::App& app) {
  struct Opts {
    std::string run, out;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("plot", "plot train and validation loss of a run to a PNG (needs gnuplot)");
  cmd->add_option("run", o->run, "run directory (or its metrics.jsonl)")->required();
  cmd->add_option("-o,--output", o->out, "PNG to write (default: RUN_DIR/loss.png)");
  cmd->callback([o] { plot(o->run, o->out); });
}

}  // namespace strata::cli
