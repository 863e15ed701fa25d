#include "model/modules/linear_attention_mixer.h"

#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "strata/error.h"

namespace strata {

std::vector<std::pair<std::string, Tensor>> LinAttnState::export_tensors() const {
  Tensor t = Tensor::alloc(DType::F32, {H, dk, dv});
  std::copy(S.begin(), S.end(), t.f32());
  return {{"state", t}};
}

std::vector<OptionDecl> linattn_options(const std::string& heads_help, double expand_k, double expand_v,
                                        std::vector<OptionDecl> own) {
  std::vector<OptionDecl> r = {
      int_option("num_heads", 0, 0, int64_t{1} << 16, "heads (0: " + heads_help + ")"),
      float_option("expand_k", expand_k, 1e-3, 64.0, "key width = expand_k x hidden_size"),
      float_option("expand_v", expand_v, 1e-3, 64.0, "value width = expand_v x hidden_size"),
  };
  for (OptionDecl& d : own) r.push_back(std::move(d));
  r.push_back(float_option("norm_eps", 1e-5, 0.0, 1.0, "epsilon of the per-head output RMSNorm"));
  r.push_back(int_option("chunk", 64, 1, 4096,
                         "rows per chunk of the chunked form (training, prefill); any value gives the same maths"));
  return r;
}

LinAttnShape linattn_shape(const Options& o, const Config& cfg, int64_t default_heads) {
  LinAttnShape s;
  s.d = cfg.hidden_size;
  s.H = opt_int(o, "num_heads") > 0 ? opt_int(o, "num_heads") : std::max<int64_t>(1, default_heads);
  s.Kd = static_cast<int64_t>(static_cast<double>(s.d) * opt_float(o, "expand_k"));
  s.Vd = static_cast<int64_t>(static_cast<double>(s.d) * opt_float(o, "expand_v"));
  s.eps = opt_float(o, "norm_eps");
  s.chunk = opt_int(o, "chunk");
  return s;
}

void check_linattn_shape(const LinAttnShape& s, const FieldName& field, bool pairs_of_keys) {
  const int64_t key_unit = pairs_of_keys ? 2 * s.H : s.H;
  if (s.Kd < key_unit || s.Kd % key_unit != 0)
    fail(field("expand_k"), ": key width ", s.Kd, " (of hidden_size ", s.d, ") does not split into ", s.H, " heads",
         pairs_of_keys ? " of an even width (RoPE rotates pairs)" : "");
  if (s.Vd < s.H || s.Vd % s.H != 0)
    fail(field("expand_v"), ": value width ", s.Vd, " (of hidden_size ", s.d, ") does not split into ", s.H, " heads");
}

LinearAttentionMixer::LinearAttentionMixer(const ModuleSpec& spec, const Config& cfg, LinAttnShape shape)
    : Module(spec), sh_(shape), init_scheme_(cfg.init_scheme) {
  if (sh_.H < 1 || sh_.Kd % sh_.H != 0 || sh_.Vd % sh_.H != 0 || sh_.Kd < 1 || sh_.Vd < 1)
    fail(spec.kind, " ", spec.prefix, ": key width ", sh_.Kd, " and value width ", sh_.Vd,
         " must be positive multiples of the ", sh_.H, " heads");
  sh_.dk = sh_.Kd / sh_.H;
  sh_.dv = sh_.Vd / sh_.H;
  layers_ = std::max<int64_t>(1, cfg.num_hidden_layers);
  if (spec.layer < static_cast<int64_t>(cfg.num_hidden_layers) && !cfg.layers.unit.empty())
    n_res_ = std::max<int64_t>(1, static_cast<int64_t>(cfg.layers.layer(spec.layer).size()));
}

ParamDecl LinearAttentionMixer::weight(const std::string& name, int64_t out, int64_t in, bool residual) const {
  ParamDecl d{prefix() + "." + name, {out, in}};
  d.residual_out = residual;
  if (init_scheme_ == "mamba") {
    double bound = std::pow(2.0, -2.5) * std::sqrt(6.0 / static_cast<double>(in + out));
    if (residual) bound /= std::sqrt(static_cast<double>(n_res_ * layers_));
    d.init = Init::Uniform;
    d.init_value = static_cast<float>(bound);
  }
  return d;
}

std::vector<ParamDecl> LinearAttentionMixer::params() const {
  std::vector<ParamDecl> r = {weight("q_proj.weight", sh_.Kd, sh_.d, false), weight("k_proj.weight", sh_.Kd, sh_.d, false),
                              weight("v_proj.weight", sh_.Vd, sh_.d, false), weight("g_proj.weight", sh_.Vd, sh_.d, false)};
  for (ParamDecl& d : gate_params()) r.push_back(std::move(d));
  r.push_back(weight("o_proj.weight", sh_.d, sh_.Vd, true));
  r.push_back({prefix() + ".g_norm_swish_gate.weight", {sh_.dv}, Init::Ones, false});
  return r;
}

void LinearAttentionMixer::bind(ParamBinder& b) {
  const std::vector<ParamDecl> p = params();
  wq_ = b.get(p[0]);
  wk_ = b.get(p[1]);
  wv_ = b.get(p[2]);
  wg_ = b.get(p[3]);
  const size_t extra = p.size() - 6;
  bind_gate(b, std::vector<ParamDecl>(p.begin() + 4, p.begin() + 4 + static_cast<std::ptrdiff_t>(extra)));
  wo_ = b.get(p[4 + extra]);
  norm_ = b.get(p[5 + extra]);
}

void LinearAttentionMixer::bind_grads(GradBinder& g) {
  const std::string p = prefix() + ".";
  dwq_ = g.get(p + "q_proj.weight");
  dwk_ = g.get(p + "k_proj.weight");
  dwv_ = g.get(p + "v_proj.weight");
  dwg_ = g.get(p + "g_proj.weight");
  bind_gate_grads(g);
  dwo_ = g.get(p + "o_proj.weight");
  dnorm_ = g.get(p + "g_norm_swish_gate.weight");
}

std::unique_ptr<LayerState> LinearAttentionMixer::make_state() const {
  auto s = std::make_unique<LinAttnState>();
  s->H = sh_.H, s->dk = sh_.dk, s->dv = sh_.dv;
  s->S.assign(static_cast<size_t>(sh_.H * sh_.dk * sh_.dv), 0.0f);
  return s;
}

StateSize LinearAttentionMixer::state_size() const {
  return {static_cast<int64_t>(sh_.H * sh_.dk * sh_.dv * sizeof(float) + sizeof(int64_t)), 0, 0};
}

ops::LinAttnHead LinearAttentionMixer::head_args(const Batch& batch, size_t s, int64_t h, const float* q,
                                                 const float* k, const float* v, const float* g, float* o,
                                                 float* S) const {
  const SeqSpan& sp = batch.seqs[s];
  const int64_t Kd = sh_.Kd, Vd = sh_.Vd, dk = sh_.dk, dv = sh_.dv;
  ops::LinAttnHead a;
  a.T = sp.len, a.dk = dk, a.dv = dv;
  a.q = q + sp.row * Kd + h * dk, a.ld_q = Kd;
  a.k = k + sp.row * Kd + h * dk, a.ld_k = Kd;
  a.v = v + sp.row * Vd + h * dv, a.ld_v = Vd;
  a.scalar_gate = scalar_gate();
  if (a.scalar_gate) {
    a.g = head_gate(h), a.ld_g = 0;
  } else {
    a.g = g + sp.row * Kd + h * dk, a.ld_g = Kd;
  }
  a.scale = 1.0f / std::sqrt(static_cast<float>(dk));
  a.o = o + sp.row * Vd + h * dv, a.ld_o = Vd;
  a.S = S;
  a.pos = sp.pos;
  a.chunk = sh_.chunk;
  return a;
}

void LinearAttentionMixer::run_heads(const Context& ctx, const Batch& batch, LinAttnState* const* st, const float* q,
                                     const float* k, const float* v, const float* g, float* o, bool save) {
  const int64_t H = sh_.H, SS = sh_.dk * sh_.dv;
  const size_t n_seq = batch.seqs.size();
  std::vector<float> fresh;
  if (!st) fresh.assign(n_seq * static_cast<size_t>(H * SS), 0.0f);
  if (save) {
    state_start_.assign(n_seq * static_cast<size_t>(H), 0);
    size_t total = 0;
    for (size_t s = 0; s < n_seq; ++s)
      for (int64_t h = 0; h < H; ++h) {
        state_start_[s * H + h] = total;
        total += static_cast<size_t>(ops::linattn_chunks(batch.seqs[s].len, batch.seqs[s].pos, sh_.chunk) * SS);
      }
    saved_states_.resize(total);
  }
  parallel_for(static_cast<int64_t>(n_seq) * H, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const size_t s = static_cast<size_t>(task / H);
      const int64_t h = task % H;
      float* S = (st ? st[s]->S.data() : fresh.data() + s * H * SS) + h * SS;
      const ops::LinAttnHead a = head_args(batch, s, h, q, k, v, g, o, S);
      if (a.T == 0) continue;
      if (st && a.T == 1) ops::linattn_step(ctx.kt(), a);  // decoding: the recurrent form
      else ops::linattn_forward(ctx.exec, a, save ? saved_states_.data() + state_start_[task] : nullptr);
    }
  });
}

