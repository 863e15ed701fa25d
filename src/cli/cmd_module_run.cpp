// strata module-run: one registered module on tensors from files (the
// forward, token-by-token decode, final states and gradients), so other
// implementations of a module can be compared with strata's. The work is
// run_module (src/model/module_run.h); this is the command line.
#include "cli/common.h"
#include "io/safetensors.h"
#include "model/module_run.h"
#include "strata/error.h"

namespace strata::cli {

void register_module_run(CLI::App& app) {
  struct Opts {
    std::string kind, params, input, output;
    std::vector<std::string> opts;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("module-run", "run one module on given tensors (forward, decode, gradients)");
  cmd->add_option("--kind", o->kind,
                  "module kind (any registered kind or alias, e.g. attention, mlp, swa), or gla-core / retention-core "
                  "(the bare recurrences)")
      ->required();
  cmd->add_option("--params", o->params,
                  "safetensors with the module's parameters under its own names (optional for the cores)");
  cmd->add_option("--input", o->input,
                  "safetensors with 'input' [B, T, D] and optionally 'dy' [B, T, D_out]; for the cores q, k, v, gk or "
                  "gamma, initial_state, dy (docs/formats.md)")
      ->required();
  cmd->add_option("-o,--output", o->output, "safetensors to write (output, output_step, final_*, grad.*)")->required();
  cmd->add_option("--opt", o->opts, "key=value: a config field (hidden_size, num_heads, ...) or an option of the kind")
      ->take_all();
  add_threads_option(cmd, &o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    std::vector<std::pair<std::string, std::string>> options;
    for (const std::string& kv : o->opts) {
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) fail("--opt '", kv, "': expected key=value");
      options.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
    if (is_core_kind(o->kind)) {
      const CoreRunRequest req = core_run_request(o->kind, o->params, o->input, options);
      write_safetensors(o->output, run_core(req, Exec::defaults()), {{"kind", o->kind}});
      return;
    }
    if (o->params.empty()) fail("module-run --kind ", o->kind, ": --params is required (the module's parameters)");
    const ModuleRunRequest req = module_run_request(o->kind, o->params, o->input, options);
    write_safetensors(o->output, run_module(req, Exec::defaults()), {{"kind", o->kind}});
  });
}

}  // namespace strata::cli
