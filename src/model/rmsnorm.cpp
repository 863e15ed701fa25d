// RMSNorm (HF LlamaRMSNorm): y = w * x / sqrt(mean(x^2) + eps), in F32.
#include <cmath>

#include "core/parallel.h"
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
    if (training_) saved_x_.assign(x, x + batch.rows * dim_);
  }

  void bind_grads(GradBinder& g) override { dw_ = g.get(name_); }

  // With r = 1/sqrt(mean(x^2) + eps) and u = w * dy:
  //   dx = r * u - x * r^3 * sum(u * x) / n,   dw += dy * x * r.
  void backward(const float* dy, float* dx, const Batch& batch, Scratch&) override {
    const float* x = saved_x_.data();
    const float* w = w_.f32();
    const int64_t n = dim_;
    parallel_for(batch.rows, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) {
        const float* xr = x + row * n;
        const float* dyr = dy + row * n;
        double ss = 0, dot = 0;
        for (int64_t i = 0; i < n; ++i) {
          ss += static_cast<double>(xr[i]) * xr[i];
          dot += static_cast<double>(w[i]) * dyr[i] * xr[i];
        }
        const double r = 1.0 / std::sqrt(ss / n + eps_);
        const double c = r * r * r * dot / n;
        for (int64_t i = 0; i < n; ++i) dx[row * n + i] = static_cast<float>(r * w[i] * dyr[i] - xr[i] * c);
      }
    });
    for (int64_t row = 0; row < batch.rows; ++row) {  // serial: the same sum order for any thread count
      const float* xr = x + row * n;
      const float* dyr = dy + row * n;
      double ss = 0;
      for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float r = static_cast<float>(1.0 / std::sqrt(ss / n + eps_));
      for (int64_t i = 0; i < n; ++i) dw_[i] += dyr[i] * xr[i] * r;
    }
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

std::unique_ptr<Module> make_rmsnorm(const Config& cfg, const std::string& prefix) {
  return std::make_unique<RmsNorm>(cfg, prefix);
}

}  // namespace strata
