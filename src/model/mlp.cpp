// SwiGLU MLP (HF LlamaMLP): y = down(silu(gate(x)) * up(x)).
#include <algorithm>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "model/registry.h"

namespace strata {
namespace {

class Mlp final : public Module {
 public:
  Mlp(const Config& cfg, const std::string& prefix)
      : prefix_(prefix), dim_(cfg.hidden_size), hidden_(cfg.intermediate_size) {}

  const char* kind() const override { return "mlp"; }
  std::vector<ParamDecl> params() const override {
    return {{prefix_ + ".gate_proj.weight", {hidden_, dim_}},
            {prefix_ + ".up_proj.weight", {hidden_, dim_}},
            {prefix_ + ".down_proj.weight", {dim_, hidden_}}};
  }
  void bind(ParamBinder& b) override {
    auto p = params();
    gate_ = b.get(p[0]);
    up_ = b.get(p[1]);
    down_ = b.get(p[2]);
  }
  int64_t out_width() const override { return dim_; }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const*, Scratch& scratch) override {
    const int64_t rows = batch.rows;
    float* g = scratch.floats(0, static_cast<size_t>(rows * hidden_));
    float* u = scratch.floats(1, static_cast<size_t>(rows * hidden_));
    linear(x, rows, gate_, g);
    linear(x, rows, up_, u);
    if (training_) {
      saved_x_.assign(x, x + rows * dim_);
      saved_g_.assign(g, g + rows * hidden_);
      saved_u_.assign(u, u + rows * hidden_);
    }
    const kernels::Table& kt = kernels::active();
    parallel_for(rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) kt.silu_mul(g + r * hidden_, u + r * hidden_, g + r * hidden_, hidden_);
    });
    linear(g, rows, down_, y);
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
  void backward(const float* dy, float* dx, const Batch& batch, Scratch& scratch) override {
    const int64_t rows = batch.rows, F = hidden_;
    float* h = scratch.floats(0, static_cast<size_t>(rows * F));
    float* dh = scratch.floats(1, static_cast<size_t>(rows * F));
    const float* g = saved_g_.data();
    const float* u = saved_u_.data();
    const kernels::Table& kt = kernels::active();
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / F);
    parallel_for(rows, grain, [&](int64_t lo, int64_t hi) {  // h as the forward formed it
      kt.silu_mul(g + lo * F, u + lo * F, h + lo * F, (hi - lo) * F);
    });
    ops::matmul_nn(dy, rows, dim_, down_.f32(), F, dh);
    ops::matmul_tn_acc(dy, rows, dim_, h, F, ddown_);
    float* dg = h;  // h is no longer needed; dh becomes du
    parallel_for(rows, grain, [&](int64_t lo, int64_t hi) {
      kt.silu_mul_backward(g + lo * F, u + lo * F, dh + lo * F, dg + lo * F, (hi - lo) * F);
    });
    ops::matmul_tn_acc(dg, rows, F, saved_x_.data(), dim_, dgate_);
    ops::matmul_tn_acc(dh, rows, F, saved_x_.data(), dim_, dup_);
    // dx = dg Wg + du Wu, the second product accumulated onto the first.
    ops::matmul_nn(dg, rows, F, gate_.f32(), dim_, dx);
    ops::gemm(rows, dim_, F, {dh, F, 1}, {up_.f32(), dim_, 1}, dx, dim_, true, ops::training_precision());
  }

 private:
  std::string prefix_;
  int64_t dim_, hidden_;
  Tensor gate_, up_, down_;
  float *dgate_ = nullptr, *dup_ = nullptr, *ddown_ = nullptr;
  std::vector<float> saved_x_, saved_g_, saved_u_;
};

}  // namespace

std::unique_ptr<Module> make_mlp(const Config& cfg, const std::string& prefix) {
  return std::make_unique<Mlp>(cfg, prefix);
}

}  // namespace strata
