// strata info: configuration, parameter counts per module kind, dtypes, bytes.
// With --preset the counts come from the declarations alone: nothing is
// allocated, so the 1.1B presets are described instantly.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <map>

#include "cli/common.h"
#include "model/convert_modified.h"
#include "strata/error.h"

namespace strata::cli {

namespace {

using json = nlohmann::ordered_json;  // keeps the declaration order of the groups

// Parameters of one layer: everything but the model's own tensors.
int64_t layer_params(const ParamCounts& pc, int64_t layers) {
  int64_t n = pc.total;
  for (const auto& [group, count] : pc.by_group)
    if (group == "embed_tokens" || group == "final_norm" || group == "lm_head") n -= count;
  return n / layers;
}

bool is_layer_group(const std::string& g) { return g != "embed_tokens" && g != "final_norm" && g != "lm_head"; }

// Counts of `c`, and for a modified config what a layer adds over the Llama layer.
json counts_json(const Config& c) {
  const ParamCounts pc = count_params(c);
  json j;
  j["params"] = json::object();
  for (const auto& [group, n] : pc.by_group) j["params"][group] = n;
  j["total_params"] = pc.total;
  j["buffers"] = pc.buffers;
  j["layer_params"] = layer_params(pc, c.num_hidden_layers);
  if (c.recipe == "modified") {
    Config llama = c;
    llama.model_type = "llama";
    llama.architecture = "LlamaForCausalLM";
    llama.recipe = "llama";
    j["llama_layer_params"] = layer_params(count_params(llama), c.num_hidden_layers);
  }
  return j;
}

void print_text(const Config& c, const json& j) {
  std::printf("recipe      %s (%s)\n", c.recipe.c_str(), c.architecture.c_str());
  std::printf("layers      %lld, hidden %lld, heads %lld (kv %lld, head_dim %lld), ffn %lld\n",
              (long long)c.num_hidden_layers, (long long)c.hidden_size, (long long)c.num_attention_heads,
              (long long)c.num_key_value_heads, (long long)c.head_dim, (long long)c.intermediate_size);
  std::printf("vocab       %lld, context %lld, rope_theta %g, eps %g, tied head: %s\n", (long long)c.vocab_size,
              (long long)c.max_position_embeddings, c.rope_theta, c.rms_norm_eps, c.tie_word_embeddings ? "yes" : "no");
  if (c.recipe == "modified") {
    if (c.attention == "differential")
      std::printf("attention   differential, layout %s, subln %s, output scale %s, lambda_init %s\n",
                  c.diff_layout.c_str(), c.diff_subln ? "on" : "off", c.diff_out_scale ? "1 - lambda_init" : "1",
                  c.diff_lambda_init_zero ? "0" : "paper formula");
    else
      std::printf("attention   standard\n");
    std::printf("context     ctx_mode %s, ada_rank %lld, tm_kernel %lld, se_reduction %lld\n", c.ctx_mode.c_str(),
                (long long)c.ada_rank, (long long)c.tm_kernel, (long long)c.se_reduction);
  }
  const int64_t L = c.num_hidden_layers;
  std::printf("\n%-16s %16s %14s\n", "module", "parameters", "per layer");
  for (const auto& [group, n] : j["params"].items()) {
    const int64_t v = n.get<int64_t>();
    if (is_layer_group(group)) std::printf("%-16s %16lld %14lld\n", group.c_str(), (long long)v, (long long)(v / L));
    else std::printf("%-16s %16lld\n", group.c_str(), (long long)v);
  }
  std::printf("%-16s %16lld %14lld\n", "total", (long long)j["total_params"].get<int64_t>(),
              (long long)j["layer_params"].get<int64_t>());
  if (j.contains("llama_layer_params")) {
    const int64_t layer = j["layer_params"], llama = j["llama_layer_params"];
    std::printf("a layer has %lld parameters: the Llama layer's %lld + %lld\n", (long long)layer, (long long)llama,
                (long long)(layer - llama));
  }
  if (j["buffers"].get<int64_t>() > 0)
    std::printf("buffers     %lld values not counted above (lambda_init: one scalar per differential-attention "
                "layer, saved with the weights, never trained)\n",
                (long long)j["buffers"].get<int64_t>());
}

}  // namespace

void register_info(CLI::App& app) {
  struct Opts {
    std::string model, preset;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("info", "describe a model or a preset");
  auto* model_opt = cmd->add_option("-m,--model", o->model, "model");
  auto* preset_opt = cmd->add_option("--preset", o->preset, "a built-in configuration (counted, not allocated)");
  model_opt->excludes(preset_opt);
  preset_opt->excludes(model_opt);
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] {
    if (o->model.empty() && o->preset.empty()) fail("info: give a model (-m) or a preset (--preset)");
    if (!o->preset.empty()) {
      const Config c = preset_config(o->preset);
      json j = counts_json(c);
      j["preset"] = o->preset;
      j["config"] = json::parse(c.to_json_text());
      if (o->json) return void(std::printf("%s\n", j.dump().c_str()));
      std::printf("preset      %s (counted from the declarations, nothing allocated)\n", o->preset.c_str());
      print_text(c, j);
      return;
    }
    Loaded l = load(o->model, "", false);
    const Config& c = l.model->config();
    json j = counts_json(c);
    if (j["total_params"].get<int64_t>() + j["buffers"].get<int64_t>() != l.model->num_params())
      fail(o->model, ": the model holds ", l.model->num_params(), " values, its config declares ",
           j["total_params"].get<int64_t>() + j["buffers"].get<int64_t>());
    std::map<std::string, int64_t> bytes_by_dtype;
    int64_t bytes = 0;
    for (const auto& [name, t] : l.model->named_tensors()) {
      bytes_by_dtype[std::string(dtype_name(t.dtype))] += static_cast<int64_t>(t.nbytes());
      bytes += static_cast<int64_t>(t.nbytes());
    }
    j["format"] = l.format;
    j["config"] = json::parse(c.to_json_text());
    j["bytes"] = bytes;
    j["bytes_by_dtype"] = bytes_by_dtype;
    if (o->json) return void(std::printf("%s\n", j.dump().c_str()));
    std::printf("format      %s\n", l.format.c_str());
    print_text(c, j);
    std::printf("\n%-16s %16s\n", "dtype", "bytes");
    for (const auto& [dt, b] : bytes_by_dtype) std::printf("%-16s %16lld\n", dt.c_str(), (long long)b);
    std::printf("%-16s %16lld (%.1f MiB)\n", "total", (long long)bytes, bytes / 1048576.0);
  });
}

}  // namespace strata::cli
