// SwiGLU MLP (HF LlamaMLP): y = down(silu(gate(x)) * up(x)).
// Option: intermediate_size (0: the config's), e.g. the wider MLP that stands
// in for Mamba in the Samba ablations.
#include <algorithm>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "model/registry.h"

namespace strata {
namespace {

class Mlp final : public Module {
 public:
  Mlp(const ModuleSpec& spec, const Config& cfg)
      : Module(spec),
        dim_(cfg.hidden_size),
        hidden_(opt_int(spec.options, "intermediate_size") > 0 ? opt_int(spec.options, "intermediate_size")
                                                               : cfg.intermediate_size) {}

  std::vector<ParamDecl> params() const override {
    return {{prefix() + ".gate_proj.weight", {hidden_, dim_}},
            {prefix() + ".up_proj.weight", {hidden_, dim_}},
            residual_out({prefix() + ".down_proj.weight", {dim_, hidden_}})};
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    gate_ = b.get(p[0]);
    up_ = b.get(p[1]);
    down_ = b.get(p[2]);
  }
  int64_t out_width() const override { return dim_; }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const*, Context& ctx) override {
    const int64_t rows = batch.rows;
    float* g = ctx.scratch.floats(0, static_cast<size_t>(rows * hidden_));
    float* u = ctx.scratch.floats(1, static_cast<size_t>(rows * hidden_));
    linear(ctx, x, rows, gate_, g);
    linear(ctx, x, rows, up_, u);
    if (ctx.training) {
      saved_x_.assign(x, x + rows * dim_);
      saved_g_.assign(g, g + rows * hidden_);
      saved_u_.assign(u, u + rows * hidden_);
    }
    const kernels::Table& kt = ctx.kt();
    parallel_for(rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) kt.silu_mul(g + r * hidden_, u + r * hidden_, g + r * hidden_, hidden_);
    });
    linear(ctx, g, rows, down_, y);
  }

  void free_saved() override { release(saved_x_, saved_g_, saved_u_); }
  void bind_grads(GradBinder& gb) override {
    auto p = params();
    dgate_ = gb.get(p[0].name);
    dup_ = gb.get(p[1].name);
    ddown_ = gb.get(p[2].name);
  }

  // h = silu(g) * u, y = h Wdᵀ:  dh = dy Wd, dWd += dyᵀ h,
  // dg = dh * u * silu'(g), du = dh * silu(g), dx = dg Wg + du Wu.
  void backward(const float* dy, float* dx, const Batch& batch, Context& ctx) override {
    const int64_t rows = batch.rows, F = hidden_;
    const Exec& ex = ctx.exec;
    float* h = ctx.scratch.floats(0, static_cast<size_t>(rows * F));
    float* dh = ctx.scratch.floats(1, static_cast<size_t>(rows * F));
    const float* g = saved_g_.data();
    const float* u = saved_u_.data();
    const kernels::Table& kt = ctx.kt();
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / F);
    parallel_for(rows, grain, [&](int64_t lo, int64_t hi) {  // h as the forward formed it
      kt.silu_mul(g + lo * F, u + lo * F, h + lo * F, (hi - lo) * F);
    });
    ops::matmul_nn(ex, dy, rows, dim_, down_.f32(), F, dh);
    ops::matmul_tn_acc(ex, dy, rows, dim_, h, F, ddown_);
    float* dg = h;  // h is no longer needed; dh becomes du
    parallel_for(rows, grain, [&](int64_t lo, int64_t hi) {
      kt.silu_mul_backward(g + lo * F, u + lo * F, dh + lo * F, dg + lo * F, (hi - lo) * F);
    });
    ops::matmul_tn_acc(ex, dg, rows, F, saved_x_.data(), dim_, dgate_);
    ops::matmul_tn_acc(ex, dh, rows, F, saved_x_.data(), dim_, dup_);
    // dx = dg Wg + du Wu, the second product accumulated onto the first.
    ops::matmul_nn(ex, dg, rows, F, gate_.f32(), dim_, dx);
    ops::gemm(ex, rows, dim_, F, {dh, F, 1}, {up_.f32(), dim_, 1}, dx, dim_, true);
  }

 private:
  int64_t dim_, hidden_;
  Tensor gate_, up_, down_;
  float *dgate_ = nullptr, *dup_ = nullptr, *ddown_ = nullptr;
  std::vector<float> saved_x_, saved_g_, saved_u_;
};

}  // namespace

ModuleType mlp_module() {
  return ModuleType{
      .kind = "mlp",
      .name = "mlp",
      .summary = "SwiGLU MLP: down(silu(gate(x)) * up(x))",
      .options = {int_option("intermediate_size", 0, 0, int64_t{1} << 20,
                             "hidden width (0: the config's intermediate_size)")},
      .make = make_as<Mlp>,
  };
}

}  // namespace strata
