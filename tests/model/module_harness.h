// Checks shared by the tests of single modules run outside a model: decode
// from states == full forward for every split, causality by perturbation,
// packed batch == each sequence alone, results independent of the thread
// count, and gradients vs central finite differences of a double reference.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "core/rng.h"
#include "core/weights.h"
#include "model/ctx_reference.h"
#include "model/module.h"
#include "model/registry.h"

namespace strata::test {

// The tiny shapes of the context-module tests: D=16, r_a=4, k=3, SE reduction 4.
inline CtxConfig ctx_test_config(const std::string& ctx_mode, int64_t D = 16) {
  CtxConfig c;
  c.hidden_size = D;
  c.ada_rank = 4;
  c.tm_kernel = 3;
  c.se_reduction = 4;
  c.ctx_mode = ctx_mode;
  c.rms_norm_eps = 1e-5;
  return c;
}

inline int64_t total_rows(const Lens& lens) {
  int64_t n = 0;
  for (int64_t l : lens) n += l;
  return n;
}

inline Batch packed_batch(const Lens& lens) {
  Batch b;
  for (int64_t l : lens) {
    b.seqs.push_back({b.rows, l, 0});
    b.rows += l;
  }
  return b;
}

inline std::vector<float> random_rows(int64_t rows, int64_t D, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(rows * D));
  for (float& x : v) x = static_cast<float>(rng.normal() * scale);
  return v;
}

inline void expect_bitwise(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_EQ(std::memcmp(&a[i], &b[i], sizeof(float)), 0) << what << " at " << i << ": " << a[i] << " vs " << b[i];
}

// One module with its own parameters.
class ModuleRig {
 public:
  // Parameters as Model::random makes them (the declared init), then
  // N(0, noise²) added to every entry when noise > 0. Matrices in `matrices`.
  // The module's options are the context options of `cfg`.
  ModuleRig(const std::string& kind, const CtxConfig& cfg, const std::string& prefix, uint64_t seed,
            double noise = 0.0, DType matrices = DType::F32)
      : module_(make_module(kind, cfg, prefix, cfg.options(kind))), width_(cfg.hidden_size) {
    Rng rng(seed);
    for (const ParamDecl& d : module_->params()) {
      Tensor t = Tensor::alloc(DType::F32, d.shape);
      const int64_t n = t.numel(), last = d.shape.back();
      const double std_dev = d.init_std >= 0 ? d.init_std : cfg.initializer_range;
      for (int64_t i = 0; i < n; ++i) {
        double v = 0;
        switch (d.init) {
          case Init::Normal: v = rng.normal() * std_dev; break;
          case Init::Ones: v = 1; break;
          case Init::Zeros: v = 0; break;
          case Init::Constant: v = d.init_value; break;
          case Init::DiracLast: v = (i + 1) % last == 0 ? 1 : 0; break;
          case Init::Uniform: v = (2.0 * rng.uniform_double() - 1.0) * d.init_value; break;
          case Init::Custom: v = d.fill(i, rng); break;
        }
        t.f32()[i] = static_cast<float>(v + (noise > 0 ? rng.normal() * noise : 0.0));
      }
      if (d.matrix && matrices != DType::F32) t = t.to(matrices);
      weights_.add(d.name, t, "<test>");
      grads_[d.name] = Tensor::alloc(DType::F32, d.shape);
    }
    rebind();
  }

  Module& module() { return *module_; }
  int64_t width() const { return width_; }
  // A parameter's values (F32 parameters only); call rebind() after changing BF16 ones.
  float* param(const std::string& name) { return weights_.tensors.at(name).f32(); }
  void rebind() {
    ParamBinder binder(weights_);
    module_->bind(binder);
    GradBinder gb(grads_);
    module_->bind_grads(gb);
  }
  DoubleParams double_params() const {
    DoubleParams p;
    for (const auto& [name, t] : weights_.tensors) {
      Tensor f = t.to(DType::F32);
      p[name] = std::vector<double>(f.f32(), f.f32() + f.numel());
    }
    return p;
  }
  const std::map<std::string, Tensor>& grads() const { return grads_; }

  // Fresh context, no states.
  std::vector<float> forward(const std::vector<float>& x, const Lens& lens, bool training = false) {
    std::vector<float> y(static_cast<size_t>(total_rows(lens) * width_));
    Context ctx = context(training);
    module_->forward(x.data(), y.data(), packed_batch(lens), nullptr, ctx);
    return y;
  }

  // Training forward and backward for output gradient dy: returns dx, and
  // the parameter gradients (zeroed first) are in grads().
  std::vector<float> backward(const std::vector<float>& x, const Lens& lens, const std::vector<float>& dy) {
    for (auto& [name, g] : grads_) std::fill(g.f32(), g.f32() + g.numel(), 0.0f);
    forward(x, lens, true);
    std::vector<float> dx(x.size());
    Context ctx = context(true);
    module_->backward(dy.data(), dx.data(), packed_batch(lens), ctx);
    return dx;
  }

