#include "serve/engine.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "model/hypernet.h"
#include "strata/error.h"
#include "strata/generate.h"

namespace strata::serve {

namespace {

using clock = std::chrono::steady_clock;

// Rows per batched decode call: below 16, every matmul kernel computes a row
// alike whatever the batch (ops::matmul, kernels.h).
constexpr size_t kMaxStepRows = 15;

double since(clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); }

// A generation's text as it may be shown: whole UTF-8 characters
// (StreamDecoder), cut before the first stop sequence, and holding back a tail
// that could still become one.
class StopText {
 public:
  StopText(const Tokenizer& tok, std::vector<int32_t> context, std::vector<std::string> stops)
      : dec_(tok, std::move(context)), stops_(std::move(stops)) {
    for (const std::string& s : stops_) longest_ = std::max(longest_, s.size());
  }
  std::string push(int32_t id) {
    full_ += dec_.push(id);
    return release(false);
  }
  std::string finish() {
    full_ += dec_.finish();
    return release(true);
  }
  bool stopped() const { return stopped_; }

 private:
  std::string release(bool final) {
    if (stopped_) return "";
    size_t cut = std::string::npos;
    const size_t from = sent_ > longest_ ? sent_ - longest_ : 0;
    for (const std::string& s : stops_) cut = std::min(cut, full_.find(s, from));
    size_t end = full_.size();
    if (cut != std::string::npos) {
      stopped_ = true;
      end = std::max(cut, sent_);
    } else if (!final) {
      // The longest tail of the unsent text that begins a stop sequence.
      size_t hold = 0;
      for (const std::string& s : stops_)
        for (size_t k = std::min(s.size() - 1, full_.size() - sent_); k > hold; --k)
          if (full_.compare(full_.size() - k, k, s, 0, k) == 0) {
            hold = k;
            break;
          }
      end -= hold;
    }
    std::string out = full_.substr(sent_, end - sent_);
    sent_ = end;
    return out;
  }

  StreamDecoder dec_;
  std::vector<std::string> stops_;
  size_t longest_ = 0;
  std::string full_;
  size_t sent_ = 0;
  bool stopped_ = false;
};

// log-softmax of the raw logits: the chosen token's and the top n.
TokenLogprob logprobs_of(const Tokenizer& tok, const float* logits, int32_t vocab, int32_t chosen, int n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < vocab; ++i) m = std::max(m, logits[i]);
  double z = 0;
  for (int32_t i = 0; i < vocab; ++i) z += std::exp(static_cast<double>(logits[i]) - m);
  const double lz = m + std::log(z);
  TokenLogprob t{tok.token_text(chosen), static_cast<float>(logits[chosen] - lz), {}};
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  for (int32_t i = 0; i < vocab; ++i) ids[static_cast<size_t>(i)] = i;
  const auto top = static_cast<size_t>(std::min<int32_t>(n, vocab));
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(top), ids.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  for (size_t i = 0; i < top; ++i) t.top.emplace_back(tok.token_text(ids[i]), static_cast<float>(logits[ids[i]] - lz));
  return t;
}

bool power_of_two(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

}  // namespace

