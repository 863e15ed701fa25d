// Next-token sampler. The result for a given seed depends only on the logits and
// options: candidates are visited in a fixed order (probability descending, lower
// id first on ties) and the draw walks that order with one strata::Rng uniform.
#include "strata/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "strata/error.h"

namespace strata {

Sampler::Sampler(const SamplerOptions& opts) : opts_(opts), rng_(opts.seed) {
  // Written as !(ok) so that NaN is rejected too.
  if (!(opts.temperature >= 0.0f) || std::isinf(opts.temperature)) fail("temperature (--temp) must be >= 0 and finite");
  if (opts.top_k < 0) fail("--top-k must be >= 0");
  if (!(opts.top_p > 0.0f && opts.top_p <= 1.0f)) fail("--top-p must be in (0, 1]");
  if (!(opts.min_p >= 0.0f && opts.min_p <= 1.0f)) fail("--min-p must be in [0, 1]");
  if (!(opts.repeat_penalty > 0.0f) || std::isinf(opts.repeat_penalty)) fail("--repeat-penalty must be > 0");
  if (opts.repeat_last_n < -1) fail("--repeat-last-n must be >= -1");
  if (!(std::fabs(opts.frequency_penalty) <= 2.0f)) fail("frequency_penalty must be in [-2, 2]");
  if (!(std::fabs(opts.presence_penalty) <= 2.0f)) fail("presence_penalty must be in [-2, 2]");
  for (const auto& [id, bias] : opts.logit_bias)
    if (id < 0 || !(std::fabs(bias) <= 100.0f)) fail("logit_bias: token ", id, " bias ", bias, " (ids >= 0, bias in [-100, 100])");
}

namespace {

// Argmax with the lowest id on ties (NaN never wins).
int32_t argmax(const float* x, int32_t n) {
  int32_t best = 0;
  float best_v = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < n; ++i) {
    if (x[i] > best_v) {
      best_v = x[i];
      best = i;
    }
  }
  return best;
}

// Token order for top-p and the draw: weight descending, lower id first on ties (a strict total order,
// so every result below is unique whatever the input order).
struct ByWeight {
  const float* w;
  bool operator()(int32_t a, int32_t b) const { return w[a] > w[b] || (w[a] == w[b] && a < b); }
};

// Finds the smallest c such that the c heaviest tokens of a[0, n) (in ByWeight order) have a total weight
// >= target (or > target when `strict`), and rearranges a so that a[0, c) are those tokens and a[c - 1] is
// the c-th. This is the sequential walk over the sorted distribution, done as a weighted quickselect:
// expected O(n) instead of sorting 32000 entries per token. If rounding keeps the target out of reach, all
// of the searched range counts (c = n, or the end of the last range that should have reached it).
// Hand-written partition (not std::partition/nth_element) so that the order, and thus every floating-point
// sum, is the same with every standard library.
size_t weighted_prefix(int32_t* a, size_t n, const float* w, double target, bool strict) {
  if (n == 0) return 0;
  const ByWeight before{w};
  auto reached = [&](double mass) { return strict ? mass > target : mass >= target; };
  size_t lo = 0, hi = n;
  double acc = 0.0;  // weight of a[0, lo)
  while (hi - lo > 32) {
    // Median of three as the pivot, moved to a[hi - 1].
    const size_t mid = lo + (hi - lo) / 2;
    if (before(a[mid], a[lo])) std::swap(a[mid], a[lo]);
    if (before(a[hi - 1], a[lo])) std::swap(a[hi - 1], a[lo]);
    if (before(a[mid], a[hi - 1])) std::swap(a[mid], a[hi - 1]);
    const int32_t pivot = a[hi - 1];
    size_t m = lo;
    double mass = 0.0;
    for (size_t i = lo; i + 1 < hi; ++i) {
      if (before(a[i], pivot)) {
        mass += w[a[i]];
        std::swap(a[i], a[m++]);
      }
    }
    std::swap(a[m], a[hi - 1]);  // a[lo, m) precede the pivot, now at a[m]
    if (reached(acc + mass)) {
      hi = m;
    } else if (reached(acc + mass + w[pivot])) {
      return m + 1;
    } else {
      acc += mass + w[pivot];
      lo = m + 1;
    }
  }
  std::sort(a + lo, a + hi, before);
  for (size_t i = lo; i < hi; ++i) {
    acc += w[a[i]];
    if (reached(acc)) return i + 1;
  }
  return hi;
}

// The k best ids by logit (ties: lower id), returned in ascending id order. A heap of the k best seen so
// far costs one well-predicted comparison per token for small k.
void top_k_ids(const float* logits, int32_t vocab, int32_t k, std::vector<int32_t>& out) {
  auto better = [logits](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  out.clear();
  for (int32_t i = 0; i < k; ++i) out.push_back(i);
  std::make_heap(out.begin(), out.end(), better);  // front: the worst of the k kept
  for (int32_t i = k; i < vocab; ++i) {
    if (better(i, out.front())) {
      std::pop_heap(out.begin(), out.end(), better);
      out.back() = i;
      std::push_heap(out.begin(), out.end(), better);
    }
  }
  std::sort(out.begin(), out.end());  // canonical order, independent of the heap's layout
}

}  // namespace

int32_t Sampler::sample(float* logits, int32_t vocab, const std::vector<int32_t>& history) {
  if (vocab <= 0 || logits == nullptr) fail("sampler: empty logits (vocab ", vocab, ")");
  // NaN would break the orderings below; treat it as "impossible".
  for (int32_t i = 0; i < vocab; ++i) {
    if (std::isnan(logits[i])) logits[i] = -std::numeric_limits<float>::infinity();
  }

  // 0. Logit bias (ids past the vocabulary have no logit to move).
  for (const auto& [id, bias] : opts_.logit_bias)
    if (id < vocab) logits[id] += bias;

  // 1. Penalties over the window, once per distinct id (with its count).
  const bool additive = opts_.frequency_penalty != 0.0f || opts_.presence_penalty != 0.0f;
  if ((opts_.repeat_penalty != 1.0f || additive) && opts_.repeat_last_n != 0 && !history.empty()) {
    const size_t n = opts_.repeat_last_n < 0 ? history.size()
                                             : std::min(history.size(), static_cast<size_t>(opts_.repeat_last_n));
    std::vector<int32_t> recent(history.end() - static_cast<std::ptrdiff_t>(n), history.end());
    std::sort(recent.begin(), recent.end());
    for (size_t i = 0; i < recent.size();) {
      const int32_t id = recent[i];
      size_t j = i;
      while (j < recent.size() && recent[j] == id) ++j;
      const auto count = static_cast<float>(j - i);
      i = j;
      if (id < 0 || id >= vocab) continue;  // ids from another vocabulary cannot be penalised
      float& l = logits[id];
      if (opts_.repeat_penalty != 1.0f) l = l > 0.0f ? l / opts_.repeat_penalty : l * opts_.repeat_penalty;
      l -= count * opts_.frequency_penalty + opts_.presence_penalty;
    }
  }

  // 2. Greedy: no RNG draw.
  if (opts_.temperature == 0.0f) return argmax(logits, vocab);

  // 3. Temperature.
  if (opts_.temperature != 1.0f) {
    const float inv = 1.0f / opts_.temperature;
    for (int32_t i = 0; i < vocab; ++i) logits[i] *= inv;
  }

  // 4. Top-k on the logits. Candidates stay in ascending id order (sums below must not depend on the
  // standard library's algorithms).
  if (opts_.top_k > 0 && opts_.top_k < vocab) {
    top_k_ids(logits, vocab, opts_.top_k, idx_);
  } else {
    idx_.resize(vocab);
    for (int32_t i = 0; i < vocab; ++i) idx_[i] = i;
  }
  size_t n = idx_.size();

  // 5. Softmax over the candidates: prob_[id] holds exp(l - max) (max -> 1), z their sum.
  float m = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < n; ++i) m = std::max(m, logits[idx_[i]]);
  if (m == -std::numeric_limits<float>::infinity()) return idx_[0];  // all impossible: lowest candidate id
  prob_.resize(vocab);
  double z = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = idx_[i];
    const float l = logits[id];
    // An infinite max makes l - m NaN; the +inf entries share all the mass.
    const float e = std::isinf(m) ? (l == m ? 1.0f : 0.0f) : std::exp(l - m);
    prob_[id] = e;
    z += e;
  }
  const float* p = prob_.data();

  // 7. (applied first, equivalently) min-p: keep e >= min_p * e_max = min_p. Top-p and min-p both keep a
  // prefix of the sorted order, so the result is the shorter prefix either way; filtering first only
  // shrinks the search. Top-p still measures against z, the mass of all top-k candidates.
  if (opts_.min_p > 0.0f) {
    const float thr = opts_.min_p;
    // std::remove_if is stable: the ascending id order survives. The max (e == 1) always does.
    auto end = std::remove_if(idx_.begin(), idx_.begin() + static_cast<std::ptrdiff_t>(n),
                              [p, thr](int32_t id) { return !(p[id] >= thr); });
    n = static_cast<size_t>(end - idx_.begin());
  }

  // 6. Top-p: the smallest sorted prefix whose probability reaches p. top_p == 1 keeps everything
  // (rounding could otherwise end the prefix a few tokens early).
  if (opts_.top_p < 1.0f) n = weighted_prefix(idx_.data(), n, p, static_cast<double>(opts_.top_p) * z, false);

  // 8-9. Renormalise over the kept tokens and draw: the token where the cumulative distribution, walked in
  // sorted order, first exceeds u, i.e. where the kept mass before it and including it straddles u * mass.
  double kept_mass = 0.0;
  for (size_t i = 0; i < n; ++i) kept_mass += p[idx_[i]];
  const double u = rng_.uniform();
  // On rounding (u * mass never exceeded) this falls back to the last kept token in sorted order.
  const size_t c = weighted_prefix(idx_.data(), n, p, u * kept_mass, true);
  return idx_[c - 1];
}

const std::vector<DecodingPreset>& decoding_presets() {
  static const std::vector<DecodingPreset> p = {
      {"gsm8k", 0.0f, 1.0f, 0},      {"humaneval", 0.2f, 0.95f, 0}, {"mbpp", 0.01f, 0.95f, 0},
      {"squad", 0.01f, 0.95f, 0},    {"govreport", 0.0f, 1.0f, 450}, {"squality", 0.0f, 1.0f, 600},
  };
  return p;
}

const DecodingPreset& decoding_preset(const std::string& name) {
  std::string names;
  for (const DecodingPreset& d : decoding_presets()) {
    if (name == d.name) return d;
    names += (names.empty() ? "" : ", ") + std::string(d.name);
  }
  fail("--decoding: unknown preset '", name, "' (known: ", names, ")");
}

}  // namespace strata