  // Runs the sequences through decode states in calls: call i gives every
  // unfinished sequence the next schedule[i] rows (1 after the schedule
  // ends); calls of one row per sequence go through step(). Returns the
  // outputs in packed order.
  std::vector<float> run_with_states(const std::vector<float>& x, const Lens& lens, const Lens& schedule) {
    const int64_t D = width_;
    std::vector<std::unique_ptr<LayerState>> states;
    for (size_t s = 0; s < lens.size(); ++s) states.push_back(module_->make_state());
    std::vector<int64_t> done(lens.size(), 0), first(lens.size(), 0);
    for (size_t s = 1; s < lens.size(); ++s) first[s] = first[s - 1] + lens[s - 1];
    std::vector<float> y(x.size());
    for (size_t call = 0;; ++call) {
      const int64_t chunk = call < schedule.size() ? schedule[call] : 1;
      Batch b;
      std::vector<size_t> which;
      std::vector<LayerState*> st;
      std::vector<float> xin;
      for (size_t s = 0; s < lens.size(); ++s) {
        const int64_t n = std::min(chunk, lens[s] - done[s]);
        if (n <= 0) continue;
        b.seqs.push_back({b.rows, n, done[s]});
        b.rows += n;
        which.push_back(s);
        st.push_back(states[s].get());
        xin.insert(xin.end(), x.begin() + (first[s] + done[s]) * D, x.begin() + (first[s] + done[s] + n) * D);
      }
      if (b.seqs.empty()) {
        if (call >= schedule.size()) break;
        continue;
      }
      std::vector<float> yout(xin.size());
      const bool one_row_each = b.rows == static_cast<int64_t>(b.seqs.size());
      Context ctx = context(false);
      if (one_row_each) module_->step(xin.data(), yout.data(), b, st.data(), ctx);
      else module_->forward(xin.data(), yout.data(), b, st.data(), ctx);
      for (size_t i = 0; i < which.size(); ++i) {
        const size_t s = which[i];
        std::copy(yout.begin() + b.seqs[i].row * D, yout.begin() + (b.seqs[i].row + b.seqs[i].len) * D,
                  y.begin() + (first[s] + done[s]) * D);
        done[s] += b.seqs[i].len;
      }
    }
    return y;
  }

 private:
  // The process's current defaults (tests switch the ISA between runs).
  Context context(bool training) {
    exec_ = std::make_unique<Exec>(Exec::defaults());
    return Context{*exec_, scratch_, training};
  }

  std::unique_ptr<Module> module_;
  int64_t width_;
  WeightSet weights_;
  std::map<std::string, Tensor> grads_;
  Scratch scratch_;
  std::unique_ptr<Exec> exec_;
};

// Decode with states == full forward, bit for bit, for every split into a
// prefill and steps, and for several prefills in a row, with all sequences
// packed in one batch.
// tol > 0: within tol x the largest |output| instead (mixers whose prefill
// runs another form of the recurrence than decode, e.g. chunked vs recurrent).
inline void expect_decode_equals_full(ModuleRig& rig, const std::vector<float>& x, const Lens& lens, double tol = 0) {
  const std::vector<float> full = rig.forward(x, lens);
  double scale = 1.0;
  for (float v : full) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  auto expect = [&](const std::vector<float>& got, const std::string& what) {
    if (tol == 0) return expect_bitwise(got, full, what);
    ASSERT_EQ(got.size(), full.size()) << what;
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], full[i], tol * scale) << what << " at " << i;
  };
  const int64_t longest = *std::max_element(lens.begin(), lens.end());
  for (int64_t p = 0; p <= longest; ++p) expect(rig.run_with_states(x, lens, {p}), "prefill of " + std::to_string(p) + " then steps");
  for (const Lens& chunks : {Lens{1, 2, 3, 2, 5}, Lens{2, 2, 2, 2, 2, 2}, Lens{3, 1, 4, 1, 5}})
    expect(rig.run_with_states(x, lens, chunks), "several prefills");
}

// Changing row s of a sequence leaves every earlier row of it (and every other
// sequence) unchanged, and changes row s itself.
inline void expect_causal(ModuleRig& rig, const std::vector<float>& x, const Lens& lens) {
  const int64_t D = rig.width();
  const std::vector<float> base = rig.forward(x, lens);
  for (int64_t s = 0; s < lens[0]; ++s) {
    std::vector<float> xp = x;
    for (int64_t i = 0; i < D; ++i) xp[s * D + i] += 0.5f + 0.1f * static_cast<float>(i);
    const std::vector<float> y = rig.forward(xp, lens);
    for (int64_t t = 0; t < total_rows(lens); ++t) {
      if (t >= s && t < lens[0]) continue;
      for (int64_t i = 0; i < D; ++i)
        ASSERT_EQ(y[t * D + i], base[t * D + i]) << "row " << t << " changed when row " << s << " did";
    }
    EXPECT_NE(0, std::memcmp(&y[s * D], &base[s * D], D * sizeof(float))) << "row " << s << " ignores its input";
  }
}

