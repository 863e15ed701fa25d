// strata module-run: one module on given tensors. In process (run_module):
// decode == forward, the exported KV cache, gradients against central finite
// differences of the forward itself, shapes from the tensors; through the
// binary: the files it writes and one clear error line for every bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "io/safetensors.h"
#include "model/module_run.h"
#include "test_util.h"

namespace strata {
namespace {

using test::run_cli;
using Opts = std::vector<std::pair<std::string, std::string>>;

Tensor randn(const Shape& shape, uint64_t seed, double std_dev) {
  Rng rng(seed);
  Tensor t = Tensor::alloc(DType::F32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(rng.normal() * std_dev);
  return t;
}

WeightSet params_of(const std::vector<std::pair<std::string, Shape>>& decls, uint64_t seed) {
  WeightSet w;
  w.origin = "P.safetensors";
  for (const auto& [name, shape] : decls) w.add(name, randn(shape, seed++, 1.0 / std::sqrt(double(shape.back()))), w.origin);
  return w;
}

WeightSet mlp_params(int64_t D, int64_t F, uint64_t seed) {
  return params_of({{"gate_proj.weight", {F, D}}, {"up_proj.weight", {F, D}}, {"down_proj.weight", {D, F}}}, seed);
}

WeightSet attention_params(int64_t D, int64_t H, int64_t KV, int64_t hd, uint64_t seed) {
  return params_of({{"q_proj.weight", {H * hd, D}},
                    {"k_proj.weight", {KV * hd, D}},
                    {"v_proj.weight", {KV * hd, D}},
                    {"o_proj.weight", {D, H * hd}}},
                   seed);
}

ModuleRunRequest request(const std::string& kind, WeightSet params, int64_t B, int64_t T, int64_t D, Opts opts,
                         bool with_dy = true) {
  ModuleRunRequest r;
  r.kind = kind;
  r.params = std::move(params);
  r.input = randn({B, T, D}, 900, 1.0);
  if (with_dy) r.dy = randn({B, T, D}, 901, 1.0);
  r.options = std::move(opts);
  return r;
}

std::map<std::string, Tensor> run(const ModuleRunRequest& r) {
  std::map<std::string, Tensor> m;
  for (auto& [name, t] : run_module(r, Exec::defaults())) m[name] = t;
  return m;
}

void expect_bitwise(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape, b.shape) << what;
  EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0) << what;
}

// sum(dy * output) in double: the loss whose gradients module-run reports.
double loss(const ModuleRunRequest& r) {
  const Tensor y = run(r).at("output");
  double s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) s += double(y.f32()[i]) * r.dy->f32()[i];
  return s;
}

