#include "serve/api.h"

#include <cmath>

#include "strata/error.h"

namespace strata::serve {

using nlohmann::json;

void bad_request(const std::string& param, const std::string& message) {
  throw ApiError(400, "invalid_request_error", "invalid_value", param, message);
}

json error_body(const ApiError& e) {
  json err{{"message", e.what()}, {"type", e.type}, {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  return {{"error", err}};
}

namespace {

// A field's value, or null when it is absent or JSON null (OpenAI clients
// send null for "not set").
const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number_in(const json& body, const char* key, double lo, double hi, const char* range) {
  const json& v = *field(body, key);
  if (!v.is_number()) bad_request(key, std::string(key) + " must be a number in " + range);
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) bad_request(key, std::string(key) + " must be in " + range + ", not " + v.dump());
  return x;
}

int64_t integer_in(const json& body, const char* key, int64_t lo, int64_t hi) {
  const json& v = *field(body, key);
  if (!v.is_number_integer()) bad_request(key, std::string(key) + " must be an integer");
  const bool is_unsigned = v.is_number_unsigned();
  if (is_unsigned && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    bad_request(key, std::string(key) + " is out of range");
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    bad_request(key, std::string(key) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], not " +
                         std::to_string(x));
  return x;
}

bool boolean(const json& body, const char* key) {
  const json& v = *field(body, key);
  if (!v.is_boolean()) bad_request(key, std::string(key) + " must be true or false");
  return v.get<bool>();
}

std::string text_content(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad_request(where, where + " must be a string or an array of text parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string())
      bad_request(where, where + ": only parts {\"type\": \"text\", \"text\": \"...\"} are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const json& body) {
  const json* m = field(body, "messages");
  if (!m) bad_request("messages", "messages is required");
  if (!m->is_array() || m->empty()) bad_request("messages", "messages must be a non-empty array");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object()) bad_request(where, where + " must be an object");
    if (!msg.contains("role") || !msg["role"].is_string()) bad_request(where + ".role", where + ".role must be a string");
    std::string role = msg["role"].get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant")
      bad_request(where + ".role", where + ".role '" + role + "': roles are system, developer, user and assistant");
    if (msg.contains("tool_calls") && !msg["tool_calls"].is_null())
      bad_request(where + ".tool_calls", "tool calls are not supported");
    const json* c = field(msg, "content");
    out.push_back({role, c ? text_content(*c, where + ".content") : std::string()});
  }
  return out;
}

void parse_prompt(const json& body, GenRequest& r) {
  const json* p = field(body, "prompt");
  if (!p) bad_request("prompt", "prompt is required");
  if (p->is_string()) {
    r.prompt = p->get<std::string>();
    return;
  }
  if (!p->is_array()) bad_request("prompt", "prompt must be a string, an array of one string, or token ids");
  if (p->size() == 1 && (*p)[0].is_string()) {
    r.prompt = (*p)[0].get<std::string>();
    return;
  }
  if (p->empty()) bad_request("prompt", "prompt must not be an empty array");
  for (const json& t : *p) {
    if (t.is_string() || t.is_array()) bad_request("prompt", "one prompt per request (n = 1): pass a single string");
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
      bad_request("prompt", "token ids in prompt must be non-negative integers");
    r.prompt_ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  r.prompt_is_ids = true;
}

// Options a client may send that would change the result if honoured: refused
// rather than silently ignored.
void refuse_unsupported(const json& body) {
  for (const char* key : {"tools", "functions", "tool_choice", "function_call", "audio", "prediction"})
    if (field(body, key) && !(field(body, key)->is_array() && field(body, key)->empty()))
      bad_request(key, std::string(key) + " is not supported by this server");
  if (field(body, "n") && integer_in(body, "n", 1, 128) != 1) bad_request("n", "only n = 1 is supported");
  if (field(body, "best_of") && integer_in(body, "best_of", 1, 128) != 1)
    bad_request("best_of", "only best_of = 1 is supported");
  if (field(body, "echo") && boolean(body, "echo")) bad_request("echo", "echo is not supported");
  if (const json* s = field(body, "suffix"); s && !(s->is_string() && s->get<std::string>().empty()))
    bad_request("suffix", "suffix is not supported");
  if (const json* f = field(body, "response_format")) {
    if (!f->is_object() || f->value("type", std::string()) != "text")
      bad_request("response_format", "only response_format {\"type\": \"text\"} is supported");
  }
  if (const json* m = field(body, "modalities"); m && *m != json::array({"text"}))
    bad_request("modalities", "only the text modality is supported");
}

std::vector<std::string> parse_stop(const json& body) {
  const json* s = field(body, "stop");
  if (!s) return {};
  std::vector<std::string> out;
  if (s->is_string()) {
    out.push_back(s->get<std::string>());
  } else if (s->is_array()) {
    if (s->size() > 4) bad_request("stop", "stop takes at most 4 sequences");
    for (const json& x : *s) {
      if (!x.is_string()) bad_request("stop", "stop must be a string or an array of strings");
      out.push_back(x.get<std::string>());
    }
  } else {
    bad_request("stop", "stop must be a string or an array of strings");
  }
  for (const std::string& x : out)
    if (x.empty()) bad_request("stop", "stop sequences must not be empty");
  return out;
}

void parse_sampling(const json& body, GenRequest& r) {
  SamplerOptions& s = r.sampler;
  s.repeat_penalty = 1.0f;
  bool has_temp = false, has_top_p = false;
  if (field(body, "temperature")) {
    s.temperature = static_cast<float>(number_in(body, "temperature", 0.0, 2.0, "[0, 2]"));
    has_temp = true;
  }
  if (field(body, "top_p")) {
    s.top_p = static_cast<float>(number_in(body, "top_p", 0.0, 1.0, "(0, 1]"));
    if (s.top_p == 0.0f) bad_request("top_p", "top_p must be in (0, 1], not 0 (use temperature 0 for greedy)");
    has_top_p = true;
  }
  if (field(body, "frequency_penalty"))
    s.frequency_penalty = static_cast<float>(number_in(body, "frequency_penalty", -2.0, 2.0, "[-2, 2]"));
  if (field(body, "presence_penalty"))
    s.presence_penalty = static_cast<float>(number_in(body, "presence_penalty", -2.0, 2.0, "[-2, 2]"));
  if (field(body, "top_k")) s.top_k = static_cast<int32_t>(integer_in(body, "top_k", 0, INT32_MAX));
  if (field(body, "min_p")) s.min_p = static_cast<float>(number_in(body, "min_p", 0.0, 1.0, "[0, 1]"));
  if (field(body, "repeat_penalty")) {
    s.repeat_penalty = static_cast<float>(number_in(body, "repeat_penalty", 1e-3, 100.0, "[0.001, 100]"));
  }
  if (field(body, "seed")) s.seed = static_cast<uint64_t>(integer_in(body, "seed", INT64_MIN, INT64_MAX));
  if (const json* b = field(body, "logit_bias")) {
    if (!b->is_object()) bad_request("logit_bias", "logit_bias must be an object of token id -> bias");
    for (const auto& [key, v] : b->items()) {
      char* end = nullptr;
      const long long id = std::strtoll(key.c_str(), &end, 10);
      if (key.empty() || *end != '\0' || id < 0 || id > INT32_MAX)
        bad_request("logit_bias", "logit_bias keys must be token ids, not '" + key + "'");
      if (!v.is_number() || !(std::fabs(v.get<double>()) <= 100.0))
        bad_request("logit_bias", "logit_bias values must be numbers in [-100, 100]");
      s.logit_bias.emplace_back(static_cast<int32_t>(id), v.get<float>());
    }
  }
  if (const json* d = field(body, "decoding")) {
    if (!d->is_string()) bad_request("decoding", "decoding must be a preset name");
    r.decoding = d->get<std::string>();
    const DecodingPreset* preset = nullptr;
    for (const DecodingPreset& p : decoding_presets())
      if (r.decoding == p.name) preset = &p;
    if (!preset) {
      std::string names;
      for (const DecodingPreset& p : decoding_presets()) names += (names.empty() ? "" : ", ") + std::string(p.name);
      bad_request("decoding", "decoding '" + r.decoding + "' is not a preset (" + names + ")");
    }
    if (!has_temp) s.temperature = preset->temperature;
    if (!has_top_p) s.top_p = preset->top_p;
    if (r.max_tokens < 0 && preset->max_new_tokens > 0) r.max_tokens = preset->max_new_tokens;
  }
}

}  // namespace

json parse_body(const std::string& body_text) {
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::exception& err) {  // parse errors, and numbers out of range
    throw ApiError(400, "invalid_request_error", "invalid_json", "", std::string("the body is not valid JSON: ") + err.what());
  }
  if (!body.is_object()) throw ApiError(400, "invalid_request_error", "invalid_json", "", "the body must be a JSON object");
  return body;
}

GenRequest parse_request(Endpoint e, const std::string& body_text, uint64_t default_seed) {
  const json body = parse_body(body_text);
  GenRequest r;
  r.endpoint = e;
  r.sampler.seed = default_seed;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) bad_request("model", "model must be a string");
    r.model = m->get<std::string>();
  }
  refuse_unsupported(body);
  if (e == Endpoint::kChat) {
    r.messages = parse_messages(body);
  } else {
    parse_prompt(body, r);
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (field(body, key)) r.max_tokens = integer_in(body, key, 1, INT32_MAX);
  parse_sampling(body, r);
  r.stop = parse_stop(body);
  if (field(body, "stream")) r.stream = boolean(body, "stream");
  if (const json* so = field(body, "stream_options")) {
    if (!r.stream) bad_request("stream_options", "stream_options needs stream: true");
    if (!so->is_object()) bad_request("stream_options", "stream_options must be an object");
    if (field(*so, "include_usage")) r.include_usage = boolean(*so, "include_usage");
  }
  if (e == Endpoint::kChat) {
    if (field(body, "logprobs")) r.logprobs = boolean(body, "logprobs");
    if (field(body, "top_logprobs")) {
      r.top_logprobs = static_cast<int>(integer_in(body, "top_logprobs", 0, 20));
      if (!r.logprobs) bad_request("top_logprobs", "top_logprobs needs logprobs: true");
    }
  } else if (field(body, "logprobs")) {
    r.top_logprobs = static_cast<int>(integer_in(body, "logprobs", 0, 5));
    r.logprobs = true;
  }
  return r;
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

namespace {

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// Logprobs in the endpoint's shape: chat's {"content": [...]}, or the legacy
// completions' parallel arrays.
json logprobs_json(const GenRequest& r, const std::vector<TokenLogprob>& lps, int64_t text_offset) {
  if (!r.logprobs) return nullptr;
  if (r.endpoint == Endpoint::kChat) {
    json content = json::array();
    for (const TokenLogprob& t : lps) {
      json top = json::array();
      for (const auto& [s, lp] : t.top) top.push_back({{"token", s}, {"logprob", lp}, {"bytes", bytes_of(s)}});
      content.push_back({{"token", t.token}, {"logprob", t.logprob}, {"bytes", bytes_of(t.token)}, {"top_logprobs", top}});
    }
    return {{"content", content}, {"refusal", nullptr}};
  }
  json tokens = json::array(), token_lps = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprob& t : lps) {
    tokens.push_back(t.token);
    token_lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& [s, lp] : t.top) top[s] = lp;
    tops.push_back(top);
    offsets.push_back(text_offset);
    text_offset += static_cast<int64_t>(t.token.size());
  }
  return {{"tokens", tokens}, {"token_logprobs", token_lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json envelope(const GenRequest& r, const std::string& id, int64_t created, const char* object) {
  return {{"id", id}, {"object", object}, {"created", created}, {"model", r.model}, {"system_fingerprint", "strata"}};
}

json finish(const std::string& reason) { return reason.empty() ? json(nullptr) : json(reason); }

}  // namespace

json response_json(const GenRequest& r, const std::string& id, int64_t created, const Outcome& o) {
  const bool chat = r.endpoint == Endpoint::kChat;
  json j = envelope(r, id, created, chat ? "chat.completion" : "text_completion");
  json choice{{"index", 0}, {"logprobs", logprobs_json(r, o.logprobs, 0)}, {"finish_reason", o.finish_reason}};
  if (chat) choice["message"] = {{"role", "assistant"}, {"content", o.text}, {"refusal", nullptr}};
  else choice["text"] = o.text;
  j["choices"] = json::array({choice});
  j["usage"] = usage_json(o.usage);
  return j;
}

json chunk_json(const GenRequest& r, const std::string& id, int64_t created, const std::string& text,
                const std::vector<TokenLogprob>& logprobs, const std::string& finish_reason) {
  const bool chat = r.endpoint == Endpoint::kChat;
  json j = envelope(r, id, created, chat ? "chat.completion.chunk" : "text_completion");
  json choice{{"index", 0}, {"logprobs", logprobs_json(r, logprobs, 0)}, {"finish_reason", finish(finish_reason)}};
  if (chat) choice["delta"] = text.empty() && !finish_reason.empty() ? json::object() : json{{"content", text}};
  else choice["text"] = text;
  j["choices"] = json::array({choice});
  if (r.include_usage) j["usage"] = nullptr;
  return j;
}

json role_chunk_json(const GenRequest& r, const std::string& id, int64_t created) {
  json j = envelope(r, id, created, "chat.completion.chunk");
  j["choices"] = json::array(
      {{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
  if (r.include_usage) j["usage"] = nullptr;
  return j;
}

json usage_chunk_json(const GenRequest& r, const std::string& id, int64_t created, const Usage& u) {
  json j = envelope(r, id, created, r.endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_json(u);
  return j;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

}  // namespace strata::serve
