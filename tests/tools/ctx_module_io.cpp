// Runs one module on tensors from a file, for comparisons with other
// implementations (tests/python/test_ctx_modules_parity.py).
//
//   ctx_module_io KIND IN.safetensors OUT.safetensors [key=value ...]
//
// keys: hidden_size, ada_rank, tm_kernel, se_reduction, ctx_mode, rms_norm_eps.
// IN holds the module's parameters (prefix "m", e.g. "m.ctx_up.weight"),
// "x" [rows, D], "dy" [rows, D] and "lens" [n] (sequence lengths as F32; the
// sequences are packed one after another). OUT receives "y" (forward, no
// states), "y_decode" (causal modules only: the same rows through decode
// states, a prefill of half of each sequence, then one step per row), "dx"
// and "grad.<param>" for loss = sum(dy * y).
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/weights.h"
#include "io/safetensors.h"
#include "model/module.h"
#include "model/registry.h"

using namespace strata;

namespace {

// The shape and the module's options (named as the modified recipe names them).
Config parse_config(int argc, char** argv, const std::string& kind, nlohmann::json& options) {
  Config c;
  options = nlohmann::json::object();
  for (int i = 4; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    if (eq == std::string::npos) throw std::runtime_error("expected key=value, got " + a);
    const std::string k = a.substr(0, eq), v = a.substr(eq + 1);
    if (k == "hidden_size") c.hidden_size = std::stoll(v);
    else if (k == "ada_rank") { if (kind == "ada-rmsnorm") options["rank"] = std::stoll(v); }
    else if (k == "tm_kernel") { if (kind == "token-mix") options["kernel"] = std::stoll(v); }
    else if (k == "se_reduction") { if (kind == "se") options["reduction"] = std::stoll(v); }
    else if (k == "ctx_mode") { if (kind != "token-mix") options["ctx_mode"] = v; }
    else if (k == "rms_norm_eps") c.rms_norm_eps = std::stod(v);
    else throw std::runtime_error("unknown key " + k);
  }
  return c;
}

Tensor f32_tensor(const std::vector<float>& v, Shape shape) {
  Tensor t = Tensor::alloc(DType::F32, std::move(shape));
  std::copy(v.begin(), v.end(), t.f32());
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: ctx_module_io KIND IN.safetensors OUT.safetensors [key=value ...]\n");
    return 2;
  }
  try {
    nlohmann::json options;
    const Config cfg = parse_config(argc, argv, argv[1], options);
    const int64_t D = cfg.hidden_size;
    WeightSet in;
    read_safetensors(argv[2], in);
    auto module = make_module(argv[1], cfg, "m", options);
    const Exec exec = Exec::defaults();
    ParamBinder binder(in);
    module->bind(binder);

    const Tensor& x = in.tensors.at("x");
    const Tensor& dy = in.tensors.at("dy");
    const Tensor& lens = in.tensors.at("lens");
    Batch batch;
    for (int64_t s = 0; s < lens.numel(); ++s) {
      const int64_t len = static_cast<int64_t>(lens.f32()[s]);
      batch.seqs.push_back({batch.rows, len, 0});
      batch.rows += len;
    }
    const int64_t n = batch.rows * D;
    Scratch scratch;
    Context ctx{exec, scratch, false};
    std::vector<float> y(n), y_decode(n), dx(n);
    module->forward(x.f32(), y.data(), batch, nullptr, ctx);

    // Decode: half of every sequence as one prefill, then one row at a time.
    std::vector<std::unique_ptr<LayerState>> states;
    std::vector<LayerState*> st;
    for (size_t s = 0; s < batch.seqs.size(); ++s) states.push_back(module->make_state());
    for (auto& s : states) st.push_back(s.get());
    for (size_t s = 0; s < batch.seqs.size() && module->causal(); ++s) {
      const SeqSpan& sp = batch.seqs[s];
      const int64_t half = (sp.len + 1) / 2;
      Batch one{{{0, half, 0}}, half};
      module->forward(x.f32() + sp.row * D, y_decode.data() + sp.row * D, one, &st[s], ctx);
      for (int64_t t = half; t < sp.len; ++t) {
        Batch step{{{0, 1, t}}, 1};
        module->step(x.f32() + (sp.row + t) * D, y_decode.data() + (sp.row + t) * D, step, &st[s], ctx);
      }
    }

    std::map<std::string, Tensor> grads;
    for (const ParamDecl& d : module->params()) grads[d.name] = Tensor::alloc(DType::F32, d.shape);
    GradBinder gb(grads);
    module->bind_grads(gb);
    Context train{exec, scratch, true};
    std::vector<float> y_train(n);
    module->forward(x.f32(), y_train.data(), batch, nullptr, train);
    module->backward(dy.f32(), dx.data(), batch, train);

    NamedTensors out = {{"y", f32_tensor(y, {batch.rows, D})}, {"dx", f32_tensor(dx, {batch.rows, D})}};
    if (module->causal()) out.emplace_back("y_decode", f32_tensor(y_decode, {batch.rows, D}));
    for (const auto& [name, g] : grads) out.emplace_back("grad." + name, g);
    write_safetensors(argv[3], out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ctx_module_io: %s\n", e.what());
    return 1;
  }
  return 0;
}
