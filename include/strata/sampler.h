// Next-token sampling, reproducible on every machine for a given seed
// (strata::Rng, not std::*_distribution). Order of operations:
//   logit bias -> repetition penalty -> frequency / presence penalties ->
//   greedy if temperature == 0 -> temperature -> top-k -> softmax -> top-p ->
//   min-p -> renormalise -> draw.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace strata {

struct SamplerOptions {
  float temperature = 1.0f;     // 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;            // 0: off
  float top_p = 1.0f;           // keep the smallest set of tokens whose probability reaches p
  float min_p = 0.0f;           // drop tokens with p < min_p * p_max
  float repeat_penalty = 1.0f;  // CTRL-style: logit > 0 divided by r, < 0 multiplied by r
  int32_t repeat_last_n = 64;   // how many recent tokens the penalties look at (0: none, -1: all)
  // OpenAI's additive penalties over the same window: logit -= count * frequency + (count > 0) * presence.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // Added to the logits of these ids first (OpenAI's logit_bias; -100 bans a token).
  std::vector<std::pair<int32_t, float>> logit_bias;
  uint64_t seed = 0;
};

// The decoding settings the Samba paper fixes per task (docs/long-context.md):
// gsm8k greedy; humaneval temperature 0.2, top-p 0.95; mbpp and squad
// temperature 0.01, top-p 0.95 (still sampling); govreport and squality
// greedy with at most 450 and 600 new tokens.
struct DecodingPreset {
  const char* name;
  float temperature;
  float top_p;
  int64_t max_new_tokens;  // 0: left as it is
};
const std::vector<DecodingPreset>& decoding_presets();
const DecodingPreset& decoding_preset(const std::string& name);  // throws listing the names

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& opts);
  // `logits` is modified in place (penalties, temperature). `history` are the
  // ids seen so far (prompt and generated), for the repetition penalty.
  int32_t sample(float* logits, int32_t vocab, const std::vector<int32_t>& history);
  const SamplerOptions& options() const { return opts_; }

 private:
  SamplerOptions opts_;
  Rng rng_;
  std::vector<int32_t> idx_;
  std::vector<float> prob_;
};

}  // namespace strata
