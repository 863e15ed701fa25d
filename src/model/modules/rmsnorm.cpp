// RMSNorm (HF LlamaRMSNorm): y = w * x / sqrt(mean(x^2) + eps), in F32.
#include "kernels/ops.h"
#include "model/registry.h"

namespace strata {
namespace {

class RmsNorm final : public Module {
 public:
  RmsNorm(const ModuleSpec& spec, const Config& cfg)
      : Module(spec), name_(spec.prefix + ".weight"), dim_(cfg.hidden_size), eps_(static_cast<float>(cfg.rms_norm_eps)) {}

  std::vector<ParamDecl> params() const override { return {{name_, {dim_}, Init::Ones, false}}; }
  void bind(ParamBinder& b) override { w_ = b.get(params()[0]); }
  int64_t out_width() const override { return dim_; }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const*, Context& ctx) override {
    ops::rmsnorm(ctx.exec, x, w_.f32(), y, batch.rows, dim_, eps_);
    if (ctx.training) saved_x_.assign(x, x + batch.rows * dim_);
  }

  void free_saved() override { release(saved_x_); }
  void bind_grads(GradBinder& g) override { dw_ = g.get(name_); }

  void backward(const float* dy, float* dx, const Batch& batch, Context&) override {
    ops::rmsnorm_backward(saved_x_.data(), w_.f32(), dy, dx, dw_, batch.rows, dim_, eps_);
  }

 private:
  std::string name_;
  int64_t dim_;
  float eps_;
  Tensor w_;
  float* dw_ = nullptr;
  std::vector<float> saved_x_;
};

}  // namespace

ModuleType rmsnorm_module() {
  return ModuleType{
      .kind = "rmsnorm",
      .name = "norm",
      .summary = "RMSNorm: w * x / sqrt(mean(x^2) + rms_norm_eps)",
      .make = make_as<RmsNorm>,
  };
}

}  // namespace strata
