// Mamba (v1) mixer, the selective state-space layer of the Samba family
// (docs/samba.md). For each row h of a sequence:
//   [x; z] = W_in h                       x, z in R^E
//   u = SiLU(conv1d(x))                   causal depthwise, k_c taps
//   [δ; B; C] = W_x u                     δ in R^R, B, C in R^N
//   Δ = softplus(W_dt δ + b_dt)
//   s_t = exp(Δ A) ⊙ s_{t-1} + (Δ u) ⊗ B  A = -exp(A_log), state E x N (F32)
//   y = s_t C + D ⊙ u,   out = W_out (y ⊙ SiLU(z))
// Decode state per sequence: the last k_c-1 pre-conv x rows and the E x N
// scan state, constant in the sequence's length. Training keeps the scan
// state only at the start of every `scan_chunk` steps; backward recomputes
// the states inside each chunk (kernels/ssm.h).
#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/ops.h"
#include "model/modules/causal_conv.h"
#include "model/registry.h"
#include "strata/error.h"

namespace strata {
namespace {

constexpr int64_t kScanGroup = 64;       // channels per forward task
constexpr int64_t kScanGradGroup = 256;  // channels per backward task (fixed: the sums do not depend on threads)

struct MambaState final : StateOf<MambaState> {
  static constexpr const char* kKind = "mamba-state";
  int64_t E = 0, N = 0, taps = 0;
  std::vector<float> conv;  // [taps-1, E]: the last pre-conv x rows, oldest first
  std::vector<float> ssm;   // [N, E]: state-major scan state
  int64_t count = 0;        // rows seen
  std::string shape() const { return cat("E ", E, ", N ", N, ", conv taps ", taps); }
  int64_t bytes() const { return static_cast<int64_t>((conv.size() + ssm.size()) * sizeof(float) + sizeof(count)); }
  // The reference layouts: conv_state [E, taps-1] (oldest first), ssm_state [E, N].
  std::vector<std::pair<std::string, Tensor>> export_tensors() const override {
    Tensor c = Tensor::alloc(DType::F32, {E, taps - 1}), h = Tensor::alloc(DType::F32, {E, N});
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t j = 0; j < taps - 1; ++j) c.f32()[e * (taps - 1) + j] = conv[j * E + e];
      for (int64_t s = 0; s < N; ++s) h.f32()[e * N + s] = ssm[s * E + e];
    }
    return {{"conv_state", c}, {"ssm_state", h}};
  }
};

class Mamba final : public Module {
 public:
  Mamba(const ModuleSpec& spec, const Config& cfg)
      : Module(spec),
        d_(cfg.hidden_size),
        E_(opt_int(spec.options, "expand") * cfg.hidden_size),
        N_(opt_int(spec.options, "d_state")),
        K_(opt_int(spec.options, "d_conv")),
        R_(opt_int(spec.options, "dt_rank") > 0 ? opt_int(spec.options, "dt_rank") : (cfg.hidden_size + 15) / 16),
        chunk_(opt_int(spec.options, "scan_chunk")),
        conv_bias_(opt_bool(spec.options, "conv_bias")),
        conv_(E_, K_) {}

