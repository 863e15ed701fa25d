// One diff-attn layer on a fixture written by
// tests/python/test_diff_attention_parity.py: reads config.json (an HF-style
// config of the modified decoder), case.json (prefix, sequence lengths) and
// fixture.safetensors (the layer's tensors, "input" and "grad_output") from
// $STRATA_DIFF_ATTN_FIXTURE, runs forward and backward, and writes "output",
// "grad_input" and "grad.<parameter>" to $STRATA_DIFF_ATTN_OUT for the script
// to compare with PyTorch. Skipped when the variables are unset.
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "kernels/exec.h"
#include "model/registry.h"

namespace strata {
namespace {


TEST(DiffAttentionParity, RunsTheFixtureOfThePythonTest) {
  const char* dir = std::getenv("STRATA_DIFF_ATTN_FIXTURE");
  const char* out = std::getenv("STRATA_DIFF_ATTN_OUT");
  if (!dir || !out) GTEST_SKIP() << "run by tests/python/test_diff_attention_parity.py";
  const std::string d = dir;
  const Config cfg = Config::from_json_text(read_file_text(d + "/config.json"), d + "/config.json");
  const auto spec = nlohmann::json::parse(read_file_text(d + "/case.json"));
  const std::string prefix = spec.at("prefix");
  WeightSet ws;
  read_safetensors(d + "/fixture.safetensors", ws);

  // The differential attention of the config's first layer, under the fixture's prefix.
  const ModuleConf& attn = cfg.layers.layer(spec.value("layer", 0)).front().mixer;
  ASSERT_EQ(attn.kind, "diff-attn");
  auto m = make_module(ModuleSpec{attn.kind, prefix, spec.value("layer", 0), attn.options}, cfg);
  ParamBinder binder(ws);
  m->bind(binder);
  std::map<std::string, Tensor> grads;
  for (const ParamDecl& p : m->params())
    if (p.trainable) grads[p.name] = Tensor::alloc(DType::F32, p.shape);
  GradBinder gb(grads);
  m->bind_grads(gb);

  Batch batch;
  for (int64_t n : spec.at("lens").get<std::vector<int64_t>>()) {
    batch.seqs.push_back({batch.rows, n, 0});
    batch.rows += n;
  }
  const int64_t D = cfg.hidden_size;
  const Tensor* x = ws.find("input");
  const Tensor* dy = ws.find("grad_output");
  ASSERT_TRUE(x && dy);
  ASSERT_EQ(x->shape, (Shape{batch.rows, D}));
  ASSERT_EQ(dy->shape, (Shape{batch.rows, D}));
  Tensor y = Tensor::alloc(DType::F32, {batch.rows, D}), dx = Tensor::alloc(DType::F32, {batch.rows, D});
  Scratch scratch;
  const Exec ex = Exec::defaults();
  Context ctx{ex, scratch, true};
  m->forward(x->f32(), y.f32(), batch, nullptr, ctx);
  m->backward(dy->f32(), dx.f32(), batch, ctx);

  NamedTensors result = {{"output", y}, {"grad_input", dx}};
  for (const auto& [name, g] : grads) result.emplace_back("grad." + name, g);
  write_safetensors(out, result);
}

}  // namespace
}  // namespace strata