void Job::push(Event e) {
  {
    std::lock_guard lk(m_);
    done_ = done_ || e.done;
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

bool Job::take(std::vector<Event>& out, std::chrono::milliseconds timeout) {
  std::unique_lock lk(m_);
  if (taken_done_) return false;
  cv_.wait_for(lk, timeout, [&] { return !events_.empty(); });
  for (Event& e : events_) {
    taken_done_ = taken_done_ || e.done;
    out.push_back(std::move(e));
  }
  events_.clear();
  return !taken_done_;
}

struct Engine::Slot {
  std::shared_ptr<Job> job;
  bool started = false;
  std::unique_ptr<State> state;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<StopText> text;
  std::vector<int32_t> history;  // prompt and generated ids (the sampler's penalty window)
  std::vector<float> logits;     // the next token's
  int64_t max_new = 0, generated = 0;
  Usage usage;
  int32_t next = -1;  // the token the coming step feeds
};

Engine::Engine(Model& model, const Tokenizer& tok, EngineOptions opts)
    : model_(model), tok_(tok), opts_(opts), cache_(opts.cache_bytes) {
  const Config& cfg = model.config();
  if (!model.causal()) fail("serve: the model is not causal, so it cannot generate");
  if (model.hypernet()) opts_.parallel = 1;  // chunked generation runs one request at a time
  if (opts_.parallel < 1) fail("serve: --parallel must be at least 1");
  if (opts_.prefill_chunk < 1) fail("serve: the prefill chunk must be at least 1 token");
  ctx_ = opts_.ctx > 0 ? opts_.ctx : cfg.max_position_embeddings;
  vocab_ = static_cast<int32_t>(std::min<int64_t>(cfg.vocab_size, tok.vocab_size()));
  for (int i = 0; i < opts_.parallel; ++i) slots_.push_back(std::make_unique<Slot>());
  stats_.slots = opts_.parallel;
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard lk(m_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  for (auto& s : slots_)
    if (s->job) s->job->push({"", {}, true, "", s->usage, "the server is shutting down"});
  for (auto& j : queue_) j->push({"", {}, true, "", {}, "the server is shutting down"});
}

std::shared_ptr<Job> Engine::submit(GenRequest req, std::vector<int32_t> prompt) {
  const char* param = req.endpoint == Endpoint::kChat ? "messages" : "prompt";
  if (prompt.empty()) bad_request(param, "the prompt is empty");
  const int64_t V = model_.config().vocab_size;
  for (int32_t id : prompt)
    if (id < 0 || id >= V)
      bad_request(param, "token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(V));
  const auto n = static_cast<int64_t>(prompt.size());
  if (n >= ctx_)
    throw ApiError(400, "invalid_request_error", "context_length_exceeded", param,
                   "the prompt has " + std::to_string(n) + " tokens; the context holds " + std::to_string(ctx_) +
                       ", leaving none to generate");
  if (req.max_tokens > 0 && n + req.max_tokens > ctx_)
    throw ApiError(400, "invalid_request_error", "context_length_exceeded", "max_tokens",
                   "max_tokens " + std::to_string(req.max_tokens) + " with a prompt of " + std::to_string(n) +
                       " tokens exceeds the context of " + std::to_string(ctx_) + " tokens");
  if (model_.hypernet() && req.logprobs)
    bad_request("logprobs", "logprobs are not available for models with a hypernetwork (chunked generation)");
  Sampler check(req.sampler);  // the sampler's own checks, before queueing
  std::shared_ptr<Job> job(new Job(std::move(req), std::move(prompt)));
  {
    std::lock_guard lk(m_);
    if (static_cast<int>(queue_.size()) >= opts_.queue_limit)
      throw ApiError(503, "server_error", "overloaded", "",
                     "the server is busy: " + std::to_string(queue_.size()) + " requests are waiting; retry later");
    queue_.push_back(job);
    stats_.requests += 1;
    stats_.prompt_tokens += n;
    stats_.queue_depth = static_cast<int64_t>(queue_.size());
  }
  cv_.notify_all();
  return job;
}

EngineStats Engine::stats() const {
  std::lock_guard lk(m_);
  return stats_;
}

void Engine::loop() {
  std::vector<float> logits;
  for (;;) {
    {
      std::unique_lock lk(m_);
      cv_.wait(lk, [&] {
        return stop_ || !queue_.empty() || std::any_of(slots_.begin(), slots_.end(), [](auto& s) { return s->job != nullptr; });
      });
      if (stop_) return;
      for (auto& s : slots_) {
        if (s->job || queue_.empty()) continue;
        s->job = std::move(queue_.front());
        s->started = false;
        queue_.pop_front();
        stats_.busy_slots += 1;
      }
      stats_.queue_depth = static_cast<int64_t>(queue_.size());
    }
    std::vector<Slot*> stepping;
    for (auto& s : slots_) {
      if (!s->job) continue;
      try {
        if (!s->started) start(*s);
        if (s->job) advance(*s, stepping);
      } catch (const std::exception& e) {
        finish(*s, "", e.what());
      }
    }
    // One batched decode step, in groups whose rows every kernel computes alike.
    const auto t = clock::now();
    for (size_t g = 0; g < stepping.size(); g += kMaxStepRows) {
      const size_t n = std::min(kMaxStepRows, stepping.size() - g);
      std::vector<int32_t> tokens(n);
      std::vector<State*> states(n);
      for (size_t i = 0; i < n; ++i) {
        tokens[i] = stepping[g + i]->next;
        states[i] = stepping[g + i]->state.get();
      }
      try {
        model_.step(tokens, states, logits);
        const auto V = static_cast<size_t>(model_.config().vocab_size);
        for (size_t i = 0; i < n; ++i) stepping[g + i]->logits.assign(logits.begin() + i * V, logits.begin() + (i + 1) * V);
      } catch (const std::exception& e) {
        for (size_t i = 0; i < n; ++i) finish(*stepping[g + i], "", e.what());
      }
    }
    if (!stepping.empty()) {
      std::lock_guard lk(m_);
      stats_.decode_seconds += since(t);
    }
  }
}

void Engine::start(Slot& s) {
  s.started = true;
  const Job& job = *s.job;
  if (job.cancelled_) return finish(s, "cancelled");
  const GenRequest& r = job.req_;
  const auto n = static_cast<int64_t>(job.prompt_.size());
  s.sampler = std::make_unique<Sampler>(r.sampler);
  s.history = job.prompt_;
  s.generated = 0;
  s.max_new = r.max_tokens > 0 ? r.max_tokens : ctx_ - n;
  // A few ids of context give the first token SentencePiece's spacing as in a full decode.
  const size_t ctx_ids = std::min<size_t>(8, job.prompt_.size());
  s.text = std::make_unique<StopText>(tok_, std::vector<int32_t>(job.prompt_.end() - static_cast<std::ptrdiff_t>(ctx_ids), job.prompt_.end()),
                                      r.stop);
  if (model_.hypernet()) return run_chunked(s);
  const auto t = clock::now();
  prefill(s);
  std::lock_guard lk(m_);
  stats_.prefill_seconds += since(t);
}

void Engine::run_chunked(Slot& s) {
  Job& job = *s.job;
  const Config& cfg = model_.config();
  // The query is the chat-formatted turn without BOS: BOS comes before the soft prompt.
  std::vector<int32_t> query = job.prompt_;
  if (!query.empty() && query.front() == cfg.bos_token_id) query.erase(query.begin());
  GenerateOptions g;
  // The last chunk's context holds BOS, the soft prompt, the query and the answer so far.
  const int64_t room = ctx_ - 1 - model_.hypernet()->soft_tokens() - static_cast<int64_t>(query.size());
  g.max_new_tokens = std::max<int64_t>(1, std::min(s.max_new, room));
  g.sampler = job.req_.sampler;
  g.vocab_limit = vocab_;
  s.usage = {static_cast<int64_t>(job.prompt_.size()), 0, 0};
  std::string reason;
  const auto t = clock::now();
  const GenerateResult res = generate_hypernet(model_, query, g, opts_.chunk_context, [&](int32_t id) {
    if (job.cancelled_) {
      reason = "cancelled";
      return false;
    }
    s.usage.completion_tokens += 1;
    job.push({s.text->push(id), {}, false, "", {}, ""});
    if (s.text->stopped()) reason = "stop";
    return reason.empty();
  });
  if (reason.empty()) {
    reason = res.stop_reason == "length" ? "length" : "stop";
    job.push({s.text->finish(), {}, false, "", {}, ""});
  }
  {
    std::lock_guard lk(m_);
    stats_.decode_seconds += since(t);
    stats_.prefilled_tokens += res.prefill_rows;
  }
  finish(s, reason);
}

void Engine::prefill(Slot& s) {
  const std::vector<int32_t>& p = s.job->prompt_;
  const auto n = static_cast<int64_t>(p.size());
  const int64_t C = opts_.prefill_chunk, last = (n - 1) / C * C;
  const PromptCache::Hit hit = cache_.find(p, last);
  s.state = model_.new_state();
  int64_t pos = 0;
  if (hit.state) {
    s.state->restore(*hit.state);
    pos = hit.length;
  }
  s.usage = {n, 0, pos};
  {
    std::lock_guard lk(m_);
    stats_.cache_lookups += 1;
    stats_.cache_hits += hit.state ? 1 : 0;
    stats_.cached_tokens += pos;
    stats_.prefilled_tokens += n - pos;
  }
  // The same chunks as a fresh prefill: [kC, (k+1)C) from the start.
  while (pos < n) {
    const int64_t next = std::min(n, (pos / C + 1) * C);
    SeqInput in{std::span<const int32_t>(p.data() + pos, static_cast<size_t>(next - pos)), s.state.get()};
    model_.forward({&in, 1}, next == n ? Logits::Last : Logits::None, s.logits);
    if (next % C == 0 && next <= last && (next == last || power_of_two(next / C)) && !cache_.contains(p, next))
      cache_.put(p, next, s.state->clone());
    pos = next;
  }
  std::lock_guard lk(m_);
  stats_.cache_entries = cache_.entries();
  stats_.cache_bytes = cache_.bytes();
}

void Engine::advance(Slot& s, std::vector<Slot*>& stepping) {
  Job& job = *s.job;
  if (job.cancelled_) return finish(s, "cancelled");
  const GenRequest& r = job.req_;
  const Config& cfg = model_.config();
  std::vector<TokenLogprob> lps;
  const int32_t id = [&] {
    if (!r.logprobs) return s.sampler->sample(s.logits.data(), vocab_, s.history);
    const std::vector<float> raw(s.logits.begin(), s.logits.begin() + vocab_);
    const int32_t chosen = s.sampler->sample(s.logits.data(), vocab_, s.history);
    lps.push_back(logprobs_of(tok_, raw.data(), vocab_, chosen, r.top_logprobs));
    return chosen;
  }();
  const bool eos = std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), id) != cfg.eos_token_ids.end() ||
                   id == tok_.eos_id() || (cfg.stop_at_bos && id == cfg.bos_token_id);
  if (eos) {
    job.push({s.text->finish(), {}, false, "", {}, ""});
    return finish(s, "stop");
  }
  s.history.push_back(id);
  s.generated += 1;
  s.usage.completion_tokens += 1;
  job.push({s.text->push(id), std::move(lps), false, "", {}, ""});
  if (s.text->stopped()) return finish(s, "stop");
  if (s.generated >= s.max_new || s.state->n_past() + 1 >= ctx_) {
    job.push({s.text->finish(), {}, false, "", {}, ""});
    return finish(s, "length");
  }
  s.next = id;
  stepping.push_back(&s);
}

void Engine::finish(Slot& s, const std::string& reason, const std::string& error) {
  // The slot is free and counted before the reader hears of it.
  const std::shared_ptr<Job> job = std::move(s.job);
  s.state.reset();
  {
    std::lock_guard lk(m_);
    stats_.completion_tokens += s.usage.completion_tokens;
    if (!error.empty()) stats_.failed += 1;
    else if (reason == "cancelled") stats_.cancelled += 1;
    else stats_.finished += 1;
    stats_.busy_slots -= 1;
  }
  job->push({"", {}, true, reason, s.usage, error});
}

}  // namespace strata::serve
