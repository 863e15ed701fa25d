#include "serve/http_server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <random>
#include <sstream>

#include "strata/error.h"

namespace strata::serve {

using nlohmann::json;

bool keys_equal(const std::string& given, const std::string& expected) {
  // Walks the whole expected key whatever the given one holds.
  unsigned diff = given.size() == expected.size() ? 0u : 1u;
  for (size_t i = 0; i < expected.size(); ++i)
    diff |= static_cast<unsigned char>(expected[i]) ^ static_cast<unsigned char>(i < given.size() ? given[i] : 0);
  return diff == 0;
}

namespace {

const char* kJson = "application/json";

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  if (e.status == 503) res.set_header("Retry-After", "1");
  res.set_content(dump(error_body(e)), kJson);
}

// What one streamed request still has to send.
struct StreamState {
  std::shared_ptr<Job> job;
  GenRequest req;
  std::string id;
  int64_t created = 0;
  bool started = false;
};

}  // namespace

struct HttpServer::Impl {
  Engine& engine;
  const Tokenizer& tok;
  ServerOptions o;
  httplib::Server svr;
  std::atomic<uint64_t> seeds{0};
  int64_t started = std::time(nullptr);
  std::mutex status_m;
  std::map<int, int64_t> responses;  // by status, for /metrics

  Impl(Engine& e, const Tokenizer& t, ServerOptions opts) : engine(e), tok(t), o(std::move(opts)) {
    seeds = std::random_device{}();
    routes();
  }

