// The request and response formats of the server (src/serve/api.h), the API
// key comparison and the recognition of chat templates.
#include <gtest/gtest.h>

#include "serve/api.h"
#include "serve/chat_template.h"
#include "serve/http_server.h"

namespace strata::serve {
namespace {

using nlohmann::json;

GenRequest chat(const std::string& body) { return parse_request(Endpoint::kChat, body, 42); }
GenRequest completion(const std::string& body) { return parse_request(Endpoint::kCompletions, body, 42); }

// The ApiError a body gives: status and the field named.
std::pair<int, std::string> refusal(Endpoint e, const std::string& body) {
  try {
    parse_request(e, body, 0);
  } catch (const ApiError& err) {
    return {err.status, err.param};
  }
  return {200, ""};
}

TEST(ServeApi, ParsesAChatRequestWithOpenAisDefaults) {
  const GenRequest r = chat(R"({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}]})");
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1].role, "user");
  EXPECT_EQ(r.messages[1].content, "Hi there");
  EXPECT_EQ(r.sampler.temperature, 1.0f);
  EXPECT_EQ(r.sampler.top_p, 1.0f);
  EXPECT_EQ(r.sampler.repeat_penalty, 1.0f);
  EXPECT_EQ(r.sampler.seed, 42u);
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_FALSE(r.stream);
  // developer is the newer name of system.
  EXPECT_EQ(chat(R"({"messages": [{"role": "developer", "content": "x"}]})").messages[0].role, "system");
}

TEST(ServeApi, ParsesSamplingStopStreamAndLogprobs) {
  const GenRequest r = chat(R"({"messages": [{"role": "user", "content": "x"}], "temperature": 0.5, "top_p": 0.9,
      "seed": 7, "max_tokens": 12, "stop": ["\n", "END"], "stream": true, "stream_options": {"include_usage": true},
      "frequency_penalty": 0.5, "presence_penalty": -0.5, "logit_bias": {"17": -100}, "logprobs": true,
      "top_logprobs": 3, "top_k": 5, "min_p": 0.1, "user": "ignored", "n": 1})");
  EXPECT_EQ(r.sampler.temperature, 0.5f);
  EXPECT_EQ(r.sampler.top_p, 0.9f);
  EXPECT_EQ(r.sampler.seed, 7u);
  EXPECT_EQ(r.max_tokens, 12);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_TRUE(r.stream && r.include_usage && r.logprobs);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_EQ(r.sampler.frequency_penalty, 0.5f);
  EXPECT_EQ(r.sampler.presence_penalty, -0.5f);
  ASSERT_EQ(r.sampler.logit_bias.size(), 1u);
  EXPECT_EQ(r.sampler.logit_bias[0], (std::pair<int32_t, float>{17, -100.0f}));
  EXPECT_EQ(r.sampler.top_k, 5);
  // Completions: a string, one string in an array, or token ids; logprobs is a count.
  EXPECT_EQ(completion(R"({"prompt": "abc"})").prompt, "abc");
  EXPECT_EQ(completion(R"({"prompt": ["abc"]})").prompt, "abc");
  const GenRequest ids = completion(R"({"prompt": [1, 5, 9], "logprobs": 2, "max_completion_tokens": 3})");
  EXPECT_TRUE(ids.prompt_is_ids);
  EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{1, 5, 9}));
  EXPECT_TRUE(ids.logprobs);
  EXPECT_EQ(ids.top_logprobs, 2);
  EXPECT_EQ(ids.max_tokens, 3);
  // Null means "not given".
  EXPECT_EQ(completion(R"({"prompt": "a", "temperature": null, "stop": null})").sampler.temperature, 1.0f);
}

TEST(ServeApi, DecodingPresetsFillWhatTheRequestLeavesOpen) {
  const GenRequest r = chat(R"({"messages": [{"role": "user", "content": "x"}], "decoding": "humaneval"})");
  EXPECT_EQ(r.sampler.temperature, 0.2f);
  EXPECT_EQ(r.sampler.top_p, 0.95f);
  const GenRequest g = chat(R"({"messages": [{"role": "user", "content": "x"}], "decoding": "govreport", "temperature": 0.7})");
  EXPECT_EQ(g.sampler.temperature, 0.7f);
  EXPECT_EQ(g.max_tokens, 450);
  EXPECT_EQ(refusal(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "x"}], "decoding": "nope"})"),
            (std::pair<int, std::string>{400, "decoding"}));
}