  std::vector<ParamDecl> params() const override {
    const std::string p = prefix() + ".";
    const Options& o = spec().options;
    const double dt_min = opt_float(o, "dt_min"), dt_max = opt_float(o, "dt_max");
    const double floor = opt_float(o, "dt_init_floor");
    const int64_t N = N_;
    std::vector<ParamDecl> r;
    r.push_back({p + "in_proj.weight", {2 * E_, d_}});
    // PyTorch's Conv1d default, U(±1/sqrt(fan_in)), fan_in = k_c for a depthwise conv.
    const float conv_bound = 1.0f / std::sqrt(static_cast<float>(K_));
    r.push_back({p + "conv1d.weight", {E_, 1, K_}, Init::Uniform, false, -1.0f, conv_bound});
    if (conv_bias_) r.push_back({p + "conv1d.bias", {E_}, Init::Uniform, false, -1.0f, conv_bound});
    r.push_back({p + "x_proj.weight", {R_ + 2 * N_, E_}});
    const float dt_bound = static_cast<float>(opt_float(o, "dt_scale") / std::sqrt(static_cast<double>(R_)));
    r.push_back({p + "dt_proj.weight", {E_, R_}, Init::Uniform, true, -1.0f, dt_bound});
    // softplus(bias) log-uniform in [dt_min, dt_max] (floored): bias = softplus⁻¹(τ) = τ + ln(-expm1(-τ)).
    ParamDecl bias{p + "dt_proj.bias", {E_}, Init::Custom, false};
    bias.fill = [dt_min, dt_max, floor](int64_t, Rng& rng) {
      const double lo = std::log(dt_min), hi = std::log(dt_max);
      const double tau = std::max(std::exp(rng.uniform_double() * (hi - lo) + lo), floor);
      return static_cast<float>(tau + std::log(-std::expm1(-tau)));
    };
    r.push_back(std::move(bias));
    ParamDecl a_log{p + "A_log", {E_, N_}, Init::Custom, false};  // S4D-real: A[e, n] = -(n + 1)
    a_log.fill = [N](int64_t i, Rng&) { return static_cast<float>(std::log(static_cast<double>(i % N + 1))); };
    r.push_back(std::move(a_log));
    r.push_back({p + "D", {E_}, Init::Ones, false});
    r.push_back(residual_out({p + "out_proj.weight", {d_, E_}}));
    return r;
  }

  void bind(ParamBinder& b) override {
    const std::vector<ParamDecl> p = params();
    size_t i = 0;
    in_proj_ = b.get(p[i++]);
    conv_w_ = b.get(p[i++]);
    if (conv_bias_) conv_b_ = b.get(p[i++]);
    x_proj_ = b.get(p[i++]);
    dt_w_ = b.get(p[i++]);
    dt_b_ = b.get(p[i++]);
    a_log_ = b.get(p[i++]);
    D_ = b.get(p[i++]);
    out_proj_ = b.get(p[i++]);
    zero_bias_.assign(static_cast<size_t>(E_), 0.0f);
  }
  int64_t out_width() const override { return d_; }

