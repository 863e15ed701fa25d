// AdamW (PyTorch 1.13 semantics), parameter groups, gradient norm and clipping.
#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "core/parallel.h"
#include "strata/error.h"

namespace strata {

namespace {

constexpr int64_t kGrain = int64_t{1} << 14;       // elements per parallel chunk in the update
constexpr int64_t kNormBlock = int64_t{1} << 15;   // fixed reduction blocks: thread-count independent

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

double parse_nonneg(const std::string& spec, const std::string& key, const std::string& text) {
  const char* p = text.c_str();
  char* end = nullptr;
  const double x = std::strtod(p, &end);
  if (text.empty() || end != p + text.size() || !std::isfinite(x))
    fail("param group '", spec, "': ", key, "='", text, "' is not a number");
  if (x < 0) fail("param group '", spec, "': ", key, " must be >= 0, got ", text);
  return x;
}

// The F32 constants of one update, formed as PyTorch forms them (doubles rounded once).
struct StepConsts {
  float decay, b1, one_minus_b1, b2, one_minus_b2, bc2_sqrt, eps, neg_step;
};

void adamw_range(float* w, const float* g, float* m, float* v, int64_t b, int64_t e, const StepConsts& c) {
  for (int64_t i = b; i < e; ++i) {
    const float gi = g[i];
    const float wi = w[i] * c.decay;
    // PyTorch's AVX2/AVX-512 kernels fuse these two multiply-adds (add_ with alpha, addcmul_).
    const float mi = std::fma(gi, c.one_minus_b1, m[i] * c.b1);
    const float vi = std::fma(c.one_minus_b2 * gi, gi, v[i] * c.b2);
    const float denom = std::sqrt(vi) / c.bc2_sqrt + c.eps;
    w[i] = wi + (c.neg_step * mi) / denom;
    m[i] = mi;
    v[i] = vi;
  }
}

struct Block {
  size_t p;
  int64_t b, e;
};

std::vector<Block> grad_blocks(const std::vector<TrainParam>& params) {
  std::vector<Block> blocks;
  for (size_t p = 0; p < params.size(); ++p) {
    if (!params[p].g) continue;
    for (int64_t b = 0; b < params[p].n; b += kNormBlock)
      blocks.push_back({p, b, std::min(params[p].n, b + kNormBlock)});
  }
  return blocks;
}

}  // namespace

bool glob_match(std::string_view pat, std::string_view s) {
  size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
  while (i < s.size()) {
    if (p < pat.size() && (pat[p] == '?' || pat[p] == s[i])) {
      ++p;
      ++i;
    } else if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (star != std::string_view::npos) {  // let the last '*' absorb one more character
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

ParamSettings resolve_param(const std::string& name, const Shape& shape, const AdamWConfig& cfg) {
  ParamSettings s;
  s.weight_decay = shape.size() >= 2 || cfg.decay_vectors ? cfg.weight_decay : 0.0;
  for (size_t r = cfg.rules.size(); r-- > 0;) {
    const ParamGroupRule& rule = cfg.rules[r];
    if (!glob_match(rule.pattern, name)) continue;
    if (rule.lr_scale) s.lr_scale = *rule.lr_scale;
    if (rule.weight_decay) s.weight_decay = *rule.weight_decay;
    s.frozen = rule.frozen;
    s.rule = static_cast<int>(r);
    break;
  }
  return s;
}

ParamGroupRule parse_param_group(const std::string& spec) {
  const size_t colon = spec.find(':');
  if (colon == std::string::npos)
    fail("param group '", spec, "': expected PATTERN:OPTIONS with options lr_scale=X, wd=X, frozen");
  ParamGroupRule r;
  r.pattern = trim(spec.substr(0, colon));
  if (r.pattern.empty()) fail("param group '", spec, "': empty pattern");
  const std::string opts = spec.substr(colon + 1);
  if (trim(opts).empty()) fail("param group '", spec, "': no options after ':' (lr_scale=X, wd=X, frozen)");
  std::set<std::string> seen;
  size_t pos = 0;
  while (pos <= opts.size()) {
    size_t comma = opts.find(',', pos);
    if (comma == std::string::npos) comma = opts.size();
    const std::string item = trim(opts.substr(pos, comma - pos));
    pos = comma + 1;
    if (item.empty()) fail("param group '", spec, "': empty option");
    const size_t eq = item.find('=');
    std::string key = trim(item.substr(0, eq));
    const std::string val = eq == std::string::npos ? std::string() : trim(item.substr(eq + 1));
    if (key == "lr") key = "lr_scale";
    if (key == "weight_decay") key = "wd";
    if (!seen.insert(key).second) fail("param group '", spec, "': option '", key, "' given twice");
    if (key == "lr_scale" || key == "wd") {
      if (eq == std::string::npos) fail("param group '", spec, "': option '", key, "' needs a value (", key, "=X)");
      (key == "wd" ? r.weight_decay : r.lr_scale) = parse_nonneg(spec, key, val);
    } else if (key == "frozen") {
      if (eq != std::string::npos) fail("param group '", spec, "': option 'frozen' takes no value");
      r.frozen = true;
    } else {
      fail("param group '", spec, "': unknown option '", key, "' (expected lr_scale=X, wd=X or frozen)");
    }
  }
  return r;
}

AdamW::AdamW(std::vector<TrainParam> params, AdamWConfig cfg, std::vector<ParamSlice> slices)
    : params_(std::move(params)), cfg_(std::move(cfg)), slices_(std::move(slices)), sliced_(!slices_.empty()) {
  if (sliced_ && slices_.size() != params_.size())
    fail("AdamW: ", slices_.size(), " slices for ", params_.size(), " parameters");
  if (!(cfg_.beta1 >= 0 && cfg_.beta1 < 1)) fail("AdamW: beta1 must be in [0, 1), got ", cfg_.beta1);
  if (!(cfg_.beta2 >= 0 && cfg_.beta2 < 1)) fail("AdamW: beta2 must be in [0, 1), got ", cfg_.beta2);
  if (!(cfg_.eps > 0) || !std::isfinite(cfg_.eps)) fail("AdamW: eps must be > 0, got ", cfg_.eps);
  if (!(cfg_.weight_decay >= 0) || !std::isfinite(cfg_.weight_decay))
    fail("AdamW: weight decay must be >= 0, got ", cfg_.weight_decay);
  std::set<std::string> names;
  std::vector<bool> rule_used(cfg_.rules.size(), false);
  for (const TrainParam& p : params_) {
    if (!names.insert(p.name).second) fail("AdamW: parameter '", p.name, "' given twice");
    if (p.n != shape_numel(p.shape))
      fail("AdamW: parameter '", p.name, "': n = ", p.n, " but shape ", shape_str(p.shape), " has ",
           shape_numel(p.shape), " elements");
    if (!p.w && p.n > 0) fail("AdamW: parameter '", p.name, "' has no weights");
    // A rule counts as used when it matches, even if a later rule overrides it.
    for (size_t r = 0; r < cfg_.rules.size(); ++r)
      if (glob_match(cfg_.rules[r].pattern, p.name)) rule_used[r] = true;
    ParamSettings s = resolve_param(p.name, p.shape, cfg_);
    if (p.buffer) s.frozen = true;
    if (!s.frozen && !p.g && p.n > 0) fail("AdamW: trainable parameter '", p.name, "' has no gradient buffer");
    settings_.push_back(s);
    if (!sliced_) slices_.push_back({0, p.n});
    const ParamSlice& sl = slices_[settings_.size() - 1];
    if (sl.lo < 0 || sl.hi < sl.lo || sl.hi > p.n)
      fail("AdamW: parameter '", p.name, "': slice [", sl.lo, ", ", sl.hi, ") is outside its ", p.n, " elements");
    const Shape shape = sliced_ ? Shape{sl.size()} : p.shape;
    m_.push_back(s.frozen ? Tensor() : Tensor::alloc(DType::F32, shape));
    v_.push_back(s.frozen ? Tensor() : Tensor::alloc(DType::F32, shape));
  }
  for (size_t r = 0; r < cfg_.rules.size(); ++r)
    if (!rule_used[r]) fail("param group '", cfg_.rules[r].pattern, "': matches no parameter of the model");
}

void AdamW::step(double lr, int64_t t) {
  if (t < 1) fail("AdamW: step must be >= 1, got ", t);
  if (!(lr >= 0) || !std::isfinite(lr)) fail("AdamW: learning rate must be finite and >= 0, got ", lr);
  const double b1 = cfg_.beta1, b2 = cfg_.beta2;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(t));  // Python: 1 - beta1 ** step
  const double bc2 = 1 - std::pow(b2, static_cast<double>(t));
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamSettings& s = settings_[i];
    if (s.frozen) continue;
    const TrainParam& p = params_[i];
    const double plr = lr * s.lr_scale;  // the group's lr, as a torch param group would hold it
    StepConsts c;
    c.decay = static_cast<float>(1 - plr * s.weight_decay);
    c.b1 = static_cast<float>(b1);
    c.one_minus_b1 = static_cast<float>(1 - b1);
    c.b2 = static_cast<float>(b2);
    c.one_minus_b2 = static_cast<float>(1 - b2);
    c.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    c.eps = static_cast<float>(cfg_.eps);
    c.neg_step = static_cast<float>(-(plr / bc1));
    const ParamSlice& sl = slices_[i];
    float* w = p.w + sl.lo;
    const float* g = p.g + sl.lo;
    float* m = m_[i].f32();
    float* v = v_[i].f32();
    parallel_for(sl.size(), kGrain, [&](int64_t b, int64_t e) { adamw_range(w, g, m, v, b, e, c); });
  }
}

std::vector<TrainParam> AdamW::trainable_params() const {
  std::vector<TrainParam> out;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!settings_[i].frozen) out.push_back(params_[i]);
  return out;
}

int64_t AdamW::num_trainable() const {
  int64_t n = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!settings_[i].frozen) n += params_[i].n;
  return n;
}

