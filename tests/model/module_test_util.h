// Building one module directly with hand-set weights, running it on a packed
// batch, and a double-precision reference of differential attention (spec
// §2.3) written independently of the engine.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "model/ctx_reference.h"
#include "model/registry.h"

namespace strata::test {

using Weights = std::map<std::string, std::vector<float>>;

// A shape for differential attention and the module's options.
struct DiffConfig : Config {
  std::string diff_layout = "paper";
  bool diff_subln = true, diff_out_scale = true, diff_lambda_init_zero = false;
  nlohmann::json options() const {
    return {{"layout", diff_layout},
            {"subln", diff_subln},
            {"out_scale", diff_out_scale ? "one_minus_lambda_init" : "one"},
            {"lambda_init", diff_lambda_init_zero ? "zero" : "paper"}};
  }
  // The options of module `kind` (none for other kinds).
  nlohmann::json options(const std::string& kind) const {
    return kind == "diff-attn" ? options() : nlohmann::json::object();
  }
};

// Differential attention with c's options at `layer`.
inline std::unique_ptr<Module> make_diff(const DiffConfig& c, const std::string& prefix, int64_t layer = 0) {
  return make_module("diff-attn", c, prefix, c.options(), layer);
}

inline DiffConfig diff_config(const std::string& layout, int64_t heads, int64_t kv_heads, int64_t head_dim,
                              int64_t dim, bool subln, bool out_scale) {
  DiffConfig c;
  static_cast<Config&>(c) = llama_config(64, dim, 2 * dim, 1, heads, kv_heads, 64, false);
  c.head_dim = head_dim;
  c.rms_norm_eps = 1e-5;
  c.diff_layout = layout;
  c.diff_subln = subln;
  c.diff_out_scale = out_scale;
  return c;
}

// Every declared tensor: N(0, std²) for Normal declarations (their own std if
// they set one), the declared constant otherwise.
inline Weights random_weights(const Module& m, uint64_t seed, float std = 0.3f) {
  Weights w;
  Rng rng(seed);
  for (const ParamDecl& d : m.params()) {
    std::vector<float>& v = w[d.name];
    v.resize(static_cast<size_t>(shape_numel(d.shape)));
    for (float& x : v) {
      switch (d.init) {
        case Init::Normal: x = static_cast<float>(rng.normal()) * (d.init_std >= 0 ? d.init_std : std); break;
        case Init::Ones: x = 1.0f; break;
        case Init::Zeros: x = 0.0f; break;
        case Init::Constant: x = d.init_value; break;
        case Init::DiracLast: x = 0.0f; break;
        default: x = static_cast<float>(rng.normal()) * std; break;  // kinds these tests do not build
      }
    }
  }
  return w;
}

// A module of `kind` bound to `w` (shapes from its declarations); with
// gradients when `train`.
struct TestModule {
  std::unique_ptr<Module> m;
  std::map<std::string, Tensor> grads;
  Scratch scratch;
  Exec exec;
  bool training = false;

  TestModule(const std::string& kind, const DiffConfig& cfg, const std::string& prefix, const Weights& w,
             bool train = false, int64_t layer = 0)
      : TestModule(kind, static_cast<const Config&>(cfg), prefix, w, train, cfg.options(kind), layer) {}
  TestModule(const std::string& kind, const Config& cfg, const std::string& prefix, const Weights& w, bool train,
             const nlohmann::json& options, int64_t layer = 0)
      : exec(Exec::defaults()) {
    m = make_module(kind, cfg, prefix, options, layer);
    WeightSet ws;
    for (const ParamDecl& d : m->params()) {
      Tensor t = Tensor::alloc(DType::F32, d.shape);
      const std::vector<float>& v = w.at(d.name);
      EXPECT_EQ(static_cast<int64_t>(v.size()), t.numel()) << d.name;
      std::copy(v.begin(), v.end(), t.f32());
      ws.add(d.name, t, "<test>");
      if (train && d.trainable) grads[d.name] = Tensor::alloc(DType::F32, d.shape);
    }
    ParamBinder b(ws);
    m->bind(b);
    training = train;
    if (train) {
      GradBinder gb(grads);
      m->bind_grads(gb);
    }
  }
  // Full forward of sequences of the given lengths packed one after another
  // (a training forward when built with `train`).
  std::vector<float> forward(const std::vector<float>& x, const std::vector<int64_t>& lens) {
    Batch b = packed(lens);
    std::vector<float> y(static_cast<size_t>(b.rows * m->out_width()));
    Context ctx{exec, scratch, training};
    m->forward(x.data(), y.data(), b, nullptr, ctx);
    return y;
  }
  std::vector<float> backward(const std::vector<float>& dy, const std::vector<int64_t>& lens, int64_t in_width) {
    Batch b = packed(lens);
    std::vector<float> dx(static_cast<size_t>(b.rows * in_width));
    Context ctx{exec, scratch, true};
    m->backward(dy.data(), dx.data(), b, ctx);
    return dx;
  }
  Context context() { return Context{exec, scratch, training}; }
  static Batch packed(const std::vector<int64_t>& lens) {
    Batch b;
    for (int64_t n : lens) {
      b.seqs.push_back({b.rows, n, 0});
      b.rows += n;
    }
    return b;
  }
};

inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.normal()) * scale;
  return v;
}

