// strata plot: train and validation loss of one run (metrics.jsonl), or of several
// runs overlaid with a legend, to a PNG via gnuplot.

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "cli/common.h"
#include "cli/gnuplot.h"
#include "strata/error.h"
#include "train/run_state.h"

namespace strata::cli {

namespace {

namespace fs = std::filesystem;

void append_block(std::string& script, const char* name, const std::vector<std::pair<int64_t, double>>& pts) {
  script += cat("$", name, " << EOD\n");
  char buf[64];
  for (const auto& [step, v] : pts) {
    std::snprintf(buf, sizeof buf, "%lld %.9g\n", (long long)step, v);
    script += buf;
  }
  script += "EOD\n";
}

// One run's curves and its legend name.
struct Run {
  std::string arg, label;
  fs::path metrics;
  MetricsSeries m;
};

Run load_run(const std::string& arg) {
  Run r;
  r.arg = arg;
  r.metrics = fs::is_directory(arg) ? fs::path(arg) / kMetricsFile : fs::path(arg);
  if (!fs::exists(r.metrics)) fail(r.metrics.string(), ": no such file (is '", arg, "' a training run directory?)");
  r.m = read_metrics(r.metrics.string());
  if (r.m.loss.empty() && r.m.val_loss.empty()) fail(r.metrics.string(), ": no 'loss' or 'val_loss' values to plot");
  // The name of the directory holding metrics.jsonl ("demo-out/samba/" -> "samba").
  std::error_code ec;
  r.label = fs::absolute(r.metrics, ec).lexically_normal().parent_path().filename().string();
  if (r.label.empty()) r.label = arg;
  return r;
}

// Legend names must tell the runs apart: equal directory names fall back to
// the paths as given, and equal paths to a position suffix.
void distinct_labels(std::vector<Run>& runs) {
  auto dup = [&](size_t i) {
    for (size_t j = 0; j < runs.size(); ++j)
      if (j != i && runs[j].label == runs[i].label) return true;
    return false;
  };
  std::vector<size_t> clash;
  for (size_t i = 0; i < runs.size(); ++i)
    if (dup(i)) clash.push_back(i);
  for (size_t i : clash) runs[i].label = runs[i].arg;
  clash.clear();
  for (size_t i = 0; i < runs.size(); ++i)
    if (dup(i)) clash.push_back(i);
  for (size_t i : clash) runs[i].label += cat(" #", i + 1);
}

// The gnuplot script: one run in the original colours and title, several runs
// in one colour each (train loss a faint line, validation loss points on top).
std::string plot_script(const std::vector<Run>& runs, const std::string& out) {
  static const char* const kColours[] = {"1f77b4", "d62728", "2ca02c", "ff7f0e", "9467bd",
                                         "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf"};
  const bool one = runs.size() == 1;
  std::string title = one ? runs[0].arg : "";
  for (size_t i = 0; !one && i < runs.size(); ++i) title += (i ? " vs " : "") + runs[i].label;
  std::string script = png_terminal(1000, 600);
  script += "set output " + gp_quote(out) + "\n";
  script += "set title " + gp_quote(title) + "\n";
  script += "set xlabel 'step'\nset ylabel 'loss'\nset grid\nset key top right\n";
  std::string plots;
  auto add = [&](const std::string& p) { plots += (plots.empty() ? "" : ", ") + p; };
  for (size_t i = 0; i < runs.size(); ++i) {
    const MetricsSeries& m = runs[i].m;
    const std::string n = std::to_string(i);
    append_block(script, ("train" + n).c_str(), m.loss);
    append_block(script, ("val" + n).c_str(), m.val_loss);
    const std::string rgb = kColours[i % std::size(kColours)];
    const std::string train_rgb = one ? "#1f77b4" : "#70" + rgb;  // ARGB: partly transparent
    const std::string val_rgb = one ? "#d62728" : "#" + rgb;
    const std::string name = one ? "" : runs[i].label + " ";
    if (!m.loss.empty())
      add(cat("$train", n, " using 1:2 with lines lw ", one ? "1.5" : "1", " lc rgb '", train_rgb, "' title ",
              gp_quote(name + "train loss")));
    if (!m.val_loss.empty())
      add(cat("$val", n, " using 1:2 with linespoints pt 7 ps ", one ? "0.8" : "1.2", " lw ", one ? "1.5" : "2.5",
              " lc rgb '", val_rgb, "' title ", gp_quote(name + "val loss")));
  }
  return script + "plot " + plots + "\nset output\n";
}

void plot(const std::vector<std::string>& args, std::string out) {
  if (args.size() > 1 && out.empty()) fail("plotting several runs needs -o OUT.png (which file to write)");
  std::string paths = out;
  for (const std::string& a : args) paths += a;
  if (paths.find_first_of("\n\r") != std::string::npos) fail("path contains a newline: cannot plot");
  std::vector<Run> runs;
  for (const std::string& a : args) runs.push_back(load_run(a));
  distinct_labels(runs);
  if (out.empty())
    out = (runs[0].metrics.parent_path().empty() ? fs::path(".") : runs[0].metrics.parent_path()) / "loss.png";

  run_gnuplot(plot_script(runs, out), out);
  if (runs.size() == 1) {
    std::fprintf(stderr, "wrote %s (%zu train points, %zu validation points)\n", out.c_str(), runs[0].m.loss.size(),
                 runs[0].m.val_loss.size());
    return;
  }
  std::fprintf(stderr, "wrote %s:", out.c_str());
  for (size_t i = 0; i < runs.size(); ++i)
    std::fprintf(stderr, "%s '%s' (%zu train points, %zu validation points)", i ? "," : "", runs[i].label.c_str(),
                 runs[i].m.loss.size(), runs[i].m.val_loss.size());
  std::fprintf(stderr, "\n");
}

}  // namespace

void register_plot(CLI::App& app) {
  struct Opts {
    std::vector<std::string> runs;
    std::string out;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand(
      "plot", "plot train and validation loss of one run, or of several runs overlaid, to a PNG (needs gnuplot)");
  cmd->add_option("runs", o->runs,
                  "run directories (or their metrics.jsonl); several are overlaid, each named by its directory")
      ->required();
  cmd->add_option("-o,--output", o->out, "PNG to write (default with one run: RUN_DIR/loss.png; required with several)");
  cmd->callback([o] { plot(o->runs, o->out); });
}

}  // namespace strata::cli
