#include "model/module.h"

#include "core/rng.h"
#include "kernels/ops.h"
#include "strata/error.h"

namespace strata {

Tensor ParamBinder::get(const ParamDecl& decl) {
  const Tensor* t = w_.find(decl.name);
  if (!t) fail(w_.origin.empty() ? std::string("weights") : w_.origin, ": missing tensor '", decl.name, "' (expected shape ", shape_str(decl.shape), ")");
  const std::string src = w_.source_of(decl.name);
  if (t->shape != decl.shape)
    fail(src, ": tensor '", decl.name, "' has shape ", shape_str(t->shape), ", the config implies ",
         shape_str(decl.shape));
  // Matrices stay in their stored dtype when a kernel reads it directly (F32,
  // BF16 and the quantized types: used in place from the mapping); F16 and all
  // vectors become F32. Quantized matrices must be made of whole blocks.
  const bool quantized_matrix = decl.matrix && is_quantized(t->dtype);
  if (quantized_matrix && t->shape.size() != 2)
    fail(src, ": tensor '", decl.name, "' is ", dtype_name(t->dtype), " but only 2-D matrices may be quantized");
  const bool keep = t->dtype == DType::F32 || (decl.matrix && t->dtype == DType::BF16) || quantized_matrix;
  if (keep && relocate_ && decl.matrix && t->mapped) return bound_[decl.name] = t->relocate(true);
  return bound_[decl.name] = keep ? *t : t->to(DType::F32);
}

float declared_value(const ParamDecl& d, int64_t i, Rng& rng, float default_std) {
  switch (d.init) {
    case Init::Normal: return static_cast<float>(rng.normal()) * (d.init_std >= 0.0f ? d.init_std : default_std);
    case Init::Ones: return 1.0f;
    case Init::Zeros: return 0.0f;
    case Init::Constant: return d.init_value;
    case Init::DiracLast: return (i + 1) % (d.shape.empty() ? 1 : d.shape.back()) == 0 ? 1.0f : 0.0f;
    case Init::Uniform: return (2.0f * rng.uniform() - 1.0f) * d.init_value;
    case Init::Custom: return d.fill(i, rng);
  }
  return 0.0f;
}

void Module::linear(const Context& ctx, const float* x, int64_t rows, const Tensor& w, float* y) {
  if (ctx.training) ops::matmul_train(ctx.exec, x, rows, w, y);
  else ops::matmul(ctx.exec, x, rows, w, y);
}

float* GradBinder::get(const std::string& name) {
  auto it = grads_.find(name);
  if (it == grads_.end()) fail("no gradient buffer for parameter '", name, "'");
  return it->second.f32();
}

}  // namespace strata
