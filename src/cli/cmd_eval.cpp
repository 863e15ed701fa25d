// strata eval passkey: passkey retrieval over a grid of lengths and depths
// (docs/long-context.md): the prompt of src/eval/passkey.h, greedy decoding,
// first-digit-run scoring; a length x depth table of accuracy, the overall
// accuracy, prompt tokens/s, and the heat map as a PNG.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/common.h"
#include "cli/gnuplot.h"
#include "eval/length_eval.h"
#include "eval/passkey.h"
#include "strata/error.h"
#include "strata/generate.h"

namespace strata::cli {
namespace {

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> r;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) r.push_back(t);
  return r;
}

std::vector<int64_t> parse_lengths(const std::string& s) {
  std::vector<int64_t> r;
  for (const std::string& t : split_commas(s)) r.push_back(parse_length(t, "--lengths"));
  if (r.empty()) fail("--lengths: no length given");
  return r;
}

std::vector<double> parse_depths(const std::string& s) {
  std::vector<double> r;
  for (const std::string& t : split_commas(s)) {
    char* end = nullptr;
    const double d = std::strtod(t.c_str(), &end);
    if (t.empty() || end != t.c_str() + t.size() || !(d >= 0 && d <= 1))
      fail("--depths: '", t, "' is not a depth in [0, 1]");
    r.push_back(d);
  }
  if (r.empty()) fail("--depths: no depth given");
  return r;
}

// Memory the machine has for new allocations (MemAvailable), or -1.
int64_t available_bytes() {
  std::ifstream f("/proc/meminfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("MemAvailable:", 0) == 0) return std::stoll(line.substr(13)) * 1024;
  return -1;
}

// Refuses, before any work, a length whose decode state would not fit in memory.
void check_memory(const Model& m, int64_t length) {
  const int64_t need = m.state_bytes(length + 16), have = available_bytes();
  if (have > 0 && need > have * 9 / 10)
    fail("passkey length ", length, " needs ", need / 1048576, " MiB of decode state (", m.config().recipe,
         " keeps every position), more than the ", have / 1048576, " MiB available");
}

struct PasskeyOpts {
  ModelFlags model;
  std::string lengths = "1k,2k,4k", depths = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1";
  int64_t samples = 5, new_tokens = 8;
  uint64_t seed = 0;
  bool json = false;
  std::string png;
};

void write_heatmap(const std::string& out, const std::string& title, const std::vector<int64_t>& lengths,
                   const std::vector<double>& depths, const std::vector<std::vector<double>>& acc) {
  std::string s = png_terminal(900, 600) + "set output " + gp_quote(out) + "\nset title " + gp_quote(title) + "\n";
  s += "set xlabel 'context length (tokens)'\nset ylabel 'key depth'\nset cblabel 'accuracy'\n";
  s += "set cbrange [0:1]\nset palette defined (0 '#b2182b', 0.5 '#fddbc7', 1 '#2166ac')\n";
  s += "set xrange [-0.5:" + std::to_string(lengths.size()) + "-0.5]\nset yrange [-0.5:" +
       std::to_string(depths.size()) + "-0.5]\nset xtics (";
  for (size_t i = 0; i < lengths.size(); ++i) s += (i ? ", " : "") + gp_quote(std::to_string(lengths[i])) + " " + std::to_string(i);
  s += ")\nset ytics (";
  char buf[64];
  for (size_t j = 0; j < depths.size(); ++j) {
    std::snprintf(buf, sizeof buf, "'%g' %zu", depths[j], j);
    s += (j ? ", " : "") + std::string(buf);
  }
  s += ")\n$acc << EOD\n";
  for (size_t i = 0; i < lengths.size(); ++i)
    for (size_t j = 0; j < depths.size(); ++j) {
      std::snprintf(buf, sizeof buf, "%zu %zu %.6f\n", i, j, acc[i][j]);
      s += buf;
    }
  s += "EOD\nplot $acc using 1:2:3 with image notitle, $acc using 1:2:(sprintf('%.0f%%', 100*$3)) with labels notitle\n";
  run_gnuplot(s + "set output\n", out);
}

void eval_passkey(const PasskeyOpts& o) {
  const std::vector<int64_t> lengths = parse_lengths(o.lengths);
  const std::vector<double> depths = parse_depths(o.depths);
  Loaded l = load(o.model, true);
  for (int64_t n : lengths) check_memory(*l.model, n);
  GenerateOptions g;
  g.max_new_tokens = o.new_tokens;
  g.sampler.temperature = 0.0f;  // greedy
  g.vocab_limit = l.tokenizer->vocab_size();
  std::vector<std::vector<double>> acc(lengths.size(), std::vector<double>(depths.size(), 0.0));
  nlohmann::json trials = nlohmann::json::array();
  double prefill_s = 0, total_correct = 0;
  int64_t prompt_tokens = 0, trial = 0;
  const int64_t all = static_cast<int64_t>(lengths.size() * depths.size()) * o.samples;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < lengths.size(); ++i)
    for (size_t j = 0; j < depths.size(); ++j)
      for (int64_t s = 0; s < o.samples; ++s, ++trial) {
        const PasskeyPrompt p = passkey_prompt(*l.tokenizer, l.add_bos, lengths[i], depths[j], passkey_key(o.seed, trial));
        const GenerateResult r = generate(*l.model, p.ids, g, [](int32_t) { return true; });
        const std::string answer = l.tokenizer->decode(r.tokens);
        const bool ok = passkey_correct(answer, p.key);
        acc[i][j] += ok ? 1.0 / static_cast<double>(o.samples) : 0.0;
        total_correct += ok;
        prefill_s += r.prefill_seconds;
        prompt_tokens += static_cast<int64_t>(p.ids.size());
        trials.push_back({{"length", lengths[i]}, {"depth", depths[j]}, {"key", p.key},
                          {"prompt_tokens", p.ids.size()}, {"answer", answer}, {"correct", ok}});
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "\rtrial %lld/%lld  length %lld depth %.2f  %s  %.0f prompt tok/s  ETA %.0fs   ",
                     (long long)trial + 1, (long long)all, (long long)lengths[i], depths[j], ok ? "ok   " : "wrong",
                     prompt_tokens / (prefill_s > 0 ? prefill_s : 1e-9), el / (trial + 1) * (all - trial - 1));
      }
  std::fprintf(stderr, "\n");
  const double overall = total_correct / static_cast<double>(all), tok_s = prompt_tokens / (prefill_s > 0 ? prefill_s : 1e-9);
  if (o.json) {
    nlohmann::json j = {{"lengths", lengths}, {"depths", depths}, {"accuracy", acc}, {"overall", overall},
                        {"samples", o.samples}, {"prompt_tokens_per_s", tok_s}, {"trials", trials}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%-8s", "depth");
    for (int64_t n : lengths) std::printf(" %8lld", (long long)n);
    std::printf("\n");
    for (size_t j = 0; j < depths.size(); ++j) {
      std::printf("%-8.2f", depths[j]);
      for (size_t i = 0; i < lengths.size(); ++i) std::printf(" %7.0f%%", 100 * acc[i][j]);
      std::printf("\n");
    }
    std::printf("overall accuracy %.1f%% over %lld trials; prompts at %.1f tok/s\n", 100 * overall, (long long)all, tok_s);
  }
  if (!o.png.empty()) {
    write_heatmap(o.png, "passkey retrieval: " + o.model.path, lengths, depths, acc);
    std::fprintf(stderr, "wrote %s\n", o.png.c_str());
  }
}

