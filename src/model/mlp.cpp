// SwiGLU MLP (HF LlamaMLP): y = down(silu(gate(x)) * up(x)).
#include <cmath>

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
    float* tmp = scratch.floats(2, static_cast<size_t>(rows * dim_));
    const float* g = saved_g_.data();
    const float* u = saved_u_.data();
    parallel_for(rows * F, 1 << 14, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    });
    ops::matmul_nn(dy, rows, dim_, down_.f32(), F, dh);
    ops::matmul_tn_acc(dy, rows, dim_, h, F, ddown_);
    float* dg = h;  // h is no longer needed
    parallel_for(rows * F, 1 << 14, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const float sg = 1.0f / (1.0f + std::exp(-g[i]));
        const float d = dh[i];
        dg[i] = d * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        dh[i] = d * g[i] * sg;  // du
      }
    });
    ops::matmul_tn_acc(dg, rows, F, saved_x_.data(), dim_, dgate_);
    ops::matmul_tn_acc(dh, rows, F, saved_x_.data(), dim_, dup_);
    ops::matmul_nn(dg, rows, F, gate_.f32(), dim_, dx);
    ops::matmul_nn(dh, rows, F, up_.f32(), dim_, tmp);
    for (int64_t i = 0; i < rows * dim_; ++i) dx[i] += tmp[i];
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
