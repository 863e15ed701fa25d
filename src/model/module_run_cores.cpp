// `strata module-run --kind gla-core | retention-core`: the bare gated linear
// attention recurrence (kernels/linear_attention.h) on given q, k, v and
// gates, so it can be held against other implementations without the layers
// around it. Tensor names and shapes are in docs/formats.md ("module-run").
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/parallel.h"
#include "kernels/linear_attention.h"
#include "model/module_run.h"
#include "strata/error.h"

namespace strata {
namespace {

Tensor f32_of(const Tensor& t) { return t.dtype == DType::F32 ? t : t.to(DType::F32); }

// Tensor `name` of the input file, F32, of shape `want` (required unless optional).
std::optional<Tensor> take(const WeightSet& in, const std::string& origin, const std::string& name, const Shape& want,
                           bool optional) {
  const Tensor* t = in.find(name);
  if (!t) {
    if (optional) return std::nullopt;
    fail(origin, ": missing tensor '", name, "' ", shape_str(want));
  }
  if (t->shape != want) fail(origin, ": tensor '", name, "' has shape ", shape_str(t->shape), ", expected ", shape_str(want));
  Tensor f = f32_of(*t);
  for (int64_t i = 0; i < f.numel(); ++i)
    if (!std::isfinite(f.f32()[i])) fail(origin, ": tensor '", name, "' has a non-finite value at element ", i);
  return f;
}

}  // namespace

bool is_core_kind(const std::string& kind) { return kind == "gla-core" || kind == "retention-core"; }

NamedTensors run_core(const CoreRunRequest& req, const Exec& exec) {
  const bool gla = req.kind == "gla-core";
  if (!is_core_kind(req.kind)) fail("module-run: '", req.kind, "' is not gla-core or retention-core");
  for (const auto& [name, t] : req.params.tensors)
    fail(req.params.origin, ": unexpected tensor '", name, "' (", req.kind, " has no parameters)");
  int64_t chunk = 64;
  for (const auto& [key, value] : req.options) {
    if (key != "chunk") fail("--opt '", key, "': ", req.kind, " takes only chunk=N (rows per chunk of the chunked form)");
    char* end = nullptr;
    const long long c = std::strtoll(value.c_str(), &end, 10);
    if (end == value.c_str() || *end != '\0' || c < 1 || c > 4096) fail("--opt 'chunk': '", value, "' is not an integer in [1, 4096]");
    chunk = c;
  }
  const WeightSet& in = req.inputs;
  const std::string& origin = req.inputs.origin;
  const std::vector<std::string> known = gla ? std::vector<std::string>{"q", "k", "v", "gk", "initial_state", "dy"}
                                             : std::vector<std::string>{"q", "k", "v", "gamma", "initial_state", "dy"};
  for (const auto& [name, t] : in.tensors)
    if (std::find(known.begin(), known.end(), name) == known.end())
      fail(origin, ": unexpected tensor '", name, "' (", req.kind, " reads q, k, v, ", gla ? "gk" : "gamma",
           ", initial_state, dy)");
  const Tensor* q0 = in.find("q");
  if (!q0) fail(origin, ": missing tensor 'q' [B, T, H, dk]");
  if (q0->shape.size() != 4 || q0->numel() == 0)
    fail(origin, ": tensor 'q' has shape ", shape_str(q0->shape), ", expected [B, T, H, dk] with every size >= 1");
  const int64_t B = q0->shape[0], T = q0->shape[1], H = q0->shape[2], dk = q0->shape[3];
  const Tensor* v0 = in.find("v");
  if (!v0) fail(origin, ": missing tensor 'v' [B, T, H, dv]");
  if (v0->shape.size() != 4 || v0->shape[3] < 1)
    fail(origin, ": tensor 'v' has shape ", shape_str(v0->shape), ", expected [", B, ", ", T, ", ", H, ", dv]");
  const int64_t dv = v0->shape[3];
  const Tensor q = *take(in, origin, "q", {B, T, H, dk}, false), k = *take(in, origin, "k", {B, T, H, dk}, false);
  const Tensor v = *take(in, origin, "v", {B, T, H, dv}, false);
  std::optional<Tensor> gk, gamma;
  if (gla) {
    gk = take(in, origin, "gk", {B, T, H, dk}, false);
    for (int64_t i = 0; i < gk->numel(); ++i)
      if (gk->f32()[i] > 0) fail(origin, ": tensor 'gk' holds log forget gates, which must be <= 0 (element ", i, " is ", gk->f32()[i], ")");
  }
  std::vector<float> log_gamma(static_cast<size_t>(H));
  if (!gla) {
    gamma = take(in, origin, "gamma", {H}, true);
    for (int64_t h = 0; h < H; ++h) {
      const double g = gamma ? gamma->f32()[h] : 1.0 - std::exp2(-5.0 - static_cast<double>(h));
      if (!(g > 0 && g <= 1)) fail(origin, ": tensor 'gamma' element ", h, " is ", g, ", a decay must be in (0, 1]");
      log_gamma[h] = static_cast<float>(std::log(g));
    }
  }
  const std::optional<Tensor> init = take(in, origin, "initial_state", {B, H, dk, dv}, true);
  const std::optional<Tensor> dy = take(in, origin, "dy", {B, T, H, dv}, true);

  Tensor out = Tensor::alloc(DType::F32, {B, T, H, dv});
  Tensor state = Tensor::alloc(DType::F32, {B, H, dk, dv});
  if (init) std::memcpy(state.data, init->data, state.nbytes());
  else std::memset(state.data, 0, state.nbytes());
  const int64_t SS = dk * dv, chunks = ops::linattn_chunks(T, 0, chunk);
  std::vector<float> saved(dy ? static_cast<size_t>(B * H * chunks * SS) : 0);
  Tensor dq, dk_t, dv_t, dg;
  if (dy) {
    dq = Tensor::alloc(DType::F32, {B, T, H, dk});
    dk_t = Tensor::alloc(DType::F32, {B, T, H, dk});
    dv_t = Tensor::alloc(DType::F32, {B, T, H, dv});
    dg = gla ? Tensor::alloc(DType::F32, {B, T, H, dk}) : Tensor();
  }
  parallel_for(B * H, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / H, h = task % H;
      ops::LinAttnHead a;
      a.T = T, a.dk = dk, a.dv = dv;
      const int64_t qo = b * T * H * dk + h * dk, vo = b * T * H * dv + h * dv;
      a.q = q.f32() + qo, a.ld_q = H * dk;
      a.k = k.f32() + qo, a.ld_k = H * dk;
      a.v = v.f32() + vo, a.ld_v = H * dv;
      a.scalar_gate = !gla;
      if (gla) a.g = gk->f32() + qo, a.ld_g = H * dk;
      else a.g = &log_gamma[static_cast<size_t>(h)], a.ld_g = 0;
      a.scale = 1.0f / std::sqrt(static_cast<float>(dk));
      a.o = out.f32() + vo, a.ld_o = H * dv;
      a.S = state.f32() + task * SS;
      a.chunk = chunk;
      float* sv = dy ? saved.data() + task * chunks * SS : nullptr;
      ops::linattn_forward(exec, a, sv);
      if (!dy) continue;
      ops::LinAttnGrad g;
      g.dO = dy->f32() + vo, g.ld_do = H * dv;
      g.dq = dq.f32() + qo, g.ld_dq = H * dk;
      g.dk = dk_t.f32() + qo, g.ld_dk = H * dk;
      g.dv = dv_t.f32() + vo, g.ld_dv = H * dv;
      if (gla) g.dg = dg.f32() + qo, g.ld_dg = H * dk;
      ops::linattn_backward(exec, a, sv, g);
    }
  });
  NamedTensors r = {{"output", out}, {"final_state", state}};
  if (dy) {
    r.emplace_back("grad.q", dq);
    r.emplace_back("grad.k", dk_t);
    r.emplace_back("grad.v", dv_t);
    if (gla) r.emplace_back("grad.gk", dg);
  }
  return r;
}

CoreRunRequest core_run_request(const std::string& kind, const std::string& params_path, const std::string& input_path,
                                const std::vector<std::pair<std::string, std::string>>& options) {
  CoreRunRequest r;
  r.kind = kind;
  r.options = options;
  if (!params_path.empty()) {
    read_safetensors(params_path, r.params);
    r.params.origin = params_path;
  }
  read_safetensors(input_path, r.inputs);
  r.inputs.origin = input_path;
  return r;
}

}  // namespace strata