void LinearAttentionMixer::output_gate(const kernels::Table& kt, const float* o, const float* gate, int64_t rows,
                                       float* gated, float* normed) const {
  const int64_t dv = sh_.dv, heads = rows * sh_.H;
  parallel_for(heads, 16, [&](int64_t lo, int64_t hi) {
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(dv));
    for (int64_t i = lo; i < hi; ++i) {
      float* nr = normed ? normed + i * dv : buf.data();
      kt.rmsnorm(o + i * dv, norm_.f32(), nr, dv, static_cast<float>(sh_.eps));
      kt.silu_mul(gate + i * dv, nr, gated + i * dv, dv);
    }
  });
}

void LinearAttentionMixer::forward(const float* x, float* y, const Batch& batch, LayerState* const* states,
                                   Context& ctx) {
  const bool train = ctx.training;
  if (train && states) fail(kind(), " ", prefix(), ": training forward runs without decode states");
  const int64_t rows = batch.rows, Kd = sh_.Kd, Vd = sh_.Vd;
  const size_t n_seq = batch.seqs.size();
  std::vector<LinAttnState*> st;
  if (states) {
    for (size_t s = 0; s < n_seq; ++s) {
      LinAttnState& S = state_of<LinAttnState>(states[s]);
      if (S.H != sh_.H || S.dk != sh_.dk || S.dv != sh_.dv)
        fail(prefix(), ": sequence ", s, " has a state of shape (", S.shape(), "), this layer keeps heads ", sh_.H,
             ", dk ", sh_.dk, ", dv ", sh_.dv);
      if (S.count != batch.seqs[s].pos)
        fail(prefix(), ": state holds ", S.count, " positions but the batch starts at ", batch.seqs[s].pos);
      st.push_back(&S);
    }
  }
  float* q = ctx.scratch.floats(0, static_cast<size_t>(rows * Kd));
  float* k = ctx.scratch.floats(1, static_cast<size_t>(rows * Kd));
  float* v = ctx.scratch.floats(2, static_cast<size_t>(rows * Vd));
  float* gate = ctx.scratch.floats(3, static_cast<size_t>(rows * Vd));
  float* g = scalar_gate() ? nullptr : ctx.scratch.floats(4, static_cast<size_t>(rows * Kd));
  float* o = ctx.scratch.floats(5, static_cast<size_t>(rows * Vd));
  float* gated = ctx.scratch.floats(6, static_cast<size_t>(rows * Vd));
  linear(ctx, x, rows, wq_, q);
  linear(ctx, x, rows, wk_, k);
  linear(ctx, x, rows, wv_, v);
  linear(ctx, x, rows, wg_, gate);
  if (g) gates(ctx, x, rows, g);
  pos_.resize(static_cast<size_t>(rows));
  for (const SeqSpan& sp : batch.seqs)
    for (int64_t t = 0; t < sp.len; ++t) pos_[sp.row + t] = sp.pos + t;
  rotate(ctx, q, k, rows, pos_.data(), false);
  run_heads(ctx, batch, states ? st.data() : nullptr, q, k, v, g, o, train);
  for (size_t s = 0; s < st.size(); ++s) st[s]->count += batch.seqs[s].len;
  output_gate(ctx.kt(), o, gate, rows, gated, nullptr);
  if (train) {
    saved_x_.assign(x, x + rows * sh_.d);
    saved_q_.assign(q, q + rows * Kd);
    saved_k_.assign(k, k + rows * Kd);
    saved_v_.assign(v, v + rows * Vd);
    saved_gate_.assign(gate, gate + rows * Vd);
    if (g) saved_g_.assign(g, g + rows * Kd);
    saved_o_.assign(o, o + rows * Vd);
  }
  linear(ctx, gated, rows, wo_, y);
}

