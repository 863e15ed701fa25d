// Snapshots of model states after a prompt prefix, for reuse by later
// requests that start with the same tokens (serve/engine.h). Bounded by a RAM
// budget; the least recently used snapshots go first.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <vector>

#include "strata/model.h"

namespace strata::serve {

class PromptCache {
 public:
  explicit PromptCache(int64_t budget_bytes) : budget_(budget_bytes) {}

  // The longest snapshot whose tokens are a prefix of `prompt` and at most
  // `max_len` long (null if none); it becomes the most recently used.
  struct Hit {
    const State* state = nullptr;
    int64_t length = 0;
  };
  Hit find(const std::vector<int32_t>& prompt, int64_t max_len);
  bool contains(const std::vector<int32_t>& prompt, int64_t length) const;
  // Keeps `state` as the state after prompt[0, length), evicting the least
  // recently used snapshots to stay within the budget (a snapshot larger than
  // the whole budget is not kept).
  void put(const std::vector<int32_t>& prompt, int64_t length, std::unique_ptr<State> state);

  int64_t entries() const { return static_cast<int64_t>(entries_.size()); }
  int64_t bytes() const { return bytes_; }

 private:
  struct Entry {
    std::vector<int32_t> tokens;
    std::unique_ptr<State> state;
    int64_t bytes = 0;
  };
  int64_t budget_, bytes_ = 0;
  std::list<Entry> entries_;  // most recently used first
};

}  // namespace strata::serve