  std::string new_id(const char* prefix) {
    static std::atomic<uint64_t> counter{0};
    char buf[32];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(seeds.load() * 31 + counter++));
    return prefix + std::string(buf);
  }

  // Runs a handler with errors turned into OpenAI-style bodies.
  template <class F>
  httplib::Server::Handler guarded(F f) {
    return [f](const httplib::Request& req, httplib::Response& res) {
      try {
        f(req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        send_error(res, ApiError(500, "server_error", "internal_error", "", e.what()));
      }
    };
  }

  std::vector<int32_t> prompt_of(const GenRequest& r) const {
    if (r.endpoint == Endpoint::kChat) {
      try {
        return tokenize_chat(tok, o.chat_format, r.messages, true).ids;
      } catch (const Error& e) {
        bad_request("messages", e.what());
      }
    }
    if (r.prompt_is_ids) return r.prompt_ids;
    std::vector<int32_t> ids = tok.encode(r.prompt, o.add_bos);
    if (ids.empty()) ids.push_back(engine.model().config().bos_token_id);
    return ids;
  }

  void generate(Endpoint e, const httplib::Request& req, httplib::Response& res) {
    GenRequest r = parse_request(e, req.body, seeds.fetch_add(0x9E3779B97F4A7C15ull));
    if (r.model.empty()) r.model = o.model_id;
    std::vector<int32_t> prompt = prompt_of(r);
    auto st = std::make_shared<StreamState>();
    st->id = new_id(e == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
    st->created = std::time(nullptr);
    st->job = engine.submit(r, std::move(prompt));
    st->req = std::move(r);
    if (!st->req.stream) return respond_whole(*st, res);
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [st](size_t, httplib::DataSink& sink) { return stream_some(*st, sink); },
        [st](bool success) {
          if (!success) st->job->cancel();
        });
  }

  static void respond_whole(StreamState& st, httplib::Response& res) {
    Outcome out;
    std::vector<Event> events;
    while (st.job->take(events, std::chrono::milliseconds(200))) {
    }
    for (Event& e : events) {
      out.text += e.text;
      for (TokenLogprob& t : e.logprobs) out.logprobs.push_back(std::move(t));
      if (!e.done) continue;
      if (!e.error.empty()) throw ApiError(500, "server_error", "generation_failed", "", e.error);
      out.finish_reason = e.finish_reason;
      out.usage = e.usage;
    }
    res.set_content(dump(response_json(st.req, st.id, st.created, out)), kJson);
  }

  // Sends what the job has produced so far; false ends the response (the
  // client is gone, so the job is cancelled).
  static bool stream_some(StreamState& st, httplib::DataSink& sink) {
    auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
    if (!sink.is_writable()) {
      st.job->cancel();
      return false;
    }
    if (!st.started) {
      st.started = true;
      if (st.req.endpoint == Endpoint::kChat && !write(sse(role_chunk_json(st.req, st.id, st.created)))) {
        st.job->cancel();
        return false;
      }
    }
    std::vector<Event> events;
    st.job->take(events, std::chrono::milliseconds(100));
    for (const Event& e : events) {
      bool ok = true;
      if (!e.text.empty() || !e.logprobs.empty())
        ok = write(sse(chunk_json(st.req, st.id, st.created, e.text, e.logprobs, "")));
      if (ok && e.done) {
        if (!e.error.empty()) {
          ok = write(sse(error_body(ApiError(500, "server_error", "generation_failed", "", e.error))));
        } else {
          ok = write(sse(chunk_json(st.req, st.id, st.created, "", {}, e.finish_reason == "cancelled" ? "stop" : e.finish_reason)));
          if (ok && st.req.include_usage) ok = write(sse(usage_chunk_json(st.req, st.id, st.created, e.usage)));
        }
        if (ok) ok = write(kSseDone);
        if (ok) sink.done();
        return ok;
      }
      if (!ok) {
        st.job->cancel();
        return false;
      }
    }
    return true;
  }

  json model_object() const {
    const Config& c = engine.model().config();
    return {{"id", o.model_id},
            {"object", "model"},
            {"created", started},
            {"owned_by", "strata"},
            {"meta", {{"n_ctx", engine.ctx()}, {"n_vocab", c.vocab_size}, {"n_embd", c.hidden_size}}}};
  }

  std::string metrics() {
    const EngineStats s = engine.stats();
    std::ostringstream m;
    struct Metric {
      const char* name;
      const char* type;
      const char* help;
      double value;
    };
    const Metric table[] = {
        {"requests_total", "counter", "Generation requests accepted.", double(s.requests)},
        {"requests_finished_total", "counter", "Requests that ended normally.", double(s.finished)},
        {"requests_cancelled_total", "counter", "Requests cancelled by their client.", double(s.cancelled)},
        {"requests_failed_total", "counter", "Requests that failed inside the engine.", double(s.failed)},
        {"prompt_tokens_total", "counter", "Prompt tokens of accepted requests.", double(s.prompt_tokens)},
        {"prompt_tokens_prefilled_total", "counter", "Prompt tokens computed.", double(s.prefilled_tokens)},
        {"prompt_tokens_cached_total", "counter", "Prompt tokens restored from the prompt cache.",
         double(s.cached_tokens)},
        {"completion_tokens_total", "counter", "Tokens generated.", double(s.completion_tokens)},
        {"prefill_tokens_per_second", "gauge", "Prompt tokens computed per second of prefill.",
         s.prefill_seconds > 0 ? double(s.prefilled_tokens) / s.prefill_seconds : 0.0},
        {"decode_tokens_per_second", "gauge", "Tokens generated per second of batched decode steps.",
         s.decode_seconds > 0 ? double(s.completion_tokens) / s.decode_seconds : 0.0},
        {"queue_depth", "gauge", "Requests waiting for a slot.", double(s.queue_depth)},
        {"slots_busy", "gauge", "Slots generating.", double(s.busy_slots)},
        {"slots", "gauge", "Slots (--parallel).", double(s.slots)},
        {"prompt_cache_entries", "gauge", "State snapshots kept.", double(s.cache_entries)},
        {"prompt_cache_bytes", "gauge", "Memory of the state snapshots.", double(s.cache_bytes)},
        {"prompt_cache_hits_total", "counter", "Prompts that restored a snapshot.", double(s.cache_hits)},
        {"prompt_cache_lookups_total", "counter", "Prompts looked up.", double(s.cache_lookups)},
    };
    for (const Metric& x : table)
      m << "# HELP strata_" << x.name << ' ' << x.help << "\n# TYPE strata_" << x.name << ' ' << x.type << "\nstrata_"
        << x.name << ' ' << x.value << '\n';
    std::lock_guard lk(status_m);
    m << "# HELP strata_http_responses_total HTTP responses by status.\n# TYPE strata_http_responses_total counter\n";
    for (const auto& [status, n] : responses) m << "strata_http_responses_total{status=\"" << status << "\"} " << n << '\n';
    return m.str();
  }

  void routes() {
    svr.set_payload_max_length(o.body_limit);
    svr.set_read_timeout(std::chrono::seconds(30));
    svr.set_write_timeout(std::chrono::seconds(30));
    // Waiting requests each hold a connection thread; more than the engine
    // can queue only wait to be refused.
    const size_t threads = static_cast<size_t>(engine.stats().slots) + 72;
    svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (o.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = req.get_header_value("Authorization");
      const std::string bearer = "Bearer ";
      const std::string given = auth.compare(0, bearer.size(), bearer) == 0 ? auth.substr(bearer.size()) : std::string();
      if (keys_equal(given, o.api_key)) return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, ApiError(401, "invalid_request_error", "invalid_api_key", "", "a valid API key is required (Authorization: Bearer KEY)"));
      return httplib::Server::HandlerResponse::Handled;
    });
    svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string msg = res.status == 404   ? "no such endpoint: " + req.method + " " + req.path
                        : res.status == 413 ? "the request body is larger than the server's limit"
                                            : "HTTP error " + std::to_string(res.status);
      res.set_content(dump(error_body(ApiError(res.status, "invalid_request_error",
                                                res.status == 404 ? "not_found" : "", "", msg))),
                      kJson);
    });
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      {
        std::lock_guard lk(status_m);
        responses[res.status] += 1;
      }
      if (o.log) std::fprintf(stderr, "%s %s %d\n", req.method.c_str(), req.path.c_str(), res.status);
    });
    svr.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content("{\"status\":\"ok\"}", kJson); });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics(), "text/plain; version=0.0.4");
    });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump({{"object", "list"}, {"data", json::array({model_object()})}}), kJson);
    });
    svr.Get(R"(/v1/models/(.+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
              if (req.matches[1] != o.model_id)
                throw ApiError(404, "invalid_request_error", "model_not_found", "model",
                               "the model '" + std::string(req.matches[1]) + "' does not exist; this server has '" + o.model_id + "'");
              res.set_content(dump(model_object()), kJson);
            }));
    svr.Post("/v1/completions", guarded([this](const httplib::Request& req, httplib::Response& res) {
               generate(Endpoint::kCompletions, req, res);
             }));
    svr.Post("/v1/chat/completions", guarded([this](const httplib::Request& req, httplib::Response& res) {
               generate(Endpoint::kChat, req, res);
             }));
    svr.Post("/tokenize", guarded([this](const httplib::Request& req, httplib::Response& res) {
               const json b = parse_body(req.body);
               if (!b.contains("content") || !b["content"].is_string()) bad_request("content", "content must be a string");
               bool special = false;
               if (b.contains("add_special")) {
                 if (!b["add_special"].is_boolean()) bad_request("add_special", "add_special must be true or false");
                 special = b["add_special"].get<bool>();
               }
               res.set_content(dump({{"tokens", tok.encode(b["content"].get<std::string>(), special)}}), kJson);
             }));
    svr.Post("/detokenize", guarded([this](const httplib::Request& req, httplib::Response& res) {
               const json b = parse_body(req.body);
               if (!b.contains("tokens") || !b["tokens"].is_array()) bad_request("tokens", "tokens must be an array of ids");
               std::vector<int32_t> ids;
               for (const json& t : b["tokens"]) {
                 if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok.vocab_size())
                   bad_request("tokens", "tokens must be ids in [0, " + std::to_string(tok.vocab_size()) + ")");
                 ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
               }
               res.set_content(dump({{"content", tok.decode(ids)}}), kJson);
             }));
  }
};

HttpServer::HttpServer(Engine& engine, const Tokenizer& tok, ServerOptions opts)
    : impl_(std::make_unique<Impl>(engine, tok, std::move(opts))) {}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind() {
  Impl& i = *impl_;
  // cpp-httplib listens with a backlog of 5, so a burst of new connections
  // overflows the accept queue and clients see failed reads; Linux takes a
  // second listen() on the socket as a new backlog.
  int fd = -1;
  i.svr.set_socket_options([&fd](socket_t sock) {
    fd = sock;
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  if (i.o.port == 0) {
    const int port = i.svr.bind_to_any_port(i.o.host);
    if (port < 0) fail("serve: cannot listen on ", i.o.host, " (any port)");
    i.o.port = port;
  } else if (!i.svr.bind_to_port(i.o.host, i.o.port)) {
    fail("serve: cannot listen on ", i.o.host, ":", i.o.port, " (in use, or not an address of this machine)");
  }
  if (fd >= 0) ::listen(fd, SOMAXCONN);
  return i.o.port;
}

void HttpServer::run() { impl_->svr.listen_after_bind(); }

void HttpServer::stop() {
  if (impl_ && impl_->svr.is_running()) impl_->svr.stop();
}

}  // namespace strata::serve
