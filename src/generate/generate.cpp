#include "strata/generate.h"

#include <algorithm>
#include <chrono>

#include "strata/error.h"

namespace strata {

GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opts,
                        const std::function<bool(int32_t)>& on_token) {
  using clock = std::chrono::steady_clock;
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
  res.stop_reason = "length";

  const int32_t vocab = opts.vocab_limit > 0 ? std::min(opts.vocab_limit, static_cast<int32_t>(cfg.vocab_size))
                                             : static_cast<int32_t>(cfg.vocab_size);
  for (int64_t i = 0; i < opts.max_new_tokens; ++i) {
    const int32_t next = sampler.sample(logits.data(), vocab, seq);
    if (std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), next) != cfg.eos_token_ids.end()) {
      res.stop_reason = "eos";
      break;
    }
    if (cfg.stop_at_bos && next == cfg.bos_token_id) {
      res.stop_reason = "bos";
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

}  // namespace strata
