#include "serve/prompt_cache.h"

#include <algorithm>

namespace strata::serve {

namespace {

bool is_prefix(const std::vector<int32_t>& tokens, const std::vector<int32_t>& prompt) {
  return tokens.size() <= prompt.size() && std::equal(tokens.begin(), tokens.end(), prompt.begin());
}

}  // namespace

PromptCache::Hit PromptCache::find(const std::vector<int32_t>& prompt, int64_t max_len) {
  auto best = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const auto len = static_cast<int64_t>(it->tokens.size());
    if (len > max_len || !is_prefix(it->tokens, prompt)) continue;
    if (best == entries_.end() || len > static_cast<int64_t>(best->tokens.size())) best = it;
  }
  if (best == entries_.end()) return {};
  entries_.splice(entries_.begin(), entries_, best);
  return {entries_.front().state.get(), static_cast<int64_t>(entries_.front().tokens.size())};
}

bool PromptCache::contains(const std::vector<int32_t>& prompt, int64_t length) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const Entry& e) {
    return static_cast<int64_t>(e.tokens.size()) == length && std::equal(e.tokens.begin(), e.tokens.end(), prompt.begin());
  });
}

void PromptCache::put(const std::vector<int32_t>& prompt, int64_t length, std::unique_ptr<State> state) {
  const int64_t bytes = state->bytes() + length * static_cast<int64_t>(sizeof(int32_t));
  if (bytes > budget_ || contains(prompt, length)) return;
  while (bytes_ + bytes > budget_ && !entries_.empty()) {
    bytes_ -= entries_.back().bytes;
    entries_.pop_back();
  }
  entries_.push_front({std::vector<int32_t>(prompt.begin(), prompt.begin() + length), std::move(state), bytes});
  bytes_ += bytes;
}

}  // namespace strata::serve
