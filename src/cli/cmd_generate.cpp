// strata generate: stdout carries exactly the prompt, the continuation and a
// final newline; statistics go to stderr. With --samples / --out it writes a
// corpus of independent samples instead (one document per sample).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>

#include "io/safetensors.h"

#include "cli/common.h"
#include "strata/generate.h"
#include "model/hypernet.h"
#include "strata/error.h"
#include "train/sft_data.h"

namespace strata::cli {

namespace {

struct GenerateOpts {
    ModelFlags model;
    std::string prompt;
    int64_t n = 256;
    GenerateOptions gen;
    bool no_cache = false;
    int64_t samples = 1;
    std::string out;
    bool hypernet = false;
    std::string chunk_context = "full", format = "zephyr";
};

// Prints the prompt, then the text of every token as `run` generates it, then
// a newline; `context` is what the tokens continue (for the decoder's spacing).
GenerateResult stream_to_stdout(const std::string& prompt, const Tokenizer& tok, const std::vector<int32_t>& context,
                                const std::function<GenerateResult(const std::function<bool(int32_t)>&)>& run) {
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  std::fflush(stdout);
  StreamDecoder dec(tok, context);
  GenerateResult r = run([&](int32_t id) {
    const std::string piece = dec.push(id);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  const std::string rest = dec.finish() + "\n";
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fflush(stdout);
  return r;
}

// --hypernet: the prompt as a chat user turn, generated in chunks with the
// model's hypernetwork; stderr compares the prefills with one plain prefill.
void generate_chunked(GenerateOpts& o, Loaded& l) {
  if (!l.model->hypernet()) fail("generate --hypernet: ", o.model.path, " has no hypernetwork");
  const std::vector<int32_t> query = chat_query(*l.tokenizer, l.model->config().bos_token_id, o.prompt, o.format);
  const auto context = o.chunk_context == "full" ? ChunkContext::Full : ChunkContext::Recurrent;
  const GenerateResult r = stream_to_stdout(o.prompt, *l.tokenizer, query, [&](const auto& on_token) {
    return generate_hypernet(*l.model, query, o.gen, context, on_token);
  });
  const double n = static_cast<double>(r.tokens.size()), first = static_cast<double>(1 + l.model->config().hypernet.soft_tokens + query.size());
  std::fprintf(stderr,
               "query %zu tokens; generated %zu tokens in %lld chunks; stop: %s\n"
               "  prefills: %lld rows in %.3f s (plain generation prefills %.0f rows once: %.1fx the rows)\n"
               "  decode %.3f s (%.2f tok/s), hypernetwork %.3f s; %.2f tok/s overall\n",
               query.size(), r.tokens.size(), (long long)r.prefills, r.stop_reason.c_str(), (long long)r.prefill_rows,
               r.prefill_seconds, first, static_cast<double>(r.prefill_rows) / first, r.decode_seconds,
               n / (r.decode_seconds > 0 ? r.decode_seconds : 1e-9), r.hypernet_seconds,
               n / std::max(1e-9, r.prefill_seconds + r.decode_seconds + r.hypernet_seconds));
}

// Samples one after another; a blank line inside a sample would split it into
// two documents for `strata tokenize`, so runs of newlines become one.
void write_samples(GenerateOpts& o, Loaded& l, const std::vector<int32_t>& ids) {
  std::string corpus;
  int64_t tokens = 0;
  const uint64_t seed = o.gen.sampler.seed;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < o.samples; ++i) {
    o.gen.sampler.seed = seed + static_cast<uint64_t>(i);
    GenerateResult r = generate(*l.model, ids, o.gen, [](int32_t) { return true; });
    tokens += static_cast<int64_t>(r.tokens.size());
    std::vector<int32_t> all = ids;
    all.insert(all.end(), r.tokens.begin(), r.tokens.end());
    std::string text = l.tokenizer->decode(all), doc;
    for (char c : text)
      if (c != '\n' || (!doc.empty() && doc.back() != '\n')) doc += c;
    while (!doc.empty() && (doc.back() == '\n' || doc.back() == ' ')) doc.pop_back();
    if (doc.empty()) continue;
    if (o.out.empty()) std::printf("%s\n\n", doc.c_str());
    else corpus += doc + "\n\n";
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if ((i + 1) % 100 == 0 || i + 1 == o.samples)
      std::fprintf(stderr, "\rsample %lld/%lld  %lld tokens  %.0f tok/s  ETA %.0fs   ", (long long)(i + 1),
                   (long long)o.samples, (long long)tokens, tokens / (s > 0 ? s : 1e-9),
                   s / (i + 1) * (o.samples - i - 1));
  }
  std::fprintf(stderr, "\n");
  if (!o.out.empty()) {
    write_file_atomic(o.out, corpus);
    std::fprintf(stderr, "wrote %s: %lld samples, %lld generated tokens\n", o.out.c_str(), (long long)o.samples,
                 (long long)tokens);
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  using Opts = GenerateOpts;
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text from a prompt");
  add_model_flags(cmd, o->model);
  add_self_extend_flag(cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompt, "prompt text (default: empty, start from BOS)");
  CLI::Option* n_opt = cmd->add_option("-n,--n-tokens", o->n, "new tokens to generate")->check(at_least(0));
  CLI::Option* temp_opt =
      cmd->add_option("--temp", o->gen.sampler.temperature, "temperature (0: greedy)")->check(at_least(0));
  cmd->add_option("--top-k", o->gen.sampler.top_k, "keep the K most likely tokens (0: off)")->check(at_least(0));
  CLI::Option* top_p_opt = cmd->add_option("--top-p", o->gen.sampler.top_p, "nucleus: smallest set reaching probability P")
                               ->check(between(0.0, 1.0, true));
  auto decoding = std::make_shared<std::string>();
  cmd->add_option("--decoding", *decoding,
                  "the Samba paper's settings for a task: gsm8k, humaneval, mbpp, squad, govreport, squality "
                  "(--temp, --top-p, -n given explicitly win)");
  cmd->add_option("--min-p", o->gen.sampler.min_p, "drop tokens below P times the top probability")->check(between(0.0, 1.0));
  cmd->add_option("--repeat-penalty", o->gen.sampler.repeat_penalty, "penalty for recent tokens (1: off)")->check(above(0));
  cmd->add_option("--repeat-last-n", o->gen.sampler.repeat_last_n, "window of the repeat penalty (-1: all)");
  cmd->add_option("--seed", o->gen.sampler.seed, "random seed");
  cmd->add_flag("--no-cache", o->no_cache, "recompute the whole sequence every step (reference mode)");
  cmd->add_option("--samples", o->samples, "independent samples (sample i uses seed + i)")->check(above(0));
  cmd->add_flag("--hypernet", o->hypernet,
                "chunked generation with the model's hypernetwork: the prompt is a chat user turn (--template)");
  cmd->add_option("--chunk-context", o->chunk_context, "--hypernet: full or recurrent (as the model was trained)")
      ->check(CLI::IsMember({"full", "recurrent"}));
  cmd->add_option("--template", o->format, "--hypernet: chat template (zephyr, chatml, llama-2)");
  cmd->add_option("--chunk", o->gen.chunk, "--hypernet: tokens per chunk (default: the model's strata_hypernet.chunk)")
      ->check(above(0));
  cmd->add_option("-o,--out", o->out,
                  "write the samples to this file (written atomically), each one document followed by a blank "
                  "line, ready for `strata tokenize`")
      ->check(CLI::NonexistentPath | CLI::ExistingFile);
  cmd->callback([o, decoding, n_opt, temp_opt, top_p_opt] {
    if (!decoding->empty()) {
      const DecodingPreset& d = decoding_preset(*decoding);
      if (!temp_opt->count()) o->gen.sampler.temperature = d.temperature;
      if (!top_p_opt->count()) o->gen.sampler.top_p = d.top_p;
      if (d.max_new_tokens > 0 && !n_opt->count()) o->n = d.max_new_tokens;
    }
    Loaded l = load(o->model, true);
    std::vector<int32_t> ids = l.tokenizer->encode(o->prompt, l.add_bos);
    if (ids.empty()) ids.push_back(l.model->config().bos_token_id);
    o->gen.max_new_tokens = o->n;
    o->gen.use_cache = !o->no_cache;
    o->gen.vocab_limit = l.tokenizer->vocab_size();  // a padded vocabulary's extra rows have no text
    if (!o->hypernet && o->gen.chunk > 0) fail("--chunk applies to --hypernet only");
    if (o->hypernet) {
      if (o->samples > 1 || !o->out.empty() || o->no_cache) fail("--hypernet: --samples, --out and --no-cache do not apply");
      return generate_chunked(*o, l);
    }
    if (o->samples > 1 || !o->out.empty()) return write_samples(*o, l, ids);
    const GenerateResult r = stream_to_stdout(o->prompt, *l.tokenizer, ids, [&](const auto& on_token) {
      return generate(*l.model, ids, o->gen, on_token);
    });
    const double n = static_cast<double>(r.tokens.size());
    std::fprintf(stderr, "prompt %zu tokens in %.3f s (%.1f tok/s); generated %zu tokens in %.3f s (%.2f tok/s); stop: %s\n",
                 ids.size(), r.prefill_seconds, ids.size() / (r.prefill_seconds > 0 ? r.prefill_seconds : 1e-9),
                 r.tokens.size(), r.decode_seconds, n / (r.decode_seconds > 0 ? r.decode_seconds : 1e-9),
                 r.stop_reason.c_str());
  });
}

}  // namespace strata::cli
