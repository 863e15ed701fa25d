// strata exact-match: greedy answers to the queries of chat JSONL, compared
// token for token with the reference answers. Plain generation after
// [BOS] [query]; --hypernet: chunked generation with the model's
// hypernetwork; --chunk-context without --hypernet: the same chunks without a
// soft prompt (the baseline of docs/hypernet.md).
#include <chrono>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "strata/error.h"
#include "strata/generate.h"
#include "train/hypernet_sft.h"
#include "train/sft_data.h"

namespace strata::cli {

void register_exact_match(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::vector<std::string> data;
    std::string format = "zephyr", context, out;
    bool hypernet = false;
    int64_t chunk = 0, limit = 0, max_query = 256, max_answer = 256;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("exact-match", "greedy answers to chat JSONL queries against the references");
  add_model_flags(cmd, o->model);
  cmd->add_option("--data", o->data, "JSONL files: {\"messages\": [...]} or {\"prompt\", \"completion\"}")->required();
  cmd->add_option("--template", o->format, "chat template: zephyr, chatml, llama-2");
  cmd->add_flag("--hypernet", o->hypernet, "chunked generation with the model's hypernetwork");
  cmd->add_option("--chunk-context", o->context, "chunked generation: full or recurrent (default full)")
      ->check(CLI::IsMember({"full", "recurrent"}));
  cmd->add_option("--chunk", o->chunk, "chunked generation: tokens per chunk (default: the model's, 16)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--limit", o->limit, "first N examples only (0: all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-query", o->max_query, "longest query in tokens (longer ones are an error)");
  cmd->add_option("--max-answer", o->max_answer, "references are cut to this many tokens");
  cmd->add_option("--out", o->out, "write one JSON line per example (reference, answer, match)");
  cmd->callback([o] {
    Loaded l = load(o->model, true);
    const Config& cfg = l.model->config();
    const bool chunked = o->hypernet || !o->context.empty();
    if (!chunked && o->chunk > 0) fail("--chunk applies to --hypernet or --chunk-context only");
    auto sft = load_sft_jsonl(o->data, *l.tokenizer, parse_chat_format(o->format), 0);
    int64_t cut = 0;
    auto examples = hyper_examples(sft, cfg.bos_token_id, o->max_query, o->max_answer, &cut);
    if (o->limit > 0 && static_cast<int64_t>(examples.size()) > o->limit) examples.resize(o->limit);
    if (examples.empty()) fail("exact-match: no example with an answer in the data");
    GenerateOptions g;
    g.sampler.temperature = 0;
    g.vocab_limit = l.tokenizer->vocab_size();
    g.chunk = o->chunk;
    const auto context = o->context == "recurrent" ? ChunkContext::Recurrent : ChunkContext::Full;
    std::ofstream out;
    if (!o->out.empty()) {
      out.open(o->out);
      if (!out) fail(o->out, ": cannot write");
    }
    int64_t exact = 0, right_tokens = 0, ref_tokens = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < examples.size(); ++i) {
      const HyperExample& e = examples[i];
      std::vector<int32_t> ref = e.answer;
      const bool ends = !ref.empty() && ref.back() == l.tokenizer->eos_id();
      if (ends) ref.pop_back();
      g.max_new_tokens = static_cast<int64_t>(ref.size()) + 1;  // one more: an answer that runs on does not match
      auto keep = [](int32_t) { return true; };
      GenerateResult r;
      if (chunked) {
        r = generate_hypernet(*l.model, e.query, g, context, keep, o->hypernet);
      } else {
        std::vector<int32_t> prompt = {cfg.bos_token_id};
        prompt.insert(prompt.end(), e.query.begin(), e.query.end());
        r = generate(*l.model, prompt, g, keep);
      }
      const bool match = r.tokens == ref && (!ends || r.stop_reason == "eos");
      exact += match;
      for (size_t k = 0; k < ref.size(); ++k) right_tokens += k < r.tokens.size() && r.tokens[k] == ref[k];
      ref_tokens += static_cast<int64_t>(ref.size());
      if (out)
        out << nlohmann::json{{"source", e.source}, {"reference", l.tokenizer->decode(ref)},
                              {"answer", l.tokenizer->decode(r.tokens)}, {"match", match}}
                   .dump()
            << "\n";
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\r%zu/%zu  exact %lld  %.1f s   ", i + 1, examples.size(), (long long)exact, s);
    }
    std::fprintf(stderr, "\n");
    const double n = static_cast<double>(examples.size());
    std::printf("exact match %lld / %zu = %.1f%%; reference tokens right in place %.1f%%\n", (long long)exact,
                examples.size(), 100.0 * static_cast<double>(exact) / n,
                100.0 * static_cast<double>(right_tokens) / static_cast<double>(std::max<int64_t>(1, ref_tokens)));
  });
}

}  // namespace strata::cli
