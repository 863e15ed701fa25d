// The HTTP server (src/serve/http_server.h) on loopback, with cpp-httplib's
// client: endpoints, server-sent events, the API key, bad bodies, metrics and
// cancellation when a streaming client goes away.
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <thread>

#include "serve/http_server.h"
#include "serve/serve_fixture.h"

namespace strata::serve {
namespace {

using nlohmann::json;

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = test::serve_tokenizer();
    model_ = make_model();
    EngineOptions eo;
    eo.parallel = 2;
    engine_ = std::make_unique<Engine>(*model_, *tok_, eo);
    ServerOptions so;
    so.port = 0;
    so.api_key = "k3y";
    so.body_limit = 64 << 10;
    so.model_id = "tiny";
    so.log = false;
    server_ = std::make_unique<HttpServer>(*engine_, *tok_, so);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  void TearDown() override {
    server_->stop();
    thread_.join();
  }
  virtual std::unique_ptr<Model> make_model() { return test::serve_model("tiny", DType::F32, 256); }
  httplib::Client client(bool with_key = true) {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(std::chrono::seconds(30));
    if (with_key) c.set_bearer_token_auth("k3y");
    return c;
  }
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  int port_ = 0;
};

TEST_F(HttpTest, ModelsHealthTokenizeAndMetrics) {
  auto c = client();
  auto health = client(false).Get("/health");  // no key needed
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "tiny");
  EXPECT_EQ(c.Get("/v1/models/tiny")->status, 200);
  auto other = c.Get("/v1/models/gpt-4");
  EXPECT_EQ(other->status, 404);
  EXPECT_EQ(json::parse(other->body)["error"]["code"], "model_not_found");
  auto tokens = c.Post("/tokenize", R"({"content": "the cat sat"})", "application/json");
  ASSERT_EQ(tokens->status, 200);
  const json ids = json::parse(tokens->body)["tokens"];
  EXPECT_EQ(ids.get<std::vector<int32_t>>(), tok_->encode("the cat sat", false));
  auto text = c.Post("/detokenize", json{{"tokens", ids}}.dump(), "application/json");
  EXPECT_EQ(json::parse(text->body)["content"], "the cat sat");
  EXPECT_EQ(c.Post("/detokenize", R"({"tokens": [99999]})", "application/json")->status, 400);
  auto metrics = c.Get("/metrics");
  EXPECT_NE(metrics->body.find("strata_requests_total"), std::string::npos);
  EXPECT_NE(metrics->body.find("# TYPE strata_slots gauge"), std::string::npos);
  EXPECT_EQ(c.Get("/nowhere")->status, 404);
}

TEST_F(HttpTest, ChatAndCompletionsAnswerWithUsageAndEchoTheModel) {
  auto c = client();
  auto r = c.Post("/v1/chat/completions",
                  R"({"model": "anything", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "temperature": 0})",
                  "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["model"], "anything");
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  const auto p = c.Post("/v1/completions", R"({"prompt": "the cat", "max_tokens": 4, "temperature": 0, "logprobs": 2})",
                        "application/json");
  ASSERT_EQ(p->status, 200) << p->body;
  const json k = json::parse(p->body);
  EXPECT_EQ(k["model"], "tiny");
  EXPECT_EQ(k["choices"][0]["logprobs"]["tokens"].size(), 4u);
  EXPECT_EQ(k["choices"][0]["logprobs"]["top_logprobs"][0].size(), 2u);
  // Greedy: the chosen token is the most likely one.
  const json& first = k["choices"][0]["logprobs"];
  EXPECT_FLOAT_EQ(first["token_logprobs"][0].get<float>(), first["top_logprobs"][0].begin().value().get<float>());
}

TEST_F(HttpTest, StreamsAreServerSentEventsEndingInDone) {
  auto c = client();
  std::string body;
  auto r = c.Post("/v1/chat/completions", {},
                  R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0,
                      "stream": true, "stream_options": {"include_usage": true}})",
                  "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  std::vector<json> chunks;
  size_t at = 0;
  bool done = false;
  while (at < r->body.size()) {
    const size_t end = r->body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos) << "every event ends with a blank line";
    const std::string event = r->body.substr(at, end - at);
    ASSERT_EQ(event.rfind("data: ", 0), 0u) << event;
    if (event == "data: [DONE]") done = true;
    else chunks.push_back(json::parse(event.substr(6)));
    at = end + 2;
  }
  EXPECT_TRUE(done);
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_EQ(chunks.front()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(chunks[chunks.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(chunks.back()["choices"].empty());
  EXPECT_EQ(chunks.back()["usage"]["completion_tokens"], 6);
  // The streamed text is the text of the same request unstreamed.
  std::string streamed;
  for (const json& ch : chunks)
    if (!ch["choices"].empty() && ch["choices"][0]["delta"].contains("content"))
      streamed += ch["choices"][0]["delta"]["content"].get<std::string>();
  auto whole = c.Post("/v1/chat/completions",
                      R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0})",
                      "application/json");
  EXPECT_EQ(json::parse(whole->body)["choices"][0]["message"]["content"], streamed);
}