// Differential attention in double precision, straight from the spec's
// formulas. naive_pairing: query sub-head m uses key sub-head m / n_rep (the
// reference's naive multihead_diffattn.py) instead of the flash pairing.
inline std::vector<double> diff_attention_reference(const DiffConfig& c, const std::string& prefix,
                                                    const std::map<std::string, std::vector<double>>& p,
                                                    const std::vector<double>& x, const std::vector<int64_t>& lens,
                                                    bool naive_pairing = false) {
  const bool paper = c.diff_layout == "paper";
  const int64_t D = c.hidden_size, d = c.head_dim;
  const int64_t H = paper ? c.num_attention_heads / 2 : c.num_attention_heads;
  const int64_t KV = paper ? c.num_key_value_heads / 2 : c.num_key_value_heads;
  const int64_t dv = paper ? 2 * d : d, rep = H / KV;
  auto W = [&](const std::string& n) -> const std::vector<double>& { return p.at(prefix + "." + n); };
  int64_t rows = 0;
  for (int64_t n : lens) rows += n;
  auto linear = [&](const std::vector<double>& in, int64_t K, const std::vector<double>& w, int64_t N) {
    std::vector<double> y(static_cast<size_t>(rows * N), 0.0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < N; ++j)
        for (int64_t k = 0; k < K; ++k) y[i * N + j] += in[i * K + k] * w[j * K + k];
    return y;
  };
  std::vector<double> q = linear(x, D, W("q_proj.weight"), 2 * H * d);
  std::vector<double> k = linear(x, D, W("k_proj.weight"), 2 * KV * d);
  std::vector<double> v = linear(x, D, W("v_proj.weight"), KV * dv);
  std::vector<int64_t> pos;
  for (int64_t n : lens)
    for (int64_t t = 0; t < n; ++t) pos.push_back(t);
  auto rope = [&](std::vector<double>& a, int64_t subheads) { ref_rope(a, subheads, d, pos, c.rope_theta); };
  rope(q, 2 * H);
  rope(k, 2 * KV);
  auto dotv = [&](const std::string& a, const std::string& b) {
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += W(a)[i] * W(b)[i];
    return s;
  };
  const double lambda_init = W("lambda_init")[0];
  const double lambda = std::exp(dotv("lambda_q1", "lambda_k1")) - std::exp(dotv("lambda_q2", "lambda_k2")) + lambda_init;
  const double scale = c.diff_out_scale ? 1.0 - lambda_init : 1.0;
  std::vector<double> heads(static_cast<size_t>(rows * H * dv), 0.0);
  int64_t row0 = 0;
  for (int64_t n : lens) {
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < n; ++t) {
        std::vector<double> a[2];
        for (int comp = 0; comp < 2; ++comp) {
          const int64_t m = 2 * h + comp, ks = naive_pairing ? m / rep : 2 * (h / rep) + comp;
          a[comp].resize(static_cast<size_t>(t + 1));
          double mx = -1e300, sum = 0;
          for (int64_t u = 0; u <= t; ++u) {
            double s = 0;
            for (int64_t i = 0; i < d; ++i) s += q[((row0 + t) * 2 * H + m) * d + i] * k[((row0 + u) * 2 * KV + ks) * d + i];
            a[comp][u] = s / std::sqrt(static_cast<double>(d));
            mx = std::max(mx, a[comp][u]);
          }
          for (double& e : a[comp]) sum += (e = std::exp(e - mx));
          for (double& e : a[comp]) e /= sum;
        }
        double* o = &heads[((row0 + t) * H + h) * dv];
        for (int64_t u = 0; u <= t; ++u)
          for (int64_t i = 0; i < dv; ++i) o[i] += (a[0][u] - lambda * a[1][u]) * v[((row0 + u) * KV + h / rep) * dv + i];
        double ss = 0;
        for (int64_t i = 0; i < dv; ++i) ss += o[i] * o[i];
        const double r = c.diff_subln ? 1.0 / std::sqrt(ss / dv + 1e-5) : 1.0;
        for (int64_t i = 0; i < dv; ++i) o[i] *= r * (c.diff_subln ? W("subln.weight")[i] : 1.0) * scale;
      }
    row0 += n;
  }
  return linear(heads, H * dv, W("o_proj.weight"), D);
}

}  // namespace strata::test