// Central differences of loss() at a few entries of every gradient module-run
// writes (parameters and input), in F32: eps 1e-2 leaves the rounding of the
// loss (~1e-6) well below the tolerance.
void check_gradients(const ModuleRunRequest& base) {
  const auto out = run(base);
  int checked = 0;
  for (const auto& [name, g] : out) {
    if (name.rfind("grad.", 0) != 0) continue;
    const std::string target = name.substr(5);
    double gmax = 0;
    for (int64_t i = 0; i < g.numel(); ++i) gmax = std::max(gmax, std::fabs(double(g.f32()[i])));
    for (int64_t i : {int64_t{0}, g.numel() / 3, g.numel() - 1}) {
      const float eps = 1e-2f;
      double f[2];
      for (int side = 0; side < 2; ++side) {
        ModuleRunRequest r = base;
        Tensor t = (target == "input" ? r.input : *r.params.find(target)).to(DType::F32);  // a private copy
        t.f32()[i] += side ? -eps : eps;
        if (target == "input") r.input = t;
        else r.params.tensors[target] = t;
        f[side] = loss(r);
      }
      const double fd = (f[0] - f[1]) / (2.0 * eps);
      EXPECT_NEAR(g.f32()[i], fd, 2e-3 * std::max(1.0, gmax)) << name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GE(checked, 12);
}

TEST(ModuleRun, MlpStepEqualsForwardAndGradientsMatchDifferences) {
  const auto r = request("mlp", mlp_params(16, 40, 1), 2, 5, 16, {});
  const auto out = run(r);
  expect_bitwise(out.at("output"), out.at("output_step"), "mlp output_step");
  EXPECT_EQ(out.at("grad.gate_proj.weight").shape, (Shape{40, 16}));  // intermediate_size from gate_proj
  EXPECT_EQ(out.at("grad.input").shape, (Shape{2, 5, 16}));
  EXPECT_EQ(out.count("final_k"), 0u);
  check_gradients(r);
}

TEST(ModuleRun, AttentionStepEqualsForwardWithAndWithoutWindow) {
  const int64_t B = 2, T = 9, D = 32, hd = 8;
  for (int64_t kv : {4, 2, 1})
    for (int64_t window : {0, 1, 3, 20}) {
      SCOPED_TRACE("kv " + std::to_string(kv) + " window " + std::to_string(window));
      const auto r = request("attention", attention_params(D, 4, kv, hd, 10 + kv), B, T, D,
                             {{"window", std::to_string(window)}, {"num_heads", "4"}}, false);
      const auto out = run(r);
      expect_bitwise(out.at("output"), out.at("output_step"), "attention output_step");
      EXPECT_EQ(out.count("grad.input"), 0u);
      // The values held at the end: the last min(T, w) positions' x Wvᵀ, oldest first.
      const int64_t held = window == 0 ? T : std::min(T, window), kvd = kv * hd;
      const Tensor& v = out.at("final_v");
      ASSERT_EQ(v.shape, (Shape{B, held, kvd}));
      ASSERT_EQ(out.at("final_k").shape, (Shape{B, held, kvd}));
      const Tensor& wv = *r.params.find("v_proj.weight");
      for (int64_t s = 0; s < B; ++s)
        for (int64_t i = 0; i < held; ++i)
          for (int64_t c = 0; c < kvd; ++c) {
            double want = 0;
            for (int64_t k = 0; k < D; ++k)
              want += double(r.input.f32()[(s * T + T - held + i) * D + k]) * wv.f32()[c * D + k];
            ASSERT_NEAR(v.f32()[(s * held + i) * kvd + c], want, 1e-5) << s << " " << i << " " << c;
          }
    }
}

TEST(ModuleRun, AttentionGradientsMatchDifferences) {
  check_gradients(request("attention", attention_params(16, 4, 2, 4, 30), 2, 6, 16, {{"window", "3"}, {"head_dim", "4"}}));
  check_gradients(request("swa", attention_params(16, 2, 1, 8, 40), 1, 5, 16, {{"num_heads", "2"}, {"rope_theta", "500"}}));
}

// mamba_simple's final conv_state: the last k_c pre-conv inputs x = W_in[:E] h,
// oldest first, zeros before the first row (T < k_c included).
TEST(ModuleRun, MambaExportsTheReferenceConvState) {
  const int64_t D = 8, E = 16, N = 4, R = 2, K = 4, B = 2;
  for (int64_t T : {1, 2, 3, 4, 7}) {
    SCOPED_TRACE("T " + std::to_string(T));
    WeightSet p = params_of({{"in_proj.weight", {2 * E, D}},
                             {"conv1d.weight", {E, 1, K}},
                             {"conv1d.bias", {E}},
                             {"x_proj.weight", {R + 2 * N, E}},
                             {"dt_proj.weight", {E, R}},
                             {"dt_proj.bias", {E}},
                             {"A_log", {E, N}},
                             {"D", {E}},
                             {"out_proj.weight", {D, E}}},
                            50);
    const auto r = request("mamba", std::move(p), B, T, D, {}, false);
    const auto out = run(r);
    expect_bitwise(out.at("output"), out.at("output_step"), "mamba output_step");
    const Tensor& c = out.at("final_conv_state");
    ASSERT_EQ(c.shape, (Shape{B, E, K}));
    ASSERT_EQ(out.at("final_ssm_state").shape, (Shape{B, E, N}));
    const Tensor& w = *r.params.find("in_proj.weight");
    for (int64_t s = 0; s < B; ++s)
      for (int64_t e = 0; e < E; ++e)
        for (int64_t j = 0; j < K; ++j) {
          const int64_t t = T - K + j;
          double want = 0;
          for (int64_t k = 0; t >= 0 && k < D; ++k) want += double(r.input.f32()[(s * T + t) * D + k]) * w.f32()[e * D + k];
          ASSERT_NEAR(c.f32()[(s * E + e) * K + j], want, 1e-5) << s << " " << e << " " << j;
        }
  }
}

TEST(ModuleRun, ShapesComeFromTheTensors) {
  // head_dim or num_heads is enough for attention; the KV heads follow from k_proj.
  auto a = run(request("attention", attention_params(16, 4, 2, 4, 50), 1, 3, 16, {{"num_heads", "4"}}, false));
  auto b = run(request("attention", attention_params(16, 4, 2, 4, 50), 1, 3, 16, {{"head_dim", "4"}}, false));
  expect_bitwise(a.at("output"), b.at("output"), "num_heads vs head_dim");
  EXPECT_EQ(a.at("final_k").shape, (Shape{1, 3, 8}));
  // se's reduction from fc1, token-mix's kernel from its weight; a global
  // context looks ahead, so it has no step path.
  WeightSet se = params_of({{"fc1.weight", {4, 16}}, {"fc1.bias", {4}}, {"fc2.weight", {16, 4}}, {"fc2.bias", {16}}}, 60);
  auto s = run(request("se", se, 2, 4, 16, {{"ctx_mode", "global"}}));
  EXPECT_EQ(s.count("output_step"), 0u);
  EXPECT_EQ(s.at("grad.fc1.weight").shape, (Shape{4, 16}));
  WeightSet tm = params_of({{"weight", {16, 1, 3}}, {"bias", {16}}}, 70);
  auto t = run(request("token-mix", tm, 2, 5, 16, {}));
  expect_bitwise(t.at("output"), t.at("output_step"), "token-mix output_step");
}

TEST(ModuleRun, RmsNormEpsAndBf16Input) {
  WeightSet w = params_of({{"weight", {8}}}, 80);
  ModuleRunRequest r = request("rmsnorm", w, 1, 2, 8, {{"eps", "0.25"}}, false);
  const auto out = run(r);
  for (int64_t row = 0; row < 2; ++row) {
    double ms = 0;
    for (int64_t i = 0; i < 8; ++i) ms += std::pow(double(r.input.f32()[row * 8 + i]), 2) / 8;
    for (int64_t i = 0; i < 8; ++i)
      EXPECT_NEAR(out.at("output").f32()[row * 8 + i], w.find("weight")->f32()[i] * r.input.f32()[row * 8 + i] / std::sqrt(ms + 0.25), 1e-5);
  }
  ModuleRunRequest half = r;
  half.input = r.input.to(DType::BF16);
  ModuleRunRequest rounded = r;
  rounded.input = half.input.to(DType::F32);
  expect_bitwise(run(half).at("output"), run(rounded).at("output"), "BF16 input converted");
}

TEST(ModuleRun, RequestErrorsNameTheCause) {
  auto err = [](const ModuleRunRequest& r) { return test::error_of([&] { run_module(r, Exec::defaults()); }); };
  const WeightSet att = attention_params(16, 4, 2, 4, 90);
  EXPECT_NE(err(request("attention", att, 1, 3, 16, {})).find("num_heads=N or head_dim=N"), std::string::npos);
  EXPECT_NE(err(request("attention", att, 1, 3, 16, {{"num_heads", "3"}})).find("not a multiple of num_heads"), std::string::npos);
  EXPECT_NE(err(request("attention", att, 1, 3, 16, {{"num_heads", "4"}, {"window", "-1"}})).find("--opt 'window'"), std::string::npos);
  EXPECT_NE(err(request("attention", att, 1, 3, 16, {{"num_heads", "4"}, {"window", "x"}})).find("expected an integer"), std::string::npos);
  EXPECT_NE(err(request("attention", att, 1, 3, 16, {{"num_heads", "4"}, {"hidden_size", "8"}})).find("does not match"), std::string::npos);
  EXPECT_NE(err(request("attention", att, 1, 3, 16, {{"num_heads", "4"}, {"num_heads", "4"}})).find("given twice"), std::string::npos);
  ModuleRunRequest r = request("attention", att, 1, 3, 16, {{"num_heads", "4"}});
  r.dy = randn({1, 3, 8}, 1, 1.0);
  EXPECT_NE(err(r).find("tensor 'dy' has shape [1, 3, 8]"), std::string::npos);
  r = request("attention", att, 1, 3, 16, {{"num_heads", "4"}});
  r.input = randn({3, 16}, 1, 1.0);
  EXPECT_NE(err(r).find("expected [B, T, D]"), std::string::npos);
}

// --- through the binary -----------------------------------------------------

struct Files {
  std::string dir, p, x, out;
};

Files write_case(const std::string& tag, const WeightSet& params, const NamedTensors& inputs) {
  Files f;
  f.dir = test::make_temp_dir(tag);
  f.p = f.dir + "/P.safetensors";
  f.x = f.dir + "/X.safetensors";
  f.out = f.dir + "/OUT.safetensors";
  NamedTensors p;
  for (const auto& [name, t] : params.tensors) p.emplace_back(name, t);
  write_safetensors(f.p, p);
  write_safetensors(f.x, inputs);
  return f;
}

test::CliResult module_run_cli(const Files& f, const std::string& kind, const std::string& extra = "") {
  return run_cli("module-run --kind " + kind + " --params '" + f.p + "' --input '" + f.x + "' -o '" + f.out + "'" + extra);
}

// One line on stderr, starting with "strata: error:", containing every needle.
void expect_one_line_error(const test::CliResult& r, std::initializer_list<std::string> needles) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("strata: error:", 0), 0u) << r.err;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
}