int64_t AdamW::moment_bytes() const {
  int64_t n = 0;
  for (size_t i = 0; i < m_.size(); ++i) n += static_cast<int64_t>(m_[i].nbytes() + v_[i].nbytes());
  return n;
}

void AdamW::load_param_state(size_t i, const float* m_whole, const float* v_whole) {
  if (settings_.at(i).frozen) return;
  const ParamSlice& sl = slices_[i];
  if (m_whole != m_[i].f32()) std::memcpy(m_[i].f32(), m_whole + sl.lo, static_cast<size_t>(sl.size()) * sizeof(float));
  if (v_whole != v_[i].f32()) std::memcpy(v_[i].f32(), v_whole + sl.lo, static_cast<size_t>(sl.size()) * sizeof(float));
}

NamedTensors AdamW::state() const {
  if (sliced_) fail("AdamW::state: the optimizer holds slices of the moments (ZeRO-1): gather them first");
  NamedTensors out;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (settings_[i].frozen) continue;
    out.emplace_back("optim.m." + params_[i].name, m_[i]);
    out.emplace_back("optim.v." + params_[i].name, v_[i]);
  }
  return out;
}

void AdamW::load_state(const WeightSet& ws) {
  std::set<std::string> expected;
  const std::string origin = ws.origin.empty() ? std::string("optimizer state") : ws.origin;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (settings_[i].frozen) continue;
    for (int k = 0; k < 2; ++k) {
      const std::string name = (k == 0 ? "optim.m." : "optim.v.") + params_[i].name;
      expected.insert(name);
      const Tensor* t = ws.find(name);
      if (!t)
        fail(origin, ": tensor '", name, "' missing (the optimizer state does not match the trainable parameters)");
      if (t->dtype != DType::F32)
        fail(ws.source_of(name), ": tensor '", name, "': expected F32, got ", dtype_name(t->dtype));
      if (t->shape != params_[i].shape)
        fail(ws.source_of(name), ": tensor '", name, "': shape ", shape_str(t->shape), ", expected ",
             shape_str(params_[i].shape));
    }
  }
  for (const auto& [name, t] : ws.tensors)
    if (name.starts_with("optim.") && !expected.count(name))
      fail(ws.source_of(name), ": tensor '", name,
           "' has no trainable parameter (was the model or the set of frozen parameters changed?)");
  // Every tensor is checked: now copy (all or nothing).
  for (size_t i = 0; i < params_.size(); ++i)
    if (!settings_[i].frozen)
      load_param_state(i, ws.find("optim.m." + params_[i].name)->f32(), ws.find("optim.v." + params_[i].name)->f32());
}

