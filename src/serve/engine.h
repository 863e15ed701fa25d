// The generation engine behind `strata serve` and `strata chat`
// (docs/serving.md): requests wait in a bounded queue, take one of
// `parallel` slots, and every active slot advances by one token per batched
// decode step; a new request joins between steps and a finished or cancelled
// one frees its slot.
//
// Results do not depend on what else runs: a step's rows go through the
// model in groups of at most 15, where every kernel computes each row alike
// whatever the batch (BF16 and quantized weights take other kernels from 16
// rows on), and each prompt is prefilled on its own.
//
// Prompt reuse: prompts are prefilled in chunks that start at multiples of
// `prefill_chunk`, and the state at the last chunk start before the prompt's
// end (and at 1, 2, 4, ... chunks) is kept in a RAM-bounded LRU cache
// (serve/prompt_cache.h). A new prompt restores the longest cached prefix and
// prefills the same chunks a fresh run would, so it gets the same bits for
// every architecture and weight type: KV caches, recurrent and windowed states
// alike.
//
// Models with a hypernetwork generate chunk by chunk as `generate --hypernet`
// does (a fresh context per chunk, soft prompt first, the chunk context of
// EngineOptions): one request at a time,
// without prompt reuse, since every chunk starts a new context.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "serve/api.h"
#include "serve/prompt_cache.h"
#include "strata/generate.h"
#include "strata/model.h"
#include "strata/tokenizer.h"

namespace strata::serve {

struct EngineOptions {
  int parallel = 4;                 // slots: sequences decoded together
  int64_t ctx = 0;                  // tokens per sequence (0: the model's max_position_embeddings)
  int64_t cache_bytes = 1LL << 30;  // RAM for prompt-state snapshots
  int queue_limit = 64;             // waiting requests beyond this get 503
  int64_t prefill_chunk = 256;      // prefill chunk length (reuse points are its multiples)
  // Models with a hypernetwork: what each chunk's context holds besides the
  // soft prompt, as the model was trained (generate --chunk-context).
  ChunkContext chunk_context = ChunkContext::Full;
};

// What a request's reader receives, in order: text as it becomes final, then
// one event with done set.
struct Event {
  std::string text;
  std::vector<TokenLogprob> logprobs;  // of the tokens this text completes
  bool done = false;
  std::string finish_reason;  // with done: "stop" or "length"
  Usage usage;                // with done
  std::string error;          // with done: the request failed
};

class Job {
 public:
  // Waits up to `timeout` for events and appends them to `out`; false once
  // the done event has been taken.
  bool take(std::vector<Event>& out, std::chrono::milliseconds timeout);
  // Stops the generation at the next step (the client went away).
  void cancel() { cancelled_ = true; }
  const GenRequest& request() const { return req_; }
  int64_t prompt_tokens() const { return static_cast<int64_t>(prompt_.size()); }

 private:
  friend class Engine;
  Job(GenRequest req, std::vector<int32_t> prompt) : req_(std::move(req)), prompt_(std::move(prompt)) {}
  void push(Event e);
  GenRequest req_;
  std::vector<int32_t> prompt_;
  std::atomic<bool> cancelled_{false};
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<Event> events_;
  bool done_ = false, taken_done_ = false;
};

struct EngineStats {
  int64_t requests = 0, finished = 0, cancelled = 0, failed = 0;
  int64_t prompt_tokens = 0, prefilled_tokens = 0, cached_tokens = 0, completion_tokens = 0;
  int64_t queue_depth = 0, busy_slots = 0, slots = 0;
  int64_t cache_entries = 0, cache_bytes = 0, cache_hits = 0, cache_lookups = 0;
  double decode_seconds = 0, prefill_seconds = 0;
};

class Engine {
 public:
  Engine(Model& model, const Tokenizer& tok, EngineOptions opts);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request whose prompt is already tokenized. Throws ApiError: 400
  // when the prompt (plus max_tokens) does not fit the context or holds ids
  // past the vocabulary, 503 when the queue is full.
  std::shared_ptr<Job> submit(GenRequest req, std::vector<int32_t> prompt);
  EngineStats stats() const;
  int64_t ctx() const { return ctx_; }
  const Model& model() const { return model_; }

 private:
  struct Slot;
  void loop();
  void start(Slot& s);
  void prefill(Slot& s);
  void advance(Slot& s, std::vector<Slot*>& stepping);
  void run_chunked(Slot& s);
  void finish(Slot& s, const std::string& reason, const std::string& error = "");

  Model& model_;
  const Tokenizer& tok_;
  EngineOptions opts_;
  int64_t ctx_ = 0;
  int32_t vocab_ = 0;
  PromptCache cache_;
  std::vector<std::unique_ptr<Slot>> slots_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  EngineStats stats_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace strata::serve
