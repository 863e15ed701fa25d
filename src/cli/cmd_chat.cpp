// strata chat: a conversation in the terminal with the model's chat template,
// streamed as it is generated; each turn restores the conversation so far
// from the prompt cache instead of recomputing it (docs/serving.md).
#include <chrono>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "io/safetensors.h"
#include "serve/chat_template.h"
#include "serve/engine.h"
#include "strata/error.h"

namespace strata::cli {

namespace {

struct ChatOpts {
  ModelFlags model;
  std::string system, chat_template;
  serve::GenRequest req;
  int64_t cache_mib = 512;
};

void save(const std::string& path, const std::vector<ChatMessage>& msgs) {
  nlohmann::json j = nlohmann::json::array();
  for (const ChatMessage& m : msgs) j.push_back({{"role", m.role}, {"content", m.content}});
  write_file_atomic(path, nlohmann::json{{"messages", j}}.dump(1) + "\n");
}

void chat(ChatOpts& o) {
  const ChatFormat format = serve::choose_chat_format(o.chat_template, o.model.path);
  Loaded l = load(o.model, true);
  serve::EngineOptions eo;
  eo.parallel = 1;
  eo.cache_bytes = o.cache_mib << 20;
  serve::Engine engine(*l.model, *l.tokenizer, eo);
  std::vector<ChatMessage> msgs;
  if (!o.system.empty()) msgs.push_back({"system", o.system});
  std::fprintf(stderr, "chat with %s: /reset starts over, /save FILE writes the conversation as JSON, /quit ends\n",
               o.model.path.c_str());
  std::string line;
  for (;;) {
    std::fprintf(stderr, "> ");
    std::fflush(stderr);
    if (!std::getline(std::cin, line) || line == "/quit") break;
    if (line == "/reset") {
      msgs.resize(o.system.empty() ? 0 : 1);
      std::fprintf(stderr, "(conversation cleared)\n");
      continue;
    }
    if (line.rfind("/save", 0) == 0) {
      const std::string path = line.size() > 6 ? line.substr(6) : "";
      if (path.empty()) {
        std::fprintf(stderr, "usage: /save FILE\n");
        continue;
      }
      save(path, msgs);
      std::fprintf(stderr, "(saved %zu messages to %s)\n", msgs.size(), path.c_str());
      continue;
    }
    if (line.empty()) continue;
    msgs.push_back({"user", line});
    const auto t0 = std::chrono::steady_clock::now();
    std::shared_ptr<serve::Job> job;
    try {
      job = engine.submit(o.req, tokenize_chat(*l.tokenizer, format, msgs, true).ids);
    } catch (const std::exception& e) {
      msgs.pop_back();
      std::fprintf(stderr, "error: %s\n", e.what());
      continue;
    }
    std::string reply;
    std::vector<serve::Event> events;
    serve::Usage usage;
    bool more = true;
    while (more) {
      events.clear();
      more = job->take(events, std::chrono::milliseconds(100));
      for (const serve::Event& e : events) {
        std::fwrite(e.text.data(), 1, e.text.size(), stdout);
        std::fflush(stdout);
        reply += e.text;
        if (e.done && !e.error.empty()) std::fprintf(stderr, "\nerror: %s", e.error.c_str());
        if (e.done) usage = e.usage;
      }
    }
    std::printf("\n");
    std::fflush(stdout);
    msgs.push_back({"assistant", reply});
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "(prompt %lld tokens, %lld from the cache; %lld generated, %.1f tok/s)\n",
                 (long long)usage.prompt_tokens, (long long)usage.cached_tokens, (long long)usage.completion_tokens,
                 usage.completion_tokens / (s > 0 ? s : 1e-9));
  }
}

}  // namespace

void register_chat(CLI::App& app) {
  auto o = std::make_shared<ChatOpts>();
  o->req.endpoint = serve::Endpoint::kChat;
  o->req.max_tokens = 512;
  o->req.sampler.temperature = 0.7f;
  o->req.sampler.top_p = 0.95f;
  o->req.sampler.repeat_penalty = 1.0f;
  CLI::App* cmd = app.add_subcommand("chat", "an interactive chat in the terminal (docs/serving.md)");
  add_model_flags(cmd, o->model);
  add_self_extend_flag(cmd, o->model);
  cmd->add_option("--system", o->system, "the system message");
  cmd->add_option("--chat-template", o->chat_template,
                  "zephyr, chatml or llama-2 (default: the model's template if recognised, else zephyr)");
  cmd->add_option("-n,--n-tokens", o->req.max_tokens, "most tokens per answer")->check(above(0));
  cmd->add_option("--temp", o->req.sampler.temperature, "temperature (0: greedy)")->check(at_least(0));
  cmd->add_option("--top-p", o->req.sampler.top_p, "nucleus: smallest set reaching probability P")
      ->check(between(0.0, 1.0, true));
  cmd->add_option("--seed", o->req.sampler.seed, "random seed");
  cmd->add_option("--cache-ram", o->cache_mib, "MiB for the conversation's state snapshots")->check(at_least(0));
  cmd->callback([o] { chat(*o); });
}

}  // namespace strata::cli