  std::unique_ptr<LayerState> make_state() const override {
    auto s = std::make_unique<MambaState>();
    s->E = E_, s->N = N_, s->taps = K_;
    s->conv = conv_.zero_window();
    s->ssm.assign(static_cast<size_t>(N_ * E_), 0.0f);
    return s;
  }
  StateSize state_size() const override {
    return {static_cast<int64_t>(((K_ - 1) * E_ + N_ * E_) * sizeof(float) + sizeof(int64_t)), 0, 0};
  }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const* states, Context& ctx) override {
    const int64_t rows = batch.rows, E = E_, XW = R_ + 2 * N_;
    const bool train = ctx.training;
    if (train && states) fail(kind(), " ", prefix(), ": training forward runs without decode states");
    const size_t n_seq = batch.seqs.size();
    std::vector<MambaState*> st(n_seq, nullptr);
    std::vector<const float*> windows(n_seq, nullptr);
    for (size_t s = 0; s < n_seq && states; ++s) {
      st[s] = &state_of<MambaState>(states[s]);
      if (st[s]->E != E_ || st[s]->N != N_ || st[s]->taps != K_)
        fail(prefix(), ": sequence ", s, " has a mamba state of shape (", st[s]->shape(), "), this layer keeps E ", E_,
             ", N ", N_, ", conv taps ", K_);
      if (st[s]->count != batch.seqs[s].pos)
        fail(prefix(), ": state holds ", st[s]->count, " positions but the batch starts at ", batch.seqs[s].pos);
      windows[s] = st[s]->conv.data();
    }
    const kernels::Table& kt = ctx.kt();
    float* xz = ctx.scratch.floats(0, static_cast<size_t>(rows * 2 * E));
    float* u = ctx.scratch.floats(1, static_cast<size_t>(rows * E));
    float* xdbl = ctx.scratch.floats(2, static_cast<size_t>(rows * XW));
    float* dlow = ctx.scratch.floats(3, static_cast<size_t>(rows * R_));
    float* delta = ctx.scratch.floats(4, static_cast<size_t>(rows * E));
    float* ys = ctx.scratch.floats(5, static_cast<size_t>(rows * E));
    linear(ctx, x, rows, in_proj_, xz);
    const float* cb = conv_bias_ ? conv_b_.f32() : zero_bias_.data();
    if (train) {  // keep the pre-SiLU convolution for backward
      saved_c_.resize(static_cast<size_t>(rows * E));
      conv_.forward(kt, conv_w_.f32(), cb, xz, 2 * E, saved_c_.data(), E, batch, nullptr, false);
      parallel_for(rows, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) silu_rows(kt, saved_c_.data() + r * E, u + r * E, E);
      });
    } else {
      conv_.forward(kt, conv_w_.f32(), cb, xz, 2 * E, u, E, batch, windows.data(), true);
    }
    linear(ctx, u, rows, x_proj_, xdbl);
    for (int64_t r = 0; r < rows; ++r) std::copy(xdbl + r * XW, xdbl + r * XW + R_, dlow + r * R_);
    linear(ctx, dlow, rows, dt_w_, delta);
    if (train) saved_delta_pre_.assign(delta, delta + rows * E);  // W_dt δ, before the bias
    parallel_for(rows, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) kt.softplus_bias(delta + r * E, dt_b_.f32(), E);
    });
    refresh_a();
    // The scan: per (sequence, group of channels), from each sequence's state
    // (or zeros); training keeps the state at the start of every chunk.
    const int64_t groups = (E + kScanGroup - 1) / kScanGroup;
    std::vector<float> fresh;
    std::vector<float*> h(n_seq);
    if (!states) fresh.assign(n_seq * static_cast<size_t>(N_ * E), 0.0f);
    for (size_t s = 0; s < n_seq; ++s) h[s] = states ? st[s]->ssm.data() : fresh.data() + s * N_ * E;
    if (train) {
      chunk_start_.assign(n_seq, 0);
      size_t total = 0;
      for (size_t s = 0; s < n_seq; ++s) {
        chunk_start_[s] = total;
        total += static_cast<size_t>(chunks_of(batch.seqs[s].len) * N_ * E);
      }
      saved_h_.resize(total);
    }
    parallel_for(static_cast<int64_t>(n_seq) * groups, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t task = lo; task < hi; ++task) {
        const size_t s = static_cast<size_t>(task / groups);
        const int64_t e0 = task % groups * kScanGroup, n = std::min(kScanGroup, E - e0);
        const SeqSpan& sp = batch.seqs[s];
        const int64_t step = train ? chunk_ : std::max<int64_t>(sp.len, 1);
        for (int64_t t0 = 0, c = 0; t0 < sp.len; t0 += step, ++c) {
          if (train) save_state(h[s], saved_h_.data() + chunk_start_[s] + c * N_ * E, e0, n);
          kernels::ScanArgs a = scan_args(sp.row + t0, std::min(step, sp.len - t0), e0, n, u, delta, xdbl);
          a.h = h[s] + e0;
          a.y = ys + (sp.row + t0) * E + e0;
          a.ld_y = E;
          kt.scan_forward(a);
        }
      }
    });
    for (size_t s = 0; s < n_seq && states; ++s) {
      conv_.advance(st[s]->conv.data(), xz, 2 * E, batch.seqs[s]);
      st[s]->count += batch.seqs[s].len;
    }
    float* gated = ctx.scratch.floats(6, static_cast<size_t>(rows * E));
    parallel_for(rows, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) kt.silu_mul(xz + r * 2 * E + E, ys + r * E, gated + r * E, E);
    });
    if (train) {
      saved_x_.assign(x, x + rows * d_);
      saved_xz_.assign(xz, xz + rows * 2 * E);
      saved_u_.assign(u, u + rows * E);
      saved_xdbl_.assign(xdbl, xdbl + rows * XW);
      saved_delta_.assign(delta, delta + rows * E);
      saved_y_.assign(ys, ys + rows * E);
    }
    linear(ctx, gated, rows, out_proj_, y);
  }

  void free_saved() override {
    release(saved_x_, saved_xz_, saved_c_, saved_u_, saved_xdbl_, saved_delta_pre_, saved_delta_, saved_y_, saved_h_);
  }
  void bind_grads(GradBinder& gb) override {
    const std::string p = prefix() + ".";
    d_in_proj_ = gb.get(p + "in_proj.weight");
    d_conv_w_ = gb.get(p + "conv1d.weight");
    d_conv_b_ = conv_bias_ ? gb.get(p + "conv1d.bias") : nullptr;
    d_x_proj_ = gb.get(p + "x_proj.weight");
    d_dt_w_ = gb.get(p + "dt_proj.weight");
    d_dt_b_ = gb.get(p + "dt_proj.bias");
    d_a_log_ = gb.get(p + "A_log");
    d_D_ = gb.get(p + "D");
    d_out_proj_ = gb.get(p + "out_proj.weight");
  }

  void backward(const float* dy, float* dx, const Batch& batch, Context& ctx) override {
    const int64_t rows = batch.rows, E = E_, XW = R_ + 2 * N_;
    const Exec& ex = ctx.exec;
    const kernels::Table& kt = ctx.kt();
    float* dys = ctx.scratch.floats(0, static_cast<size_t>(rows * E));  // d(gated), then dL/dy
    float* gated = ctx.scratch.floats(1, static_cast<size_t>(rows * E));
    float* dxz = ctx.scratch.floats(2, static_cast<size_t>(rows * 2 * E));
    float* du = ctx.scratch.floats(3, static_cast<size_t>(rows * E));
    float* ddelta = ctx.scratch.floats(4, static_cast<size_t>(rows * E));
    float* dxdbl = ctx.scratch.floats(5, static_cast<size_t>(rows * XW));
    float* dlow = ctx.scratch.floats(6, static_cast<size_t>(rows * R_));
    const float* xz = saved_xz_.data();
    const float* ys = saved_y_.data();
    // out = W_out (y ⊙ SiLU(z))
    ops::matmul_nn(ex, dy, rows, d_, out_proj_.f32(), E, dys);
    parallel_for(rows, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) kt.silu_mul(xz + r * 2 * E + E, ys + r * E, gated + r * E, E);
    });
    ops::matmul_tn_acc(ex, dy, rows, d_, gated, E, d_out_proj_);
    parallel_for(rows, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r)
        kt.silu_mul_backward(xz + r * 2 * E + E, ys + r * E, dys + r * E, dxz + r * 2 * E + E, E);
    });
    scan_backward(kt, batch, dys, du, ddelta, dxdbl);
    // Δ = softplus(pre): d(pre) = dΔ · σ(pre); pre = W_dt δ + b_dt.
    const float* b_dt = dt_b_.f32();
    parallel_for(rows, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r)
        for (int64_t e = 0; e < E; ++e)
          ddelta[r * E + e] *= 1.0f / (1.0f + std::exp(-(saved_delta_pre_[r * E + e] + b_dt[e])));
    });
    parallel_for(E, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t e = lo; e < hi; ++e) d_dt_b_[e] += ddelta[r * E + e];
    });
    const float* xdbl = saved_xdbl_.data();
    for (int64_t r = 0; r < rows; ++r) std::copy(xdbl + r * XW, xdbl + r * XW + R_, dlow + r * R_);
    ops::matmul_tn_acc(ex, ddelta, rows, E, dlow, R_, d_dt_w_);
    ops::matmul_nn(ex, ddelta, rows, E, dt_w_.f32(), R_, dlow);
    for (int64_t r = 0; r < rows; ++r) std::copy(dlow + r * R_, dlow + (r + 1) * R_, dxdbl + r * XW);
    // [δ; B; C] = W_x u
    ops::matmul_tn_acc(ex, dxdbl, rows, XW, saved_u_.data(), E, d_x_proj_);
    ops::gemm(ex, rows, E, XW, {dxdbl, XW, 1}, {x_proj_.f32(), E, 1}, du, E, true);
    // u = SiLU(c): dc = du · σ(c)(1 + c(1 - σ(c)))
    const float* c = saved_c_.data();
    parallel_for(rows, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo * E; i < hi * E; ++i) {
        const float sg = 1.0f / (1.0f + std::exp(-c[i]));
        du[i] *= sg * (1.0f + c[i] * (1.0f - sg));
      }
    });
    dummy_bias_grad_.assign(static_cast<size_t>(E), 0.0f);
    conv_.backward(conv_w_.f32(), du, E, xz, 2 * E, dxz, 2 * E, d_conv_w_,
                   d_conv_b_ ? d_conv_b_ : dummy_bias_grad_.data(), batch);
    // [x; z] = W_in h
    ops::matmul_tn_acc(ex, dxz, rows, 2 * E, saved_x_.data(), d_, d_in_proj_);
    ops::matmul_nn(ex, dxz, rows, 2 * E, in_proj_.f32(), d_, dx);
  }

 private:
  int64_t chunks_of(int64_t len) const { return (len + chunk_ - 1) / chunk_; }

  static void silu_rows(const kernels::Table& kt, const float* c, float* u, int64_t n) {
    static const std::vector<float> ones(4096, 1.0f);
    for (int64_t i = 0; i < n; i += 4096) kt.silu_mul(c + i, ones.data(), u + i, std::min<int64_t>(4096, n - i));
  }

  // A = -exp(A_log), state-major [N, E] for the kernels; recomputed only
  // when A_log changed (training updates it), not on every decode step.
  void refresh_a() {
    const float* al = a_log_.f32();
    const size_t n = static_cast<size_t>(N_ * E_);
    if (a_log_seen_.size() == n && std::equal(al, al + n, a_log_seen_.begin())) return;
    a_log_seen_.assign(al, al + n);
    a_t_.resize(n);
    for (int64_t e = 0; e < E_; ++e)
      for (int64_t s = 0; s < N_; ++s) a_t_[s * E_ + e] = -std::exp(al[e * N_ + s]);
  }

  void save_state(const float* h, float* dst, int64_t e0, int64_t n) const {
    for (int64_t s = 0; s < N_; ++s) std::copy(h + s * E_ + e0, h + s * E_ + e0 + n, dst + s * E_ + e0);
  }

  // The forward operands of rows [row, row + T) and channels [e0, e0 + n).
  kernels::ScanArgs scan_args(int64_t row, int64_t T, int64_t e0, int64_t n, const float* u, const float* delta,
                              const float* xdbl) const {
    const int64_t E = E_, XW = R_ + 2 * N_;
    kernels::ScanArgs a;
    a.T = T, a.n = n, a.N = N_;
    a.u = u + row * E + e0, a.ld_u = E;
    a.delta = delta + row * E + e0, a.ld_delta = E;
    a.B = xdbl + row * XW + R_, a.C = xdbl + row * XW + R_ + N_, a.ld_bc = XW;
    a.A = a_t_.data() + e0, a.ld_a = E;
    a.D = D_.f32() + e0;
    a.ld_h = E;
    return a;
  }

  // The scan's backward: each sequence's chunks in reverse from the saved
  // chunk states, per fixed group of channels; dB and dC are summed over the
  // groups in order afterwards, so the result does not depend on threads.
  void scan_backward(const kernels::Table& kt, const Batch& batch, const float* dys, float* du, float* ddelta,
                     float* dxdbl) {
    const int64_t E = E_, N = N_, XW = R_ + 2 * N_;
    const int64_t groups = (E + kScanGradGroup - 1) / kScanGradGroup;
    std::vector<float> dA(static_cast<size_t>(groups * N * E), 0.0f), dD(static_cast<size_t>(E), 0.0f);
    std::fill(dxdbl, dxdbl + batch.rows * XW, 0.0f);
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const SeqSpan& sp = batch.seqs[s];
      std::vector<float> part(static_cast<size_t>(groups * sp.len * 2 * N), 0.0f);  // [group][t][dB | dC]
      parallel_for(groups, 1, [&](int64_t lo, int64_t hi) {
        std::vector<float> carry(static_cast<size_t>(N * kScanGradGroup));
        std::vector<float> work(static_cast<size_t>(kernels::scan_backward_work(chunk_, N)));
        for (int64_t grp = lo; grp < hi; ++grp) {
          const int64_t e0 = grp * kScanGradGroup, n = std::min(kScanGradGroup, E - e0);
          std::fill(carry.begin(), carry.end(), 0.0f);
          float* pb = part.data() + grp * sp.len * 2 * N;
          for (int64_t c = chunks_of(sp.len) - 1; c >= 0; --c) {
            const int64_t t0 = c * chunk_, T = std::min(chunk_, sp.len - t0);
            kernels::ScanGradArgs g;
            g.f = scan_args(sp.row + t0, T, e0, n, saved_u_.data(), saved_delta_.data(), saved_xdbl_.data());
            g.f.h = saved_h_.data() + chunk_start_[s] + c * N * E + e0;
            g.dy = dys + (sp.row + t0) * E + e0, g.ld_dy = E;
            g.g = carry.data(), g.ld_g = kScanGradGroup;
            g.du = du + (sp.row + t0) * E + e0, g.ld_du = E;
            g.ddelta = ddelta + (sp.row + t0) * E + e0, g.ld_ddelta = E;
            g.dA = dA.data() + grp * N * E + e0, g.ld_dA = E;
            g.dD = dD.data() + e0;
            g.dB = pb + t0 * 2 * N, g.dC = pb + t0 * 2 * N + N, g.ld_dbc = 2 * N;
            g.work = work.data();
            kt.scan_backward(g);
          }
        }
      });
      for (int64_t grp = 0; grp < groups; ++grp)
        for (int64_t t = 0; t < sp.len; ++t) {
          const float* src = part.data() + (grp * sp.len + t) * 2 * N;
          float* dst = dxdbl + (sp.row + t) * XW + R_;
          for (int64_t i = 0; i < 2 * N; ++i) dst[i] += src[i];
        }
    }
    // dA_log = dA ⊙ A (A = -exp(A_log)); groups own disjoint channels.
    for (int64_t e = 0; e < E; ++e) {
      d_D_[e] += dD[e];
      const int64_t grp = e / kScanGradGroup;
      for (int64_t s = 0; s < N; ++s) d_a_log_[e * N + s] += dA[grp * N * E + s * E + e] * a_t_[s * E + e];
    }
  }

  int64_t d_, E_, N_, K_, R_, chunk_;
  bool conv_bias_;
  CausalConv conv_;
  Tensor in_proj_, conv_w_, conv_b_, x_proj_, dt_w_, dt_b_, a_log_, D_, out_proj_;
  float *d_in_proj_ = nullptr, *d_conv_w_ = nullptr, *d_conv_b_ = nullptr, *d_x_proj_ = nullptr, *d_dt_w_ = nullptr,
        *d_dt_b_ = nullptr, *d_a_log_ = nullptr, *d_D_ = nullptr, *d_out_proj_ = nullptr;
  std::vector<float> zero_bias_, dummy_bias_grad_, a_t_, a_log_seen_;
  // Training: what backward reads.
  std::vector<float> saved_x_, saved_xz_, saved_c_, saved_u_, saved_xdbl_, saved_delta_pre_, saved_delta_, saved_y_;
  std::vector<float> saved_h_;          // scan state at every chunk start, [N, E] each
  std::vector<size_t> chunk_start_;     // per sequence: its first chunk's offset in saved_h_
};