TEST(ServeApi, BadRequestsNameTheirField) {
  const std::string m = R"("messages": [{"role": "user", "content": "x"}])";
  auto chat_refusal = [&](const std::string& extra) { return refusal(Endpoint::kChat, "{" + m + ", " + extra + "}"); };
  using R = std::pair<int, std::string>;
  EXPECT_EQ(refusal(Endpoint::kChat, "{not json"), (R{400, ""}));
  EXPECT_EQ(refusal(Endpoint::kChat, "[1, 2]"), (R{400, ""}));
  EXPECT_EQ(refusal(Endpoint::kChat, "{}"), (R{400, "messages"}));
  EXPECT_EQ(refusal(Endpoint::kChat, R"({"messages": []})"), (R{400, "messages"}));
  EXPECT_EQ(refusal(Endpoint::kChat, R"({"messages": [{"role": "tool", "content": "x"}]})"), (R{400, "messages[0].role"}));
  EXPECT_EQ(refusal(Endpoint::kChat, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
            (R{400, "messages[0].content"}));
  EXPECT_EQ(refusal(Endpoint::kCompletions, "{}"), (R{400, "prompt"}));
  EXPECT_EQ(refusal(Endpoint::kCompletions, R"({"prompt": ["a", "b"]})"), (R{400, "prompt"}));
  EXPECT_EQ(refusal(Endpoint::kCompletions, R"({"prompt": [1, -2]})"), (R{400, "prompt"}));
  EXPECT_EQ(chat_refusal(R"("temperature": "hot")"), (R{400, "temperature"}));
  EXPECT_EQ(chat_refusal(R"("temperature": -0.1)"), (R{400, "temperature"}));
  EXPECT_EQ(chat_refusal(R"("temperature": 1e400)"), (R{400, ""}));  // not JSON a parser accepts as finite
  EXPECT_EQ(chat_refusal(R"("top_p": 0)"), (R{400, "top_p"}));
  EXPECT_EQ(chat_refusal(R"("top_p": 1.5)"), (R{400, "top_p"}));
  EXPECT_EQ(chat_refusal(R"("max_tokens": 0)"), (R{400, "max_tokens"}));
  EXPECT_EQ(chat_refusal(R"("max_tokens": 2.5)"), (R{400, "max_tokens"}));
  EXPECT_EQ(chat_refusal(R"("n": 2)"), (R{400, "n"}));
  EXPECT_EQ(chat_refusal(R"("tools": [{"type": "function"}])"), (R{400, "tools"}));
  EXPECT_EQ(chat_refusal(R"("response_format": {"type": "json_object"})"), (R{400, "response_format"}));
  EXPECT_EQ(chat_refusal(R"("stream_options": {"include_usage": true})"), (R{400, "stream_options"}));
  EXPECT_EQ(chat_refusal(R"("stop": ["a", "b", "c", "d", "e"])"), (R{400, "stop"}));
  EXPECT_EQ(chat_refusal(R"("stop": [""])"), (R{400, "stop"}));
  EXPECT_EQ(chat_refusal(R"("stop": 3)"), (R{400, "stop"}));
  EXPECT_EQ(chat_refusal(R"("frequency_penalty": 3)"), (R{400, "frequency_penalty"}));
  EXPECT_EQ(chat_refusal(R"("logit_bias": {"x": 1})"), (R{400, "logit_bias"}));
  EXPECT_EQ(chat_refusal(R"("logit_bias": {"3": 101})"), (R{400, "logit_bias"}));
  EXPECT_EQ(chat_refusal(R"("top_logprobs": 2)"), (R{400, "top_logprobs"}));
  EXPECT_EQ(chat_refusal(R"("logprobs": true, "top_logprobs": 21)"), (R{400, "top_logprobs"}));
  EXPECT_EQ(chat_refusal(R"("stream": "yes")"), (R{400, "stream"}));
  EXPECT_EQ(chat_refusal(R"("seed": 1e3)"), (R{400, "seed"}));
  EXPECT_EQ(chat_refusal(R"("model": 5)"), (R{400, "model"}));
  EXPECT_EQ(chat_refusal(R"("echo": true)"), (R{400, "echo"}));
}

TEST(ServeApi, ResponsesHaveOpenAisShape) {
  GenRequest r = chat(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 1})");
  Outcome o{"Hello", "stop", {{"Hello", -0.5f, {{"Hello", -0.5f}}}}, {7, 1, 4}};
  const json j = response_json(r, "chatcmpl-1", 100, o);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"][0]["token"], "Hello");
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"][0]["bytes"].size(), 5u);
  EXPECT_EQ(j["usage"]["total_tokens"], 8);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
  const json role = role_chunk_json(r, "chatcmpl-1", 100);
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  const json last = chunk_json(r, "chatcmpl-1", 100, "", {}, "length");
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  GenRequest c = completion(R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": true}})");
  const json chunk = chunk_json(c, "cmpl-1", 100, "ab", {}, "");
  EXPECT_EQ(chunk["object"], "text_completion");
  EXPECT_EQ(chunk["choices"][0]["text"], "ab");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(chunk.contains("usage") && chunk["usage"].is_null());
  const json usage = usage_chunk_json(c, "cmpl-1", 100, {3, 2, 0});
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 2);
  EXPECT_EQ(sse(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  // A lone byte of a multi-byte character is replaced, never thrown on.
  EXPECT_EQ(dump(json("\xE2")), "\"\xEF\xBF\xBD\"");
  const json err = error_body(ApiError(400, "invalid_request_error", "invalid_value", "top_p", "bad"));
  EXPECT_EQ(err["error"]["message"], "bad");
  EXPECT_EQ(err["error"]["param"], "top_p");
}

TEST(ServeApi, KeysCompareWholly) {
  EXPECT_TRUE(keys_equal("secret", "secret"));
  EXPECT_FALSE(keys_equal("secreT", "secret"));
  EXPECT_FALSE(keys_equal("secret2", "secret"));
  EXPECT_FALSE(keys_equal("", "secret"));
  EXPECT_FALSE(keys_equal("secre", "secret"));
}

TEST(ServeApi, ChatTemplatesAreRecognisedByTheirMarkers) {
  EXPECT_EQ(recognise_chat_template("{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>{% endfor %}"),
            ChatFormat::kChatML);
  EXPECT_EQ(recognise_chat_template("{% if m.role == 'user' %}{{ '<|user|>\n' + m.content + eos_token }}{% endif %}"
                                    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"),
            ChatFormat::kZephyr);
  EXPECT_EQ(recognise_chat_template("{{ bos_token + '[INST] ' + content + ' [/INST]' }}"), ChatFormat::kLlama2);
  EXPECT_FALSE(recognise_chat_template("{{ messages }}").has_value());
}

}  // namespace
}  // namespace strata::serve
