// strata data passkey: passkey tuning data as JSONL {"prompt", "completion"}
// lines, the prompt exactly as `strata eval passkey` builds it (a random key
// at a random depth) and the completion " KEY.", so `strata sft --template
// none` trains on what the evaluation asks (docs/long-context.md).
#include <nlohmann/json.hpp>

#include <cstdio>

#include "cli/common.h"
#include "core/rng.h"
#include "eval/passkey.h"
#include "io/safetensors.h"
#include "strata/error.h"

namespace strata::cli {

void register_data(CLI::App& app) {
  struct Opts {
    std::string tokenizer, out, length = "4096";
    int64_t count = 0;
    uint64_t seed = 1;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* data = app.add_subcommand("data", "write training data for the long-context tasks");
  data->require_subcommand(1);
  CLI::App* pk = data->add_subcommand("passkey", "passkey tuning examples as {\"prompt\", \"completion\"} JSONL");
  pk->add_option("--tokenizer", o->tokenizer, "the model's tokenizer (lengths are counted in its tokens)")->required();
  pk->add_option("--length", o->length, "tokens per example: BOS, prompt, completion and EOS (k = 1024)");
  pk->add_option("--count", o->count, "examples to write")->required()->check(above(0));
  pk->add_option("--seed", o->seed, "seed of the keys and depths");
  pk->add_option("-o,--output", o->out, "JSONL file to write (atomically)")->required();
  pk->callback([o] {
    const std::unique_ptr<Tokenizer> tok = Tokenizer::load(o->tokenizer);
    const int64_t length = parse_length(o->length, "--length");
    Rng rng(o->seed);
    std::string lines;
    int64_t tokens = 0;
    for (int64_t i = 0; i < o->count; ++i) {
      const int64_t key = passkey_key(o->seed, i);
      const double depth = rng.uniform_double();
      const std::string completion = " " + std::to_string(key) + ".";
      const int64_t answer = static_cast<int64_t>(tok->encode(completion, false).size()) + 1;  // and EOS
      const PasskeyPrompt p = passkey_prompt(*tok, true, length - answer, depth, key);
      tokens += static_cast<int64_t>(p.ids.size()) + answer;
      lines += nlohmann::json{{"prompt", p.text}, {"completion", completion}}.dump() + "\n";
    }
    write_file_atomic(o->out, lines);
    std::fprintf(stderr, "wrote %s: %lld examples, %lld tokens (up to %lld each)\n", o->out.c_str(),
                 (long long)o->count, (long long)tokens, (long long)length);
  });
}

}  // namespace strata::cli
