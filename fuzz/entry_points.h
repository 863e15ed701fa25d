// The parsers that read what strangers send, as functions of raw bytes: one
// entry point per format. The fuzz targets (fuzz/, libFuzzer with clang) call
// them with generated inputs, and the GCC test suite replays the inputs that
// once broke them (tests/fuzz-corpus/<target>/) through the same functions.
//
// A clean refusal (strata::Error or serve::ApiError, naming the field) is a
// normal outcome and is swallowed here; anything else that escapes (another
// exception, a crash, a sanitizer report, a leak) is a bug.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace strata::fuzz {

struct Target {
  const char* name;
  void (*run)(const uint8_t* data, size_t size);
};

// Every target: gguf, safetensors, chat_request, completion_request,
// sft_record, trainer_state, llama2c (a .bin header and weights), hf_dir
// (config.json NUL model.safetensors.index.json, beside two small shards),
// token_data (meta.json NUL the bytes of a token shard), tokenizer (a
// tokenizer.json, or a SentencePiece model).
const std::vector<Target>& targets();

}  // namespace strata::fuzz
