// SwiGLU MLP (HF LlamaMLP): y = down(silu(gate(x)) * up(x)).
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
    ops::matmul(x, rows, gate_, g);
    ops::matmul(x, rows, up_, u);
    const kernels::Table& kt = kernels::active();
    parallel_for(rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) kt.silu_mul(g + r * hidden_, u + r * hidden_, g + r * hidden_, hidden_);
    });
    ops::matmul(g, rows, down_, y);
  }

 private:
  std::string prefix_;
  int64_t dim_, hidden_;
  Tensor gate_, up_, down_;
};

}  // namespace

std::unique_ptr<Module> make_mlp(const Config& cfg, const std::string& prefix) {
  return std::make_unique<Mlp>(cfg, prefix);
}

}  // namespace strata
