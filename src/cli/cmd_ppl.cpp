// strata ppl: perplexity of a text file (tokenized once, BOS at the start), or
// of the answers of chat JSONL scored chunk by chunk, with the soft prompts of
// the model's hypernetwork (--hypernet) or without (--chunk-context).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>

#include "cli/common.h"
#include "eval/perplexity.h"
#include "io/safetensors.h"
#include "strata/error.h"
#include "train/hypernet_sft.h"
#include "train/sft_data.h"

namespace strata::cli {

void register_ppl(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string text, data, context, format = "zephyr";
    int64_t ctx = 0, chunk = 0, batch = 8;
    bool json = false, hypernet = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("ppl", "perplexity of a text file");
  add_model_flags(cmd, o->model);
  add_self_extend_flag(cmd, o->model);
  auto* text = cmd->add_option("--text", o->text, "text file");
  auto* data = cmd->add_option("--data", o->data,
                               "chat JSONL: the perplexity of the answers, chunk by chunk (with --hypernet or "
                               "--chunk-context)");
  text->excludes(data);
  cmd->add_flag("--hypernet", o->hypernet, "--data: with the soft prompts of the model's hypernetwork");
  cmd->add_option("--chunk-context", o->context, "--data: full (default) or recurrent")
      ->check(CLI::IsMember({"full", "recurrent"}));
  cmd->add_option("--chunk", o->chunk, "--data: answer tokens per chunk (default: the model's)")->check(above(0));
  cmd->add_option("--template", o->format, "--data: chat template (zephyr, chatml, llama-2)");
  cmd->add_option("--batch", o->batch, "--data: examples per call")->check(above(0));
  cmd->add_option("--ctx", o->ctx, "window length in tokens (0: the model's context)")->check(at_least(0));
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o, cmd] {
    if (o->text.empty() == o->data.empty()) fail("ppl: give --text FILE or --data FILE.jsonl");
    for (const char* opt : {"--hypernet", "--chunk-context", "--chunk", "--template", "--batch"})
      if (o->data.empty() && cmd->count(opt) > 0) fail(opt, " applies to --data only");
    if (!o->data.empty()) {
      Loaded l = load(o->model, true);
      const Config& cfg = l.model->config();
      auto sft = load_sft_jsonl({o->data}, *l.tokenizer, parse_chat_format(o->format), 0);
      const auto examples = hyper_examples(sft, cfg.bos_token_id, INT64_MAX, INT64_MAX, nullptr);
      HyperSftOptions so;
      so.chunk = o->chunk > 0 ? o->chunk : cfg.hypernet.chunk;
      so.context = o->context == "recurrent" ? ChunkContext::Recurrent : ChunkContext::Full;
      so.soft_prompt = o->hypernet;
      Model::LossSum total;
      for (size_t b = 0; b < examples.size(); b += static_cast<size_t>(o->batch)) {
        const size_t e = std::min(examples.size(), b + static_cast<size_t>(o->batch));
        const auto r = hypernet_sft(*l.model, std::span<const HyperExample>(examples).subspan(b, e - b), so, 1.0, false);
        total.sum += r.sum;
        total.count += r.count;
        std::fprintf(stderr, "\rexamples %zu/%zu   ", e, examples.size());
      }
      std::fprintf(stderr, "\n");
      const double nll = total.sum / static_cast<double>(std::max<int64_t>(1, total.count));
      if (o->json)
        std::printf("%s\n", nlohmann::json{{"perplexity", std::exp(nll)}, {"mean_nll", nll}, {"examples", examples.size()},
                                           {"predicted", total.count}, {"chunk", so.chunk}}
                                 .dump()
                                 .c_str());
      else
        std::printf("perplexity %.4f  mean_nll %.6f  examples %zu  answer tokens %lld  chunk %lld\n", std::exp(nll),
                    nll, examples.size(), (long long)total.count, (long long)so.chunk);
      return;
    }
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
