#include "strata/generate.h"

#include <algorithm>
#include <chrono>

#include "kernels/exec.h"
#include "model/hypernet.h"
#include "strata/error.h"

namespace strata {
namespace {

using clock = std::chrono::steady_clock;

double since(clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); }

// "eos" or "bos" when `id` ends a sample, else "".
const char* stop_of(const Config& cfg, int32_t id) {
  if (std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), id) != cfg.eos_token_ids.end()) return "eos";
  if (cfg.stop_at_bos && id == cfg.bos_token_id) return "bos";
  return "";
}

int32_t vocab_of(const Config& cfg, const GenerateOptions& opts) {
  const auto V = static_cast<int32_t>(cfg.vocab_size);
  return opts.vocab_limit > 0 ? std::min(opts.vocab_limit, V) : V;
}

}  // namespace

GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opts,
                        const std::function<bool(int32_t)>& on_token) {
  const Config& cfg = model.config();
  if (prompt.empty()) fail("generate: empty prompt (at least BOS is needed)");
  Sampler sampler(opts.sampler);
  GenerateResult res;
  std::vector<int32_t> seq = prompt;
  std::vector<float> logits;
  auto state = model.new_state();

  auto t0 = clock::now();
  if (opts.use_cache) {
    SeqInput in{seq, state.get()};
    model.forward({&in, 1}, Logits::Last, logits);
  } else {
    SeqInput in{seq};
    model.forward({&in, 1}, Logits::Last, logits);
  }
  auto t1 = clock::now();
  res.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  res.prefill_rows = static_cast<int64_t>(prompt.size());
  res.stop_reason = "length";

  const int32_t vocab = vocab_of(cfg, opts);
  for (int64_t i = 0; i < opts.max_new_tokens; ++i) {
    const int32_t next = sampler.sample(logits.data(), vocab, seq);
    if (*stop_of(cfg, next)) {
      res.stop_reason = stop_of(cfg, next);
      break;
    }
    res.tokens.push_back(next);
    seq.push_back(next);
    if (!on_token(next)) {
      res.stop_reason = "callback";
      break;
    }
    if (i + 1 == opts.max_new_tokens) break;
    if (opts.use_cache) {
      State* st = state.get();
      model.step({&next, 1}, {&st, 1}, logits);
    } else {
      SeqInput in{seq};
      model.forward({&in, 1}, Logits::Last, logits);
    }
  }
  res.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return res;
}

GenerateResult generate_hypernet(Model& model, const std::vector<int32_t>& query, const GenerateOptions& opts,
                                 ChunkContext context, const std::function<bool(int32_t)>& on_token,
                                 bool soft_prompt) {
  Hypernet* hyper = soft_prompt ? model.hypernet() : nullptr;
  if (soft_prompt && !hyper) fail("chunked generation: the model has no hypernetwork (strata_hypernet in its config)");
  const Config& cfg = model.config();
  const int64_t P = hyper ? hyper->soft_tokens() : 0, D = cfg.hidden_size,
                K = opts.chunk > 0 ? opts.chunk : cfg.hypernet.chunk;
  const int32_t bos = cfg.bos_token_id, vocab = vocab_of(cfg, opts);
  Sampler sampler(opts.sampler);
  GenerateResult res;
  res.prefills = 0;
  res.stop_reason = "length";
  std::vector<float> soft(static_cast<size_t>(P * D)), rows(query.size() * D), logits;
  // S = H(S, tokens), timed.
  auto update = [&](const float* s, std::span<const int32_t> tokens) {
    if (!hyper) return;
    const auto t = clock::now();
    rows.resize(tokens.size() * D);
    model.embed_rows(tokens, rows.data());
    const Hypernet::Input in{s, rows.data(), static_cast<int64_t>(tokens.size())};
    std::vector<float> next(static_cast<size_t>(P * D));
    hyper->forward({&in, 1}, next.data(), model.exec(), false);
    soft.swap(next);
    res.hypernet_seconds += since(t);
  };
  if (hyper) update(hyper->sp0(), query);
  std::vector<int32_t> seen = query;  // the sampler's history: query, then the answer
  std::vector<int32_t> context_tokens;
  while (static_cast<int64_t>(res.tokens.size()) < opts.max_new_tokens) {
    context_tokens.clear();
    if (context == ChunkContext::Full) context_tokens = seen;
    else if (!seen.empty()) context_tokens.push_back(seen.back());
    auto state = model.new_state();
    SeqInput in{{Segment::of_tokens({&bos, 1})}, state.get()};
    if (hyper) in.segments.push_back(Segment::of_embeds(soft.data(), P));
    if (!context_tokens.empty()) in.segments.push_back(Segment::of_tokens(context_tokens));
    auto t = clock::now();
    model.forward({&in, 1}, Logits::Last, logits);
    res.prefill_seconds += since(t);
    res.prefills += 1;
    res.prefill_rows += in.size();
    t = clock::now();
    const size_t chunk_begin = res.tokens.size();
    bool stop = false;
    for (int64_t i = 0; i < K && static_cast<int64_t>(res.tokens.size()) < opts.max_new_tokens; ++i) {
      const int32_t next = sampler.sample(logits.data(), vocab, seen);
      if (*stop_of(cfg, next)) {
        res.stop_reason = stop_of(cfg, next);
        stop = true;
        break;
      }
      res.tokens.push_back(next);
      seen.push_back(next);
      if (!on_token(next)) {
        res.stop_reason = "callback";
        stop = true;
        break;
      }
      if (i + 1 == K || static_cast<int64_t>(res.tokens.size()) == opts.max_new_tokens) break;
      State* st = state.get();
      model.step({&next, 1}, {&st, 1}, logits);
    }
    res.decode_seconds += since(t);
    if (stop || static_cast<int64_t>(res.tokens.size()) >= opts.max_new_tokens) break;
    update(soft.data(), std::span<const int32_t>(res.tokens).subspan(chunk_begin));
  }
  return res;
}

}  // namespace strata
