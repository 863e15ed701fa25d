// strata bench: prefill and decode speed of a model (or a preset with random
// weights) and the peak resident memory.
#include <sys/resource.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "cli/common.h"
#include "core/cpu.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "strata/error.h"

namespace strata::cli {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace

void register_bench(CLI::App& app) {
  struct Opts {
    std::string model, preset, dtype = "bf16";
    int64_t prompt_len = 512, gen = 128;
    int repeat = 1, threads = 0;
    uint64_t seed = 0;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("bench", "measure prefill and decode speed");
  auto* m = cmd->add_option("-m,--model", o->model, "model");
  auto* p = cmd->add_option("--preset", o->preset, "random-weight model of a preset configuration");
  m->excludes(p);
  cmd->add_option("--dtype", o->dtype, "weights dtype for --preset")->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--prompt-len", o->prompt_len, "prompt tokens")->check(CLI::PositiveNumber);
  cmd->add_option("--gen", o->gen, "decoded tokens")->check(CLI::NonNegativeNumber);
  cmd->add_option("--repeat", o->repeat, "runs; medians are reported")->check(CLI::PositiveNumber);
  cmd->add_option("--seed", o->seed, "seed of the random prompt and weights");
  cmd->add_flag("--json", o->json, "print one JSON object");
  add_threads_option(cmd, &o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    if (o->model.empty() == o->preset.empty()) fail("bench: give -m MODEL or --preset NAME");
    std::unique_ptr<Model> model;
    std::string name = o->model, dtype = o->dtype;
    if (!o->preset.empty()) {
      name = o->preset;
      model = Model::random(preset_config(o->preset), o->seed, o->dtype == "bf16" ? DType::BF16 : DType::F32);
    } else {
      model = load(o->model, "", false).model;
      dtype = std::string(dtype_name(model->param_info().front().dtype));
    }
    const Config& c = model->config();
    if (o->prompt_len + o->gen > c.max_position_embeddings)
      fail("bench: --prompt-len + --gen = ", o->prompt_len + o->gen, " exceeds the model's context of ",
           c.max_position_embeddings);
    Rng rng(o->seed + 1);
    std::vector<int32_t> prompt(static_cast<size_t>(o->prompt_len));
    for (auto& t : prompt) t = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(c.vocab_size));

    using clock = std::chrono::steady_clock;
    std::vector<double> prefill, decode;
    std::vector<float> logits;
    for (int r = 0; r < o->repeat; ++r) {
      auto st = model->new_state();
      auto t0 = clock::now();
      SeqInput in{prompt, nullptr, 0, st.get()};
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
    nlohmann::json j{{"model", name},
                     {"dtype", dtype},
                     {"params", model->num_params()},
                     {"isa", std::string(isa_name(active_isa()))},
                     {"threads", num_threads()},
                     {"prompt_len", o->prompt_len},
                     {"gen", o->gen},
                     {"repeat", o->repeat},
                     {"prefill_tok_s", median(prefill)},
                     {"decode_tok_s", decode.empty() ? 0.0 : median(decode)},
                     {"peak_rss_mib", peak_rss_mib()}};
    if (o->json) {
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("model %s (%s, %lld params), isa %s, %d threads\n", name.c_str(), dtype.c_str(),
                (long long)model->num_params(), std::string(isa_name(active_isa())).c_str(), num_threads());
    std::printf("prefill  %6lld tokens  %9.2f tok/s\n", (long long)o->prompt_len, j["prefill_tok_s"].get<double>());
    std::printf("decode   %6lld tokens  %9.2f tok/s\n", (long long)o->gen, j["decode_tok_s"].get<double>());
    std::printf("peak RSS %.1f MiB\n", peak_rss_mib());
  });
}

}  // namespace strata::cli