// A packed batch gives each sequence exactly what it gets alone.
inline void expect_batch_equals_alone(ModuleRig& rig, const std::vector<float>& x, const Lens& lens) {
  const int64_t D = rig.width();
  const std::vector<float> all = rig.forward(x, lens);
  int64_t row0 = 0;
  for (int64_t len : lens) {
    std::vector<float> xs(x.begin() + row0 * D, x.begin() + (row0 + len) * D);
    std::vector<float> ys(all.begin() + row0 * D, all.begin() + (row0 + len) * D);
    expect_bitwise(rig.forward(xs, {len}), ys, "sequence at row " + std::to_string(row0) + " alone");
    row0 += len;
  }
}

// Forward outputs, dx and parameter gradients are the same bits for 1 and 2 threads.
inline void expect_thread_count_invariant(ModuleRig& rig, const std::vector<float>& x, const Lens& lens) {
  const std::vector<float> dy = random_rows(total_rows(lens), rig.width(), 99);
  std::vector<std::vector<float>> y, dx;
  std::vector<std::map<std::string, std::vector<float>>> grads;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    y.push_back(rig.forward(x, lens));
    dx.push_back(rig.backward(x, lens, dy));
    grads.emplace_back();
    for (const auto& [name, g] : rig.grads()) grads.back()[name] = std::vector<float>(g.f32(), g.f32() + g.numel());
  }
  set_num_threads(0);
  expect_bitwise(y[0], y[1], "forward");
  expect_bitwise(dx[0], dx[1], "dx");
  for (const auto& [name, g] : grads[0]) expect_bitwise(g, grads[1].at(name), name);
}

// A decode state of another shape (`foreign`, from another instance) is
// refused with an error naming `who` (the module's prefix).
inline void expect_foreign_state_refused(ModuleRig& rig, LayerState& foreign, const std::string& who) {
  Exec ex = Exec::defaults();
  Scratch scratch;
  Context ctx{ex, scratch, false};
  Batch batch;
  batch.seqs.push_back({0, 1, 0});
  batch.rows = 1;
  std::vector<float> x(static_cast<size_t>(rig.width()), 0.5f), y(x.size());
  LayerState* sp[1] = {&foreign};
  try {
    rig.module().forward(x.data(), y.data(), batch, sp, ctx);
    FAIL() << "a state of another shape was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(who), std::string::npos) << e.what();
  }
}

using ReferenceFn = std::function<Rows(const DoubleParams&, const Rows&, const Lens&)>;

// The module's forward against the double reference, then dx and every
// parameter gradient (every entry) against central differences of
// loss = Σ dy ⊙ reference(params, x).
inline void expect_gradients_match_reference(ModuleRig& rig, const std::vector<float>& x, const Lens& lens,
                                             const ReferenceFn& ref) {
  const std::vector<float> dy = random_rows(total_rows(lens), rig.width(), 77);
  DoubleParams p = rig.double_params();
  Rows xd(x.begin(), x.end());
  const Rows y_ref = ref(p, xd, lens);
  const std::vector<float> y = rig.forward(x, lens);
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y_ref[i], 1e-5 * (1 + std::fabs(y_ref[i]))) << "output " << i;

  const std::vector<float> dx = rig.backward(x, lens, dy);
  auto loss = [&](const DoubleParams& pp, const Rows& xx) {
    const Rows yy = ref(pp, xx, lens);
    double l = 0;
    for (size_t i = 0; i < yy.size(); ++i) l += dy[i] * yy[i];
    return l;
  };
  // Central differences; the float gradients match to ~1e-4 of the largest
  // gradient of the tensor (F32 rounding), a wrong formula is off by far more.
  auto check = [&](std::vector<double>& v, const float* g, const std::string& what) {
    const double h = 1e-6;
    std::vector<double> fd(v.size());
    double scale = 1e-3;
    for (size_t i = 0; i < v.size(); ++i) {
      const double saved = v[i];
      v[i] = saved + h;
      const double up = loss(p, xd);
      v[i] = saved - h;
      const double down = loss(p, xd);
      v[i] = saved;
      fd[i] = (up - down) / (2 * h);
      scale = std::max(scale, std::fabs(fd[i]));
    }
    for (size_t i = 0; i < v.size(); ++i)
      EXPECT_NEAR(g[i], fd[i], 1e-4 * scale) << what << "[" << i << "]";
  };
  check(xd, dx.data(), "dx");
  for (auto& [name, v] : p) check(v, rig.grads().at(name).f32(), name);
}

}  // namespace strata::test
