// strata serve: the OpenAI-compatible HTTP server (docs/serving.md).
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <pthread.h>
#include <thread>

#include "cli/common.h"
#include "serve/chat_template.h"
#include "serve/http_server.h"
#include "strata/error.h"

namespace strata::cli {

namespace {

struct ServeOpts {
  ModelFlags model;
  serve::ServerOptions server;
  serve::EngineOptions engine;
  std::string api_key_file, chat_template, chunk_context = "full";
  int64_t cache_mib = 1024;
};

std::string read_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("--api-key-file ", path, ": cannot read it");
  std::string key;
  std::getline(in, key);
  while (!key.empty() && (key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.empty()) fail("--api-key-file ", path, ": the first line is empty");
  return key;
}

void serve(ServeOpts& o) {
  if (!o.api_key_file.empty()) o.server.api_key = read_key_file(o.api_key_file);
  o.server.chat_format = serve::choose_chat_format(o.chat_template, o.model.path);
  o.engine.cache_bytes = o.cache_mib << 20;
  o.engine.chunk_context = o.chunk_context == "full" ? ChunkContext::Full : ChunkContext::Recurrent;
  // SIGINT / SIGTERM stop the server from a thread of their own (stop() is not async-signal-safe).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  Loaded l = load(o.model, true);
  o.server.add_bos = l.add_bos;
  o.server.model_id = std::filesystem::path(o.model.path).filename().replace_extension().string();
  if (o.server.model_id.empty()) o.server.model_id = "strata";
  serve::Engine engine(*l.model, *l.tokenizer, o.engine);
  serve::HttpServer http(engine, *l.tokenizer, o.server);
  const int port = http.bind();
  std::fprintf(stderr, "strata serve: %s on http://%s:%d (%d slots, context %lld, chat template %s%s)\n",
               o.server.model_id.c_str(), o.server.host.c_str(), port, o.engine.parallel, (long long)engine.ctx(),
               o.chat_template.empty() ? "from the model or zephyr" : o.chat_template.c_str(),
               o.server.api_key.empty() ? "" : ", API key required");
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "strata serve: signal %d, stopping\n", sig);
    http.stop();
  });
  http.run();
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
}

}  // namespace

void register_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOpts>();
  CLI::App* cmd = app.add_subcommand("serve", "an OpenAI-compatible HTTP server (docs/serving.md)");
  add_model_flags(cmd, o->model);
  add_self_extend_flag(cmd, o->model);
  cmd->add_option("--host", o->server.host, "address to listen on (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", o->server.port, "port (0: any free one, printed)")->check(CLI::Range(0, 65535));
  cmd->add_option("--parallel", o->engine.parallel, "sequences generated together (slots)")->check(CLI::Range(1, 256));
  cmd->add_option("--ctx", o->engine.ctx, "tokens per sequence (default: the model's max_position_embeddings)")
      ->check(at_least(0));
  cmd->add_option("--queue", o->engine.queue_limit, "requests that may wait for a slot before 503")->check(CLI::Range(0, 4096));
  auto* key = cmd->add_option("--api-key", o->server.api_key, "require Authorization: Bearer KEY");
  cmd->add_option("--api-key-file", o->api_key_file, "the key from the first line of a file")->excludes(key);
  cmd->add_option("--chat-template", o->chat_template,
                  "zephyr, chatml or llama-2 (default: the model's template if recognised, else zephyr)");
  cmd->add_option("--cache-ram", o->cache_mib, "MiB for prompt-state snapshots (0: no prompt reuse)")->check(at_least(0));
  cmd->add_option("--prefill-chunk", o->engine.prefill_chunk, "prefill chunk in tokens; prompt reuse points are its multiples")
      ->check(above(0));
  cmd->add_option("--chunk-context", o->chunk_context,
                  "models with a hypernetwork: full or recurrent chunk context, as the model was trained")
      ->check(CLI::IsMember({"full", "recurrent"}));
  cmd->add_option("--body-limit", o->server.body_limit, "largest request body in bytes (413 beyond)")->check(above(0));
  cmd->callback([o] { serve(*o); });
}

}  // namespace strata::cli