void LinearAttentionMixer::free_saved() {
  release(saved_x_, saved_q_, saved_k_, saved_v_, saved_gate_, saved_g_, saved_o_, saved_states_, state_start_, pos_);
  free_gates();
}

void LinearAttentionMixer::backward(const float* dy, float* dx, const Batch& batch, Context& ctx) {
  const int64_t rows = batch.rows, d = sh_.d, Kd = sh_.Kd, Vd = sh_.Vd, H = sh_.H;
  const Exec& ex = ctx.exec;
  const kernels::Table& kt = ctx.kt();
  float* dgated = ctx.scratch.floats(0, static_cast<size_t>(rows * Vd));
  float* gated = ctx.scratch.floats(1, static_cast<size_t>(rows * Vd));
  float* normed = ctx.scratch.floats(2, static_cast<size_t>(rows * Vd));
  float* dgate = ctx.scratch.floats(3, static_cast<size_t>(rows * Vd));
  float* dO = ctx.scratch.floats(4, static_cast<size_t>(rows * Vd));
  float* dq = ctx.scratch.floats(5, static_cast<size_t>(rows * Kd));
  float* dk = ctx.scratch.floats(6, static_cast<size_t>(rows * Kd));
  float* dv = ctx.scratch.floats(7, static_cast<size_t>(rows * Vd));
  float* dg = scalar_gate() ? nullptr : ctx.scratch.floats(8, static_cast<size_t>(rows * Kd));
  // out = W_o gated
  output_gate(kt, saved_o_.data(), saved_gate_.data(), rows, gated, normed);
  ops::matmul_nn(ex, dy, rows, d, wo_.f32(), Vd, dgated);
  ops::matmul_tn_acc(ex, dy, rows, d, gated, Vd, dwo_);
  // gated = SiLU(gate) ⊙ normed; normed = RMSNorm(o) w per head.
  parallel_for(rows, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      kt.silu_mul_backward(saved_gate_.data() + r * Vd, normed + r * Vd, dgated + r * Vd, dgate + r * Vd, Vd);
  });
  ops::rmsnorm_backward(saved_o_.data(), norm_.f32(), dgated, dO, dnorm_, rows * H, sh_.dv, static_cast<float>(sh_.eps));
  // The recurrence, per (sequence, head).
  parallel_for(static_cast<int64_t>(batch.seqs.size()) * H, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const size_t s = static_cast<size_t>(task / H);
      const int64_t h = task % H;
      const ops::LinAttnHead a =
          head_args(batch, s, h, saved_q_.data(), saved_k_.data(), saved_v_.data(), saved_g_.data(), nullptr, nullptr);
      if (a.T == 0) continue;
      const SeqSpan& sp = batch.seqs[s];
      ops::LinAttnGrad gr;
      gr.dO = dO + sp.row * Vd + h * sh_.dv, gr.ld_do = Vd;
      gr.dq = dq + sp.row * Kd + h * sh_.dk, gr.ld_dq = Kd;
      gr.dk = dk + sp.row * Kd + h * sh_.dk, gr.ld_dk = Kd;
      gr.dv = dv + sp.row * Vd + h * sh_.dv, gr.ld_dv = Vd;
      if (dg) gr.dg = dg + sp.row * Kd + h * sh_.dk, gr.ld_dg = Kd;
      ops::linattn_backward(ex, a, saved_states_.data() + state_start_[task], gr);
    }
  });
  rotate(ctx, dq, dk, rows, pos_.data(), true);
  // The projections of x.
  const float* x = saved_x_.data();
  ops::matmul_tn_acc(ex, dq, rows, Kd, x, d, dwq_);
  ops::matmul_tn_acc(ex, dk, rows, Kd, x, d, dwk_);
  ops::matmul_tn_acc(ex, dv, rows, Vd, x, d, dwv_);
  ops::matmul_tn_acc(ex, dgate, rows, Vd, x, d, dwg_);
  ops::gemm(ex, rows, d, Kd, {dq, Kd, 1}, {wq_.f32(), d, 1}, dx, d, false);
  ops::gemm(ex, rows, d, Kd, {dk, Kd, 1}, {wk_.f32(), d, 1}, dx, d, true);
  ops::gemm(ex, rows, d, Vd, {dv, Vd, 1}, {wv_.f32(), d, 1}, dx, d, true);
  ops::gemm(ex, rows, d, Vd, {dgate, Vd, 1}, {wg_.f32(), d, 1}, dx, d, true);
  if (dg) gates_backward(ctx, x, dg, rows, dx);
}

}  // namespace strata