void AdamW::load_state(const NamedTensors& ts) {
  WeightSet ws;
  for (const auto& [name, t] : ts) {
    if (ws.find(name)) fail("optimizer state: tensor '", name, "' given twice");
    ws.add(name, t, "optimizer state");
  }
  load_state(ws);
}

double global_grad_norm(const std::vector<TrainParam>& params) { return std::sqrt(grad_sum_squares(params)); }

double grad_sum_squares(const std::vector<TrainParam>& params) {
  const std::vector<Block> blocks = grad_blocks(params);
  std::vector<double> partial(blocks.size(), 0.0);
  parallel_for(static_cast<int64_t>(blocks.size()), 1, [&](int64_t bb, int64_t be) {
    for (int64_t k = bb; k < be; ++k) {
      const Block& blk = blocks[static_cast<size_t>(k)];
      const float* g = params[blk.p].g;
      double acc[4] = {0, 0, 0, 0};  // four chains for speed; the combination order is fixed
      int64_t i = blk.b;
      for (; i + 4 <= blk.e; i += 4)
        for (int j = 0; j < 4; ++j) acc[j] += static_cast<double>(g[i + j]) * g[i + j];
      for (; i < blk.e; ++i) acc[0] += static_cast<double>(g[i]) * g[i];
      partial[static_cast<size_t>(k)] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
  });
  double total = 0;
  for (double x : partial) total += x;
  return total;
}

float clip_grads(const std::vector<TrainParam>& params, double norm, float max_norm) {
  // PyTorch: clip_coef = max_norm / (total_norm + 1e-6) on an F32 tensor, which
  // Tensor.__rtruediv__ computes as reciprocal(total_norm + 1e-6) * max_norm.
  const float denom = static_cast<float>(norm) + 1e-6f;
  const float coef = (1.0f / denom) * max_norm;
  if (!(coef < 1.0f)) return 1.0f;
  for (const TrainParam& p : params) {
    if (!p.g) continue;
    float* g = p.g;
    parallel_for(p.n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) g[i] *= coef;
    });
  }
  return coef;
}

bool all_finite(const std::vector<TrainParam>& params) {
  const std::vector<Block> blocks = grad_blocks(params);
  std::vector<char> ok(blocks.size(), 1);
  parallel_for(static_cast<int64_t>(blocks.size()), 1, [&](int64_t bb, int64_t be) {
    for (int64_t k = bb; k < be; ++k) {
      const Block& blk = blocks[static_cast<size_t>(k)];
      const float* g = params[blk.p].g;
      bool fine = true;
      for (int64_t i = blk.b; i < blk.e; ++i) fine &= std::isfinite(g[i]);
      ok[static_cast<size_t>(k)] = fine;
    }
  });
  for (char c : ok)
    if (!c) return false;
  return true;
}

}  // namespace strata
