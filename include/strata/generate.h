// The generation loop: prefill the prompt, then sample and decode one token at
// a time, streaming each token to a callback.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "strata/model.h"
#include "strata/sampler.h"

namespace strata {

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  SamplerOptions sampler;
  // false: recompute the whole sequence at every step without any cache (a
  // reference mode; its tokens must equal the cached path's).
  bool use_cache = true;
  // Ids sampled from [0, vocab_limit) only (0: the model's whole vocabulary).
  // A model trained with a padded vocabulary has rows past its tokenizer's
  // last id; those ids have no text, so they are never sampled.
  int32_t vocab_limit = 0;
  // Chunked generation: tokens per chunk (0: the model's strata_hypernet.chunk).
  int64_t chunk = 0;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids, without the stop token
  std::string stop_reason;      // "length", "eos", "bos", "context" or "callback"
  double prefill_seconds = 0, decode_seconds = 0;
  // Chunked generation: prefills run (one per chunk), the rows they ran, and
  // the time in the hypernetwork.
  int64_t prefills = 1, prefill_rows = 0;
  double hypernet_seconds = 0;
};

// on_token returns false to stop early. The prompt must hold at least one id.
GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opts,
                        const std::function<bool(int32_t)>& on_token);

// What the model sees besides the soft prompt when it writes chunk c
// (docs/hypernet.md): the query and every earlier answer token (full), or
// only the last token before the chunk (recurrent).
enum class ChunkContext { Full, Recurrent };

// Chunked generation with the model's hypernetwork: S = H(sp0, query); then,
// until EOS or max_new_tokens, a fresh context prefilled with [BOS] [S]
// [query, answer so far] (full) or [BOS] [S] [last token] (recurrent), up to
// `chunk` tokens (the config's strata_hypernet.chunk) decoded with its cache,
// and S = H(S, those tokens). The query is the chat-formatted user turn
// without BOS (BOS comes first, before the soft prompt).
// soft_prompt = false: the same chunks without a soft prompt (the baseline of
// chunked SFT without a hypernetwork; the model needs none).
GenerateResult generate_hypernet(Model& model, const std::vector<int32_t>& query, const GenerateOptions& opts,
                                 ChunkContext context, const std::function<bool(int32_t)>& on_token,
                                 bool soft_prompt = true);

}  // namespace strata