TEST(CliModuleRun, WritesTheTensorsRunModuleReturns) {
  const WeightSet att = attention_params(16, 4, 2, 4, 100);
  const Tensor x = randn({2, 4, 16}, 7, 1.0), dy = randn({2, 4, 16}, 8, 1.0);
  const Files f = write_case("mr-ok", att, {{"input", x}, {"dy", dy}});
  auto r = module_run_cli(f, "attention", " --opt window=2 num_heads=4 --opt rope_theta=1000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  WeightSet got;
  read_safetensors(f.out, got);
  ModuleRunRequest req = request("attention", att, 2, 4, 16, {{"window", "2"}, {"num_heads", "4"}, {"rope_theta", "1000"}});
  req.input = x;
  req.dy = dy;
  std::vector<std::string> names;
  for (const auto& [name, want] : run_module(req, Exec::defaults())) {
    names.push_back(name);
    ASSERT_TRUE(got.find(name)) << name;
    expect_bitwise(*got.find(name), want, name);
  }
  EXPECT_EQ(got.tensors.size(), names.size());
  for (const char* n : {"output", "output_step", "final_k", "final_v", "grad.input", "grad.q_proj.weight", "grad.o_proj.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

TEST(CliModuleRun, BadInputsGiveOneLineErrors) {
  const WeightSet att = attention_params(16, 4, 2, 4, 110);
  const Tensor x = randn({1, 3, 16}, 9, 1.0);
  const Files ok = write_case("mr-err", att, {{"input", x}});
  expect_one_line_error(module_run_cli(ok, "nope"), {"unknown module kind 'nope'", "attention", "mlp"});
  expect_one_line_error(module_run_cli(ok, "attention", " --opt num_heads=4 --opt windw=3"),
                        {"--opt 'windw'", "accepted:", "window", "num_heads", "rope_theta"});
  expect_one_line_error(module_run_cli(ok, "attention", " --opt num_heads"), {"expected key=value"});

  WeightSet missing = att;
  missing.tensors.erase("k_proj.weight");
  const Files m = write_case("mr-missing", missing, {{"input", x}});
  expect_one_line_error(module_run_cli(m, "attention", " --opt num_heads=4 num_kv_heads=2"),
                        {m.p, "missing tensor 'k_proj.weight'", "[8, 16]"});

  WeightSet wrong = att;
  wrong.tensors["o_proj.weight"] = randn({16, 15}, 1, 1.0);
  const Files w = write_case("mr-shape", wrong, {{"input", x}});
  expect_one_line_error(module_run_cli(w, "attention", " --opt num_heads=4"),
                        {w.p, "tensor 'o_proj.weight' has shape [16, 15], expected [16, 16]"});

  WeightSet extra = att;
  extra.tensors["m.q_proj.weight"] = randn({16, 16}, 1, 1.0);
  const Files e = write_case("mr-extra", extra, {{"input", x}});
  expect_one_line_error(module_run_cli(e, "attention", " --opt num_heads=4"),
                        {e.p, "'m.q_proj.weight' is not a parameter of 'attention'", "q_proj.weight"});

  const Files noin = write_case("mr-noinput", att, {{"x", x}});
  expect_one_line_error(module_run_cli(noin, "attention", " --opt num_heads=4"), {noin.x, "'x'"});

  const Files bad = write_case("mr-malformed", att, {{"input", x}});
  test::write_file(bad.p, std::string("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1", 15));
  expect_one_line_error(module_run_cli(bad, "attention", " --opt num_heads=4"), {bad.p});
  test::write_file(bad.x, "short");
  expect_one_line_error(module_run_cli(Files{bad.dir, ok.p, bad.x, bad.out}, "attention", " --opt num_heads=4"), {bad.x});
}

// The bare recurrences: the core's gradients against central differences of
// its own output (grad.gk through the log gates included), and the errors.
TEST(CliModuleRun, CoresWriteOutputStateAndGradients) {
  const int64_t B = 2, T = 9, H = 2, dk = 3, dv = 4;
  Tensor gk = randn({B, T, H, dk}, 5, 1.0);
  for (int64_t i = 0; i < gk.numel(); ++i) gk.f32()[i] = -std::fabs(gk.f32()[i]);
  CoreRunRequest r;
  r.kind = "gla-core";
  r.inputs.add("q", randn({B, T, H, dk}, 1, 1.0), "X");
  r.inputs.add("k", randn({B, T, H, dk}, 2, 1.0), "X");
  r.inputs.add("v", randn({B, T, H, dv}, 3, 1.0), "X");
  r.inputs.add("gk", gk, "X");
  r.inputs.add("initial_state", randn({B, H, dk, dv}, 4, 1.0), "X");
  r.inputs.add("dy", randn({B, T, H, dv}, 6, 1.0), "X");
  r.options = {{"chunk", "4"}};
  std::map<std::string, Tensor> out;
  for (auto& [n, t] : run_core(r, Exec::defaults())) out[n] = t;
  ASSERT_EQ(out.at("output").shape, (Shape{B, T, H, dv}));
  ASSERT_EQ(out.at("final_state").shape, (Shape{B, H, dk, dv}));
  auto core_loss = [&](const CoreRunRequest& req) {
    CoreRunRequest q = req;
    q.inputs.tensors.erase("dy");
    const NamedTensors o = run_core(q, Exec::defaults());
    double l = 0;
    for (int64_t i = 0; i < o[0].second.numel(); ++i) l += double(o[0].second.f32()[i]) * r.inputs.find("dy")->f32()[i];
    return l;
  };
  for (const char* name : {"q", "k", "v", "gk"}) {
    for (int64_t i = 0; i < r.inputs.find(name)->numel(); i += 5) {
      CoreRunRequest up = r, down = r;
      const float h = 1e-2f;
      up.inputs.tensors[name] = r.inputs.find(name)->to(DType::F32);
      down.inputs.tensors[name] = r.inputs.find(name)->to(DType::F32);
      down.inputs.tensors[name].f32()[i] -= h;
      if (std::string(name) == "gk") {  // one-sided: gk + h may be > 0
        const double fd = (core_loss(r) - core_loss(down)) / h;
        EXPECT_NEAR(out.at("grad.gk").f32()[i], fd, 5e-2 * (1 + std::fabs(fd))) << i;
        continue;
      }
      up.inputs.tensors[name].f32()[i] += h;
      const double fd = (core_loss(up) - core_loss(down)) / (2 * h);
      EXPECT_NEAR(out.at(std::string("grad.") + name).f32()[i], fd, 2e-2 * (1 + std::fabs(fd))) << name << " " << i;
    }
  }
}

TEST(CliModuleRun, CoreErrorsNameTheCause) {
  const Tensor q = randn({1, 3, 2, 4}, 1, 1.0), v = randn({1, 3, 2, 5}, 2, 1.0);
  Tensor gk = randn({1, 3, 2, 4}, 3, 1.0);
  const Files pos = write_case("core-pos", WeightSet{}, {{"q", q}, {"k", q}, {"v", v}, {"gk", gk}});
  expect_one_line_error(module_run_cli(pos, "gla-core"), {pos.x, "'gk'", "must be <= 0"});
  const Files miss = write_case("core-miss", WeightSet{}, {{"q", q}, {"v", v}});
  expect_one_line_error(module_run_cli(miss, "retention-core"), {miss.x, "missing tensor 'k'"});
  const Files gam = write_case("core-gamma", WeightSet{}, {{"q", q}, {"k", q}, {"v", v}, {"gamma", randn({3}, 4, 1.0)}});
  expect_one_line_error(module_run_cli(gam, "retention-core"), {gam.x, "'gamma'", "[2]"});
  const Files par = write_case("core-params", attention_params(4, 1, 1, 4, 5), {{"q", q}, {"k", q}, {"v", v}});
  expect_one_line_error(module_run_cli(par, "retention-core"), {par.p, "unexpected tensor", "no parameters"});
  // Without --params at all: fine for a core, required for a module.
  auto ok = run_cli("module-run --kind retention-core --input '" + miss.x + "' -o '" + miss.out + "'");
  EXPECT_NE(ok.err.find("missing tensor 'k'"), std::string::npos) << ok.err;
  expect_one_line_error(run_cli("module-run --kind gla --input '" + miss.x + "' -o '" + miss.out + "'"),
                        {"--params is required"});
  const Files good = write_case("core-ok", WeightSet{}, {{"q", q}, {"k", q}, {"v", v}});
  expect_one_line_error(module_run_cli(good, "retention-core", " --opt num_heads=2"), {"--opt 'num_heads'", "chunk"});
  auto r = run_cli("module-run --kind retention-core --input '" + good.x + "' -o '" + good.out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  WeightSet got;
  read_safetensors(good.out, got);
  ASSERT_TRUE(got.find("output") && got.find("final_state"));
  EXPECT_EQ(got.find("final_state")->shape, (Shape{1, 2, 4, 5}));
}

}  // namespace
}  // namespace strata
