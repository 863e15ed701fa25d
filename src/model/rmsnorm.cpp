// RMSNorm (HF LlamaRMSNorm): y = w * x / sqrt(mean(x^2) + eps), in F32.
#include "kernels/ops.h"
#include "model/registry.h"

namespace strata {
namespace {

class RmsNorm final : public Module {
 public:
  RmsNorm(const Config& cfg, std::string prefix)
      : name_(std::move(prefix) + ".weight"), dim_(cfg.hidden_size), eps_(static_cast<float>(cfg.rms_norm_eps)) {}

  const char* kind() const override { return "rmsnorm"; }
  std::vector<ParamDecl> params() const override { return {{name_, {dim_}, Init::Ones, false}}; }
  void bind(ParamBinder& b) override { w_ = b.get(params()[0]); }
  int64_t out_width() const override { return dim_; }

  void forward(const float* x, float* y, const Batch& batch, LayerState* const*, Scratch&) override {
    ops::rmsnorm(x, w_.f32(), y, batch.rows, dim_, eps_);
  }

 private:
  std::string name_;
  int64_t dim_;
  float eps_;
  Tensor w_;
};

}  // namespace

std::unique_ptr<Module> make_rmsnorm(const Config& cfg, const std::string& prefix) {
  return std::make_unique<RmsNorm>(cfg, prefix);
}

}  // namespace strata
