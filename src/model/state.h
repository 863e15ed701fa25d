// The decode-state contract. Every per-sequence state of a module (KV cache,
// ring of the last w keys, conv window, running sums, SSM state) has a kind, a
// byte size, and can be copied and restored; a whole sequence's state (all
// layers, strata::State) is built from these, so a server can snapshot a
// prompt and roll a sequence back for every architecture.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "strata/error.h"
#include "strata/tensor.h"

namespace strata {

class LayerState {
 public:
  virtual ~LayerState() = default;
  // What this state is ("kv-cache", "kv-ring", "conv-window", ...): states
  // of one kind are interchangeable when their shape() agrees.
  virtual const char* kind() const = 0;
  // Its shape, e.g. "k 64, v 64, window 8": copy_from requires equality.
  virtual std::string shape() const = 0;
  // Bytes held now (what a snapshot of it costs).
  virtual int64_t bytes() const = 0;
  virtual std::unique_ptr<LayerState> clone() const = 0;
  // Replaces this state's contents with `src`'s; throws unless src has the
  // same kind and shape.
  virtual void copy_from(const LayerState& src) = 0;
  // Its contents as named F32 tensors in a layout other implementations
  // share (e.g. a KV cache's keys in position order), so tools such as
  // `strata module-run` can write them out without knowing the module.
  // Empty: nothing to export.
  virtual std::vector<std::pair<std::string, Tensor>> export_tensors() const { return {}; }
};

// The state of module type `Derived`: kind, clone and copy_from from its copy
// constructor and assignment. Derived provides kKind, shape() and bytes().
template <class Derived>
class StateOf : public LayerState {
 public:
  const char* kind() const override { return Derived::kKind; }
  std::unique_ptr<LayerState> clone() const override {
    return std::make_unique<Derived>(static_cast<const Derived&>(*this));
  }
  void copy_from(const LayerState& src) override {
    const Derived* s = dynamic_cast<const Derived*>(&src);
    if (!s) fail("cannot restore a '", src.kind(), "' state into a '", kind(), "' state");
    if (s->shape() != shape())
      fail("cannot restore a '", kind(), "' state of shape (", s->shape(), ") into one of shape (", shape(), ")");
    static_cast<Derived&>(*this) = *s;
  }
};

// The one checked way from a LayerState to a module's own state type: a null
// state or one of another kind is an error naming `who` (the module).
template <class S>
S& state_cast(LayerState* s, const std::string& who) {
  if (!s) fail(who, ": a decode state is missing (expected '", S::kKind, "')");
  S* r = dynamic_cast<S*>(s);
  if (!r) fail(who, ": the decode state is a '", s->kind(), "', not the '", S::kKind, "' this module keeps");
  return *r;
}

// How big a module's decode state grows, for planning and `strata info`:
// fixed_bytes always, plus bytes_per_token for each position held, up to
// max_tokens positions (0: unbounded, e.g. a full-attention KV cache).
struct StateSize {
  int64_t fixed_bytes = 0;
  int64_t bytes_per_token = 0;
  int64_t max_tokens = 0;
  // Bytes after `tokens` positions.
  int64_t at(int64_t tokens) const {
    const int64_t held = max_tokens > 0 && tokens > max_tokens ? max_tokens : tokens;
    return fixed_bytes + bytes_per_token * held;
  }
};

}  // namespace strata
