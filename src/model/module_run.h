// One registered module run on given tensors (`strata module-run`), so other
// implementations can be compared with strata's: the full forward, the same
// rows decoded one token at a time, the final decode states and, given an
// output gradient, the input and parameter gradients. Tensor names and shapes
// are in docs/formats.md ("module-run").
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/weights.h"
#include "io/safetensors.h"
#include "kernels/exec.h"

namespace strata {

struct ModuleRunRequest {
  std::string kind;  // any registered kind or alias
  // The module's parameters under its own names, without a layer prefix
  // (attention: "q_proj.weight", ...); params.origin names the file in errors.
  WeightSet params;
  Tensor input;              // [B, T, D]: B sequences of T rows (F32, BF16 or F16)
  std::optional<Tensor> dy;  // [B, T, D_out]: adds a training forward and backward
  // key=value pairs (values as text: JSON numbers, true/false, or a bare
  // string): the kind's declared options and the config fields below.
  std::vector<std::pair<std::string, std::string>> options;
  std::string input_origin = "input";  // the input file, for errors
};

// Result tensors, in this order: "output" [B, T, D_out]; "output_step"
// (causal modules; every row decoded by step() from an empty state);
// "final_<name>" [B, ...] for what each sequence's state exports after the
// steps (LayerState::export_tensors; mamba's conv_state widened to the
// reference's k_c columns); with dy "grad.input" [B, T, D] and
// "grad.<param>" for every trainable parameter, in declaration order.
NamedTensors run_module(const ModuleRunRequest& req, const Exec& exec);

// Reads P (the parameters) and X ("input", optionally "dy") into a request;
// any other tensor in X is an error naming the file.
ModuleRunRequest module_run_request(const std::string& kind, const std::string& params_path,
                                    const std::string& input_path,
                                    const std::vector<std::pair<std::string, std::string>>& options);

// The keys --opt accepts for `kind`: the config fields (with their other
// names), then the kind's own options.
std::vector<std::string> module_run_keys(const std::string& kind);

// The bare recurrences (module_run_cores.cpp): "gla-core" and
// "retention-core" read q, k [B, T, H, dk], v [B, T, H, dv], gk [B, T, H, dk]
// (gla-core: the log forget gates, <= 0) or gamma [H] (retention-core,
// optional: 1 - 2^(-5-h)), optionally initial_state [B, H, dk, dv] and dy
// [B, T, H, dv]; q is scaled by dk^-1/2. They write output [B, T, H, dv] and
// final_state [B, H, dk, dv], with dy grad.q, grad.k, grad.v (and grad.gk).
struct CoreRunRequest {
  std::string kind;
  WeightSet params;  // must hold no tensors (origin empty: no file given)
  WeightSet inputs;
  std::vector<std::pair<std::string, std::string>> options;  // chunk=N only
};
bool is_core_kind(const std::string& kind);
NamedTensors run_core(const CoreRunRequest& req, const Exec& exec);
CoreRunRequest core_run_request(const std::string& kind, const std::string& params_path, const std::string& input_path,
                                const std::vector<std::pair<std::string, std::string>>& options);

}  // namespace strata
