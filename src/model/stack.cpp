#include "model/stack.h"

#include <algorithm>

#include "model/registry.h"
#include "strata/error.h"

namespace strata {

Stack build_stack(const Config& cfg) {
  cfg.validate("config");
  const int64_t V = cfg.vocab_size, D = cfg.hidden_size;
  Stack s;
  s.params.push_back({"embed_tokens", {kEmbedName, {V, D}}});
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    for (const BlockSpec& spec : layer_blocks(cfg, l)) {
      auto b = std::make_unique<Block>();
      b->norm = make_module(spec.norm, cfg);
      b->mixer = make_module(spec.mixer, cfg);
      if (spec.post) b->post = make_module(*spec.post, cfg);
      for (int i = 0; i < Block::kSlots; ++i)
        if (const Module* m = b->slot(i)) {
          if (!m->causal()) s.causal = false;
          for (ParamDecl& d : m->params()) s.params.push_back({m->kind(), std::move(d)});
        }
      s.blocks.push_back(std::move(b));
    }
  }
  s.final_norm = make_module(final_norm_spec(cfg), cfg);
  for (ParamDecl& d : s.final_norm->params()) s.params.push_back({"final_norm", std::move(d)});
  if (!cfg.tie_word_embeddings) s.params.push_back({"lm_head", {kHeadName, {V, D}}});
  return s;
}

std::vector<DeclaredParam> declared_params(const Config& cfg) { return build_stack(cfg).params; }

ParamCounts count_params(const std::vector<DeclaredParam>& params) {
  ParamCounts c;
  for (const DeclaredParam& p : params) {
    const int64_t n = shape_numel(p.decl.shape);
    if (!p.decl.trainable) {
      c.buffers += n;
      continue;
    }
    c.total += n;
    auto it = std::find_if(c.by_group.begin(), c.by_group.end(), [&](const auto& g) { return g.first == p.group; });
    if (it == c.by_group.end()) c.by_group.emplace_back(p.group, n);
    else it->second += n;
  }
  return c;
}

ParamCounts count_params(const Config& cfg) { return count_params(declared_params(cfg)); }

std::vector<StateUse> state_use(const Stack& stack) {
  std::vector<StateUse> r;
  for (const auto& b : stack.blocks)
    for (int i = 0; i < Block::kSlots; ++i) {
      const Module* m = b->slot(i);
      if (!m) continue;
      const StateSize s = m->state_size();
      if (s.fixed_bytes == 0 && s.bytes_per_token == 0) continue;
      auto it = std::find_if(r.begin(), r.end(), [&](const StateUse& u) {
        return u.kind == m->kind() && u.each.fixed_bytes == s.fixed_bytes &&
               u.each.bytes_per_token == s.bytes_per_token && u.each.max_tokens == s.max_tokens;
      });
      if (it == r.end()) r.push_back({m->kind(), 1, s});
      else ++it->modules;
    }
  return r;
}

}  // namespace strata
