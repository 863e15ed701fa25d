// The OpenAI-compatible formats of `strata serve` (docs/serving.md): request
// bodies parsed and checked into a GenRequest, with errors that name the
// field, and the JSON of responses, stream chunks and errors. No I/O here,
// so every rule is testable (and fuzzable) on its own.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "strata/sampler.h"
#include "train/sft_data.h"

namespace strata::serve {

// An error the client caused (or an overload): the HTTP status, OpenAI's
// error type and code, and the field it is about.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string type, std::string code, std::string param, const std::string& message)
      : std::runtime_error(message), status(status), type(std::move(type)), code(std::move(code)),
        param(std::move(param)) {}
  int status;
  std::string type, code, param;
};

// 400 invalid_request_error about `param`.
[[noreturn]] void bad_request(const std::string& param, const std::string& message);

// {"error": {"message", "type", "code", "param"}}
nlohmann::json error_body(const ApiError& e);

enum class Endpoint { kCompletions, kChat };

struct GenRequest {
  Endpoint endpoint = Endpoint::kChat;
  std::string model;                  // echoed back in responses
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completions: text ...
  std::vector<int32_t> prompt_ids;    // ... or token ids
  bool prompt_is_ids = false;
  int64_t max_tokens = -1;  // -1: until the context is full
  SamplerOptions sampler;   // OpenAI's defaults: temperature 1, top_p 1, no penalties
  std::vector<std::string> stop;
  bool stream = false, include_usage = false;
  bool logprobs = false;
  int top_logprobs = 0;
  std::string decoding;  // extension: a --decoding preset name (explicit fields win)
};

// A request body as a JSON object, or ApiError 400 (invalid_json) saying why not.
nlohmann::json parse_body(const std::string& body);

// Parses a request body for `e`. Throws ApiError (400) naming the field for
// malformed JSON, wrong types, out-of-range values and options that would be
// ignored (n > 1, tools, response_format, ...). `default_seed` seeds requests
// that give none.
GenRequest parse_request(Endpoint e, const std::string& body, uint64_t default_seed);

// One generated token's log-probability and the most likely alternatives.
struct TokenLogprob {
  std::string token;
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

// The finished result of one request.
struct Outcome {
  std::string text;
  std::string finish_reason;  // "stop" or "length"
  std::vector<TokenLogprob> logprobs;
  Usage usage;
};

nlohmann::json usage_json(const Usage& u);

// The whole (non-streamed) response.
nlohmann::json response_json(const GenRequest& r, const std::string& id, int64_t created, const Outcome& o);

// A stream chunk: `text` (with its tokens' logprobs) or, when finish_reason
// is set, the final chunk. Chat streams start with a chunk holding the role.
nlohmann::json chunk_json(const GenRequest& r, const std::string& id, int64_t created, const std::string& text,
                          const std::vector<TokenLogprob>& logprobs, const std::string& finish_reason);
nlohmann::json role_chunk_json(const GenRequest& r, const std::string& id, int64_t created);
// The last chunk of a stream with stream_options.include_usage: no choices, the usage.
nlohmann::json usage_chunk_json(const GenRequest& r, const std::string& id, int64_t created, const Usage& u);

// JSON text; bytes that are not UTF-8 (a lone byte token) become U+FFFD.
std::string dump(const nlohmann::json& j);

// Server-sent event framing: "data: <json>\n\n"; the stream ends with "data: [DONE]\n\n".
std::string sse(const nlohmann::json& j);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

}  // namespace strata::serve