struct LengthOpts {
  std::vector<std::string> models;
  std::string tokenizer, text, lengths = "512,1k,2k,4k", self_extend, png;
  int threads = 0;
  bool json = false;
};

void write_length_plot(const std::string& out, const std::vector<std::string>& labels,
                       const std::vector<std::vector<LengthPoint>>& pts) {
  std::string s = png_terminal(1000, 600) + "set output " + gp_quote(out) + "\n";
  s += "set title 'perplexity against evaluation length'\nset xlabel 'evaluation length (tokens)'\n";
  s += "set ylabel 'perplexity'\nset logscale x 2\nset logscale y\nset grid\nset key top left\n";
  std::string plots;
  char buf[96];
  for (size_t m = 0; m < pts.size(); ++m) {
    s += "$m" + std::to_string(m) + " << EOD\n";
    for (const LengthPoint& p : pts[m])
      if (p.scored > 0) {
        std::snprintf(buf, sizeof buf, "%lld %.9g\n", (long long)p.length, p.perplexity());
        s += buf;
      }
    s += "EOD\n";
    plots += (m ? ", " : "") + std::string("$m") + std::to_string(m) + " using 1:2 with linespoints lw 2 pt 7 title " +
             gp_quote(labels[m]);
  }
  run_gnuplot(s + "plot " + plots + "\nset output\n", out);
}

