#include "model/stack.h"

#include <algorithm>
#include <cmath>

#include "model/hypernet.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {

namespace {

// A weight whose init the module left to the model (Normal, no std of its
// own) as the config's scheme draws it. n_res: sub-layers of its layer.
void apply_init_scheme(const Config& cfg, int64_t n_res, const std::string& group, ParamDecl& d) {
  if (d.init != Init::Normal || d.init_std >= 0.0f || cfg.init_scheme == "normal") return;
  const double D = static_cast<double>(cfg.hidden_size), layers = static_cast<double>(cfg.num_hidden_layers);
  if (cfg.init_scheme == "neox") {
    d.init_std = static_cast<float>(d.residual_out ? 1.0 / (std::sqrt(D) * layers) : std::sqrt(2.0 / (5.0 * D)));
    return;
  }
  // mamba: the embedding N(0, 0.02²); every Linear keeps PyTorch's default
  // U(±1/sqrt(fan_in)), residual outputs then divided by sqrt(n_res · layers).
  if (group == "embed_tokens") {
    d.init_std = 0.02f;
    return;
  }
  const double fan_in = d.shape.size() >= 2 ? static_cast<double>(d.shape[1]) : 1.0;
  double bound = 1.0 / std::sqrt(fan_in);
  if (d.residual_out) bound /= std::sqrt(static_cast<double>(n_res) * layers);
  d.init = Init::Uniform;
  d.init_value = static_cast<float>(bound);
}

}  // namespace

Stack build_stack(const Config& cfg) {
  cfg.validate("config");
  const int64_t V = cfg.vocab_size, D = cfg.hidden_size;
  Stack s;
  s.params.push_back({"embed_tokens", {kEmbedName, {V, D}}});
  apply_init_scheme(cfg, 1, "embed_tokens", s.params.back().decl);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::vector<BlockSpec> blocks = layer_blocks(cfg, l);
    for (const BlockSpec& spec : blocks) {
      auto b = std::make_unique<Block>();
      b->norm = make_module(spec.norm, cfg);
      b->mixer = make_module(spec.mixer, cfg);
      if (spec.post) b->post = make_module(*spec.post, cfg);
      for (int i = 0; i < Block::kSlots; ++i)
        if (const Module* m = b->slot(i)) {
          if (!m->causal()) s.causal = false;
          for (ParamDecl& d : m->params()) {
            apply_init_scheme(cfg, static_cast<int64_t>(blocks.size()), m->kind(), d);
            s.params.push_back({m->kind(), std::move(d)});
          }
        }
      s.blocks.push_back(std::move(b));
    }
  }
  s.final_norm = make_module(final_norm_spec(cfg), cfg);
  for (ParamDecl& d : s.final_norm->params()) s.params.push_back({"final_norm", std::move(d)});
  if (!cfg.tie_word_embeddings) {
    s.params.push_back({"lm_head", {kHeadName, {V, D}}});
    apply_init_scheme(cfg, 1, "lm_head", s.params.back().decl);
  }
  if (cfg.has_hypernet()) {  // its sp0 is drawn with the spread of the token embeddings
    const ParamDecl& e = s.params.front().decl;
    const float embed_std = e.init_std >= 0 ? e.init_std : static_cast<float>(cfg.initializer_range);
    for (DeclaredParam& p : hypernet_params(cfg, embed_std)) s.params.push_back(std::move(p));
  }
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
