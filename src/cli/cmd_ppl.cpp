// strata ppl: perplexity of a text file (tokenized once, BOS at the start).
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>

#include "cli/common.h"
#include "eval/perplexity.h"
#include "io/safetensors.h"
#include "strata/error.h"

namespace strata::cli {

void register_ppl(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string text;
    int64_t ctx = 0;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("ppl", "perplexity of a text file");
  add_model_flags(cmd, o->model);
  cmd->add_option("--text", o->text, "text file")->required();
  cmd->add_option("--ctx", o->ctx, "window length in tokens (0: the model's context)")->check(at_least(0));
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] {
    const std::string text = read_file_text(o->text);
    Loaded l = load(o->model, true);
    const std::vector<int32_t> ids = l.tokenizer->encode(text, true);
    const int64_t ctx = o->ctx > 0 ? o->ctx : l.model->config().max_position_embeddings;
    const auto t0 = std::chrono::steady_clock::now();
    PerplexityResult r = perplexity(*l.model, ids, ctx, [&](int64_t w, int64_t total) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\rwindow %lld/%lld  %.0f tok/s  ETA %.0f s   ", (long long)w, (long long)total,
                   w * ctx / s, (total - w) * s / w);
    });
    std::fprintf(stderr, "\n");
    if (o->json) {
      nlohmann::json j{{"perplexity", r.perplexity()}, {"mean_nll", r.mean_nll()}, {"tokens", ids.size()},
                       {"predicted", r.predicted}, {"windows", r.windows}, {"ctx", ctx}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("perplexity %.4f  mean_nll %.6f  tokens %zu  predicted %lld  windows %lld  ctx %lld\n",
                  r.perplexity(), r.mean_nll(), ids.size(), (long long)r.predicted, (long long)r.windows,
                  (long long)ctx);
    }
  });
}

}  // namespace strata::cli