void eval_length(const LengthOpts& o) {
  const std::vector<int64_t> lengths = parse_lengths(o.lengths);
  std::ifstream f(o.text, std::ios::binary);
  if (!f) fail(o.text, ": cannot read the text file");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> labels;
  std::vector<std::vector<LengthPoint>> all;
  for (const std::string& path : o.models) {
    Loaded l = load(ModelFlags{path, o.tokenizer, o.threads, o.self_extend}, true);
    const std::vector<int32_t> tokens = l.tokenizer->encode(text, false);
    const int64_t n = static_cast<int64_t>(tokens.size());
    // The same tokens at every length: the most whole windows of the longest
    // length that fits; a length longer than the text scores nothing.
    int64_t longest = 0;
    for (int64_t L : lengths)
      if (L <= n) longest = std::max(longest, L);
    if (longest == 0) fail(o.text, ": ", n, " tokens, shorter than every evaluation length");
    const int64_t scored = n / longest * longest;
    std::vector<LengthPoint> pts;
    for (int64_t L : lengths) {
      if (L > n) {
        std::fprintf(stderr, "%s: length %lld skipped: the text has %lld tokens\n", path.c_str(), (long long)L, (long long)n);
        pts.push_back(LengthPoint{L});
        continue;
      }
      pts.push_back(length_perplexity(*l.model, tokens, l.model->config().bos_token_id, L, scored / L * L,
                                      [&](int64_t done, int64_t total) {
                                        std::fprintf(stderr, "\r%s length %lld: %lld/%lld tokens   ", path.c_str(),
                                                     (long long)L, (long long)done, (long long)total);
                                      }));
      std::fprintf(stderr, "\n");
    }
    // The model's name: its directory, or the run's for a checkpoint-N of a run.
    const std::filesystem::path fp = std::filesystem::path(path).lexically_normal();
    std::string label = fp.filename().string();
    if (label.rfind("checkpoint-", 0) == 0 && !fp.parent_path().filename().empty())
      label = fp.parent_path().filename().string();
    if (label.empty() || label == ".") label = path;
    labels.push_back(label);
    all.push_back(std::move(pts));
  }
  if (o.json) {
    nlohmann::json j = nlohmann::json::array();
    for (size_t m = 0; m < all.size(); ++m)
      for (const LengthPoint& p : all[m])
        j.push_back({{"model", o.models[m]}, {"length", p.length}, {"windows", p.windows}, {"scored", p.scored},
                     {"perplexity", p.scored ? nlohmann::json(p.perplexity()) : nlohmann::json()},
                     {"tokens_per_s", p.seconds > 0 ? p.scored / p.seconds : 0.0}});
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%-8s", "length");
    for (const std::string& l : labels) std::printf(" %14s", l.c_str());
    std::printf("\n");
    for (size_t i = 0; i < lengths.size(); ++i) {
      std::printf("%-8lld", (long long)lengths[i]);
      for (const auto& pts : all)
        pts[i].scored ? std::printf(" %14.3f", pts[i].perplexity()) : std::printf(" %14s", "-");
      std::printf("\n");
    }
    std::printf("(%lld tokens scored at every length)\n", (long long)(all.empty() ? 0 : all[0][0].scored));
  }
  if (!o.png.empty()) {
    write_length_plot(o.png, labels, all);
    std::fprintf(stderr, "wrote %s\n", o.png.c_str());
  }
}

}  // namespace

void register_eval(CLI::App& app) {
  CLI::App* eval = app.add_subcommand("eval", "long-context evaluations (docs/long-context.md)");
  eval->require_subcommand(1);
  auto o = std::make_shared<PasskeyOpts>();
  CLI::App* pk = eval->add_subcommand("passkey", "passkey retrieval accuracy over lengths x depths (greedy)");
  add_model_flags(pk, o->model);
  add_self_extend_flag(pk, o->model);
  pk->add_option("--lengths", o->lengths, "prompt lengths in tokens, comma-separated (k = 1024)");
  pk->add_option("--depths", o->depths, "key depths in [0, 1], comma-separated");
  pk->add_option("--samples", o->samples, "keys per (length, depth) cell")->check(above(0));
  pk->add_option("--new-tokens", o->new_tokens, "tokens generated per answer")->check(above(0));
  pk->add_option("--seed", o->seed, "seed of the keys");
  pk->add_flag("--json", o->json, "print one JSON object (with every trial)");
  pk->add_option("-o,--output", o->png, "heat map PNG to write (needs gnuplot)");
  pk->callback([o] { eval_passkey(*o); });

  auto lo = std::make_shared<LengthOpts>();
  CLI::App* len = eval->add_subcommand("length", "perplexity against the evaluation length, one line per model");
  len->add_option("-m,--model", lo->models, "model(s): HF directory, .safetensors, .gguf or llama2.c .bin (repeat -m)")
      ->required()
      ->take_all();
  len->add_option("--tokenizer", lo->tokenizer, "SentencePiece .model or tokenizer.json (default: each model's own)");
  len->add_option("--text", lo->text, "text file")->required();
  len->add_option("--lengths", lo->lengths, "evaluation lengths in tokens, comma-separated (k = 1024)");
  len->add_option("--self-extend", lo->self_extend, "G,W: Self-Extend for the models' RoPE attention");
  len->add_flag("--json", lo->json, "print one JSON array (one object per model and length)");
  len->add_option("-o,--output", lo->png, "PNG plot to write (needs gnuplot)");
  add_threads_option(len, &lo->threads);
  len->callback([lo] { eval_length(*lo); });
}

}  // namespace strata::cli