TEST_F(HttpTest, KeysBodiesAndBadRequestsGiveOpenAiErrors) {
  auto no_key = client(false).Get("/v1/models");
  EXPECT_EQ(no_key->status, 401);
  EXPECT_EQ(json::parse(no_key->body)["error"]["code"], "invalid_api_key");
  httplib::Client wrong("127.0.0.1", port_);
  wrong.set_bearer_token_auth("k3z");
  EXPECT_EQ(wrong.Get("/v1/models")->status, 401);
  auto c = client();
  auto bad = c.Post("/v1/chat/completions", "{\"messages\": ", "application/json");
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["type"], "invalid_request_error");
  auto nan = c.Post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}], "top_p": -1})",
                    "application/json");
  EXPECT_EQ(nan->status, 400);
  EXPECT_EQ(json::parse(nan->body)["error"]["param"], "top_p");
  auto too_long = c.Post("/v1/completions", R"({"prompt": "x", "max_tokens": 100000})", "application/json");
  EXPECT_EQ(too_long->status, 400);
  EXPECT_EQ(json::parse(too_long->body)["error"]["code"], "context_length_exceeded");
  auto huge = c.Post("/v1/completions", std::string(100 << 10, ' '), "application/json");
  EXPECT_EQ(huge->status, 413);
}

int64_t rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return 0;
}

// A bounded load: 64 clients send 1024 short requests in all (a third of them
// streamed). Every one must succeed, the process must not grow without
// bound, and the latencies and throughput are reported.
TEST_F(HttpTest, SixtyFourClientsAndAThousandRequests) {
  constexpr int kClients = 64, kEach = 16;
  const int64_t rss_before = rss_kib();
  std::atomic<int> errors{0};
  std::string first_error;
  std::atomic<int64_t> tokens{0};
  std::vector<double> latencies(kClients * kEach);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      httplib::Client cli = client();
      for (int i = 0; i < kEach; ++i) {
        const bool stream = (c + i) % 3 == 0;
        const json body{{"prompt", "the cat " + std::to_string(c * kEach + i)}, {"max_tokens", 4 + (i % 5)},
                        {"temperature", 0.8}, {"seed", c * 1000 + i}, {"stream", stream}};
        const auto t = std::chrono::steady_clock::now();
        auto r = cli.Post("/v1/completions", body.dump(), "application/json");
        latencies[c * kEach + i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
        if (!r || r->status != 200) {
          if (errors++ == 0)
            first_error = std::string(stream ? "stream " : "whole ") + std::to_string(i) + ": " + (r ? std::to_string(r->status) + " " + r->body : "transport error " + httplib::to_string(r.error()));
          continue;
        }
        if (stream) {
          if (r->body.find("data: [DONE]") == std::string::npos) errors += 1;
          tokens += 4 + (i % 5);  // at most; counted from the engine below
        } else {
          tokens += json::parse(r->body)["usage"]["completion_tokens"].get<int64_t>();
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(errors.load(), 0) << "first: " << first_error;
  const EngineStats st = engine_->stats();
  EXPECT_EQ(st.finished, kClients * kEach);
  EXPECT_EQ(st.failed, 0);
  EXPECT_EQ(st.busy_slots, 0);
  EXPECT_EQ(st.queue_depth, 0);
  std::sort(latencies.begin(), latencies.end());
  const int64_t growth = rss_kib() - rss_before;
  std::cout << "load: " << kClients * kEach << " requests from " << kClients << " clients in " << seconds << " s; latency p50 "
            << latencies[latencies.size() / 2] * 1e3 << " ms, p99 " << latencies[latencies.size() * 99 / 100] * 1e3
            << " ms; " << static_cast<double>(st.completion_tokens) / seconds << " generated tok/s; RSS +" << growth / 1024
            << " MiB\n";
#if defined(__SANITIZE_ADDRESS__)
  const int64_t bound = 512 * 1024;  // AddressSanitizer's quarantine holds up to 256 MiB of freed memory
#else
  const int64_t bound = 64 * 1024;
#endif
  EXPECT_LT(growth, bound) << "RSS grew by " << growth << " KiB";
}

// A model wide enough that 480 tokens take a while (about a millisecond each).
class SlowHttpTest : public HttpTest {
  std::unique_ptr<Model> make_model() override {
    Config c = preset_config("tiny");
    c.hidden_size = 512;
    c.head_dim = 128;
    c.intermediate_size = 2048;
    c.max_position_embeddings = 512;
    return Model::random(c, 3, DType::F32);
  }
};

TEST_F(SlowHttpTest, AStreamingClientThatLeavesCancelsItsGeneration) {
  {
    httplib::Client c = client();
    int chunks = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.set_header("Authorization", "Bearer k3y");
    // A fixed seed, and BOS and EOS banned: a sampled EOS would end the
    // generation before the server sees the client leave.
    req.body = R"({"prompt": "the", "max_tokens": 480, "temperature": 0.9, "seed": 7, "stream": true,
                   "logit_bias": {"1": -100, "2": -100}})";
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };  // then hang up
    c.send(req);
  }
  for (int i = 0; i < 100 && engine_->stats().cancelled == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(engine_->stats().cancelled, 1);
  EXPECT_LT(engine_->stats().completion_tokens, 480);
}

}  // namespace
}  // namespace strata::serve
