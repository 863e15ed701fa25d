// strata bench: prefill and decode speed of a model (or a preset with random
// weights) and the peak resident memory.
#include <sys/resource.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <optional>
#include <chrono>
#include <cstdio>
#include <map>

#include "cli/common.h"
#include "core/cpu.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "eval/bandwidth.h"
#include "kernels/exec.h"
#include "kernels/kernels.h"
#include "model/stack.h"
#include "strata/error.h"

namespace strata::cli {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Bytes of weights one decoded token reads: every matrix once, except that
// the embedding table contributes one row (unless it doubles as the head).
// What one decode step reads from memory: every weight (one embedding row
// when the head is separate) and the decode state of a sequence `context`
// positions long (KV rows within reach, SSM and conv states).
double decode_bytes_per_token(const Model& m, int64_t context) {
  double bytes = 0;
  for (const StateUse& u : state_use(build_stack(m.config())))
    bytes += static_cast<double>(u.modules) * static_cast<double>(u.each.at(context));
  const Config& c = m.config();
  for (const auto& [name, t] : m.named_tensors()) {
    if (name == "model.embed_tokens.weight" && !c.tie_word_embeddings)
      bytes += static_cast<double>(t.nbytes()) / static_cast<double>(c.vocab_size);
    else bytes += static_cast<double>(t.nbytes());
  }
  return bytes;
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace

void register_bench(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string preset, dtype;
    int64_t prompt_len = 512, gen = 128;
    int repeat = 1;
    uint64_t seed = 0;
    bool json = false, no_probe = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("bench", "measure prefill and decode speed");
  auto* m = add_model_flags(cmd, o->model, false);
  auto* p = cmd->add_option("--preset", o->preset, "random-weight model of a preset configuration");
  m->excludes(p);
  cmd->add_option("--dtype", o->dtype,
                  "dtype of the matrices: bf16 or f32 (default: bf16 for --preset, the stored dtype for -m)")
      ->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--prompt-len", o->prompt_len, "prompt tokens")->check(above(0));
  cmd->add_option("--gen", o->gen, "decoded tokens")->check(at_least(0));
  cmd->add_option("--repeat", o->repeat, "runs; medians are reported")->check(above(0));
  cmd->add_option("--seed", o->seed, "seed of the random prompt and weights");
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->add_flag("--no-probe", o->no_probe, "skip the DRAM bandwidth probe (and the roofline line)");
  cmd->callback([o] {
    if (o->model.path.empty() == o->preset.empty()) fail("bench: give -m MODEL or --preset NAME");
    std::unique_ptr<Model> model;
    std::string name = o->model.path;
    std::optional<DType> dt;
    if (!o->dtype.empty()) dt = o->dtype == "bf16" ? DType::BF16 : DType::F32;
    if (!o->preset.empty()) {
      apply_threads(o->model.threads);
      name = o->preset;
      Config cfg = preset_config(o->preset);
      cfg.torch_dtype = dt.value_or(DType::BF16) == DType::BF16 ? "bfloat16" : "float32";  // as `init --dtype` writes it
      model = Model::random(cfg, o->seed, dt.value_or(DType::BF16));
    } else {
      model = load(o->model, false, dt).model;
    }
    // The dtype holding most of the matrices' bytes (quantized files mix types).
    std::map<std::string, size_t> matrix_bytes;
    for (const ParamInfo& p : model->param_info())
      if (p.shape.size() == 2) matrix_bytes[std::string(dtype_name(p.dtype))] += row_bytes(p.dtype, shape_numel(p.shape));
    std::string dtype = std::string(dtype_name(model->param_info().front().dtype));
    size_t most = 0;
    for (const auto& [name, bytes] : matrix_bytes)
      if (bytes > most) most = bytes, dtype = name;
    const Config& c = model->config();
    Rng rng(o->seed + 1);
    std::vector<int32_t> prompt(static_cast<size_t>(o->prompt_len));
    for (auto& t : prompt) t = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(c.vocab_size));

    using clock = std::chrono::steady_clock;
    std::vector<double> prefill, decode;
    std::vector<float> logits;
    for (int r = 0; r < o->repeat; ++r) {
      auto st = model->new_state();
      auto t0 = clock::now();
      SeqInput in{prompt, st.get()};
      model->forward({&in, 1}, Logits::Last, logits);
      auto t1 = clock::now();
      State* sp = st.get();
      for (int64_t i = 0; i < o->gen; ++i) {
        const int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        model->step({&next, 1}, {&sp, 1}, logits);
      }
      auto t2 = clock::now();
      prefill.push_back(o->prompt_len / std::chrono::duration<double>(t1 - t0).count());
      if (o->gen > 0) decode.push_back(o->gen / std::chrono::duration<double>(t2 - t1).count());
    }
    const double rss = peak_rss_mib();  // before the probe's own buffer
    const BandwidthResult bw = o->no_probe ? BandwidthResult() : read_bandwidth(model->exec());
    const double probe = bw.gb_s;
    const double decode_tok_s = decode.empty() ? 0.0 : median(decode);
    // The state at the middle of the decoded tokens stands for all of them.
    const double bytes_per_token = decode_bytes_per_token(*model, o->prompt_len + o->gen / 2);
    const double decode_gb_s = decode_tok_s * bytes_per_token / 1e9;
    nlohmann::json j{{"model", name},
                     {"dtype", dtype},
                     {"params", model->num_params()},
                     {"isa", std::string(isa_name(model->exec().isa()))},
                     {"threads", num_threads()},
                     {"prompt_len", o->prompt_len},
                     {"gen", o->gen},
                     {"repeat", o->repeat},
                     {"prefill_tok_s", median(prefill)},
                     {"decode_tok_s", decode_tok_s},
                     {"decode_gb_s", decode_gb_s},
                     {"decode_bytes_per_token", bytes_per_token},
                     {"probe_gb_s", probe},
                     {"probe_streams_per_thread", bw.streams},
                     {"roofline_fraction", probe > 0 ? decode_gb_s / probe : 0.0},
                     {"peak_rss_mib", rss}};
    if (o->json) {
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("model %s (%s, %lld params), isa %s, %d threads\n", name.c_str(), dtype.c_str(),
                (long long)model->num_params(), std::string(isa_name(model->exec().isa())).c_str(), num_threads());
    std::printf("prefill  %6lld tokens  %9.2f tok/s\n", (long long)o->prompt_len, j["prefill_tok_s"].get<double>());
    std::printf("decode   %6lld tokens  %9.2f tok/s\n", (long long)o->gen, j["decode_tok_s"].get<double>());
    if (probe > 0)
      std::printf("roofline decode reads %.2f GB/token: %.1f GB/s = %.0f%% of the %.1f GB/s read probe (best with %d "
                  "stream(s) per thread)\n",
                  bytes_per_token / 1e9, decode_gb_s, 100 * decode_gb_s / probe, probe, bw.streams);
    std::printf("peak RSS %.1f MiB\n", j["peak_rss_mib"].get<double>());
  });
}

}  // namespace strata::cli
