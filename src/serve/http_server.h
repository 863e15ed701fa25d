// The HTTP side of `strata serve` (docs/serving.md): OpenAI's endpoints over
// cpp-httplib, an optional API key, a body size limit, server-sent events,
// Prometheus metrics and one log line per request.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "serve/engine.h"
#include "train/sft_data.h"

namespace httplib {
class Server;
}

namespace strata::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;              // 0: any free port (bind() returns it)
  std::string api_key;          // empty: no key asked
  size_t body_limit = 4 << 20;  // bytes; larger bodies get 413
  std::string model_id = "strata";
  ChatFormat chat_format = ChatFormat::kZephyr;
  bool add_bos = true;  // completions: BOS before the prompt text
  bool log = true;      // one line per request on stderr
};

class HttpServer {
 public:
  HttpServer(Engine& engine, const Tokenizer& tok, ServerOptions opts);
  ~HttpServer();
  // Binds to host:port (fails naming them); returns the port.
  int bind();
  // Serves until stop() (from another thread or a signal handler's thread).
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Compares a presented key with the expected one in time independent of where they differ.
bool keys_equal(const std::string& given, const std::string& expected);

}  // namespace strata::serve