void check_mamba(const Options& o, const Config&, const FieldName& field) {
  if (opt_float(o, "dt_min") > opt_float(o, "dt_max")) fail(field("dt_min"), " must not exceed dt_max");
}

}  // namespace

ModuleType mamba_module() {
  return ModuleType{
      .kind = "mamba",
      .name = "mamba",
      .summary = "Mamba selective state-space mixer (conv1d, input-dependent scan, SiLU gate)",
      .options =
          {
              int_option("d_state", 16, 1, kernels::kScanMaxState, "scan state size N per channel"),
              int_option("d_conv", 4, 1, kernels::kConvMaxTaps, "taps of the causal depthwise convolution"),
              int_option("expand", 2, 1, 16, "inner width E = expand x hidden_size"),
              int_option("dt_rank", 0, 0, int64_t{1} << 16, "rank of the Δ projection (0: ceil(hidden_size / 16))"),
              float_option("dt_min", 1e-3, 1e-8, 10.0, "init: smallest softplus(dt_proj.bias)"),
              float_option("dt_max", 0.1, 1e-8, 10.0, "init: largest softplus(dt_proj.bias)"),
              float_option("dt_init_floor", 1e-4, 0.0, 10.0, "init: floor of the sampled Δ"),
              float_option("dt_scale", 1.0, 0.0, 100.0, "init: dt_proj.weight ~ U(±dt_scale / sqrt(dt_rank))"),
              bool_option("conv_bias", true, "the convolution has a bias"),
              int_option("scan_chunk", 64, 1, int64_t{1} << 20,
                         "training: scan steps between saved states (backward recomputes inside a chunk; "
                         "any value gives the same numbers)"),
          },
      .make = make_as<Mamba>,
      .check = check_mamba,
  };
}

}  // namespace strata
