// strata info: configuration, layer pattern, parameter counts per module
// kind, decode-state sizes, dtypes, bytes. With --preset or --config the
// counts come from the declarations alone: nothing is allocated, so the 1.1B
// presets are described instantly.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <map>

#include "cli/common.h"
#include "io/safetensors.h"
#include "model/layers.h"
#include "model/recipes.h"
#include "model/stack.h"
#include "strata/error.h"

namespace strata::cli {

namespace {

using json = nlohmann::ordered_json;  // keeps the declaration order of the groups

bool is_layer_group(const std::string& g) {
  return g != "embed_tokens" && g != "final_norm" && g != "lm_head" && g != "hypernet";
}

// Parameters of one layer on average: everything but the model's own tensors.
int64_t layer_params(const ParamCounts& pc, int64_t layers) {
  int64_t n = pc.total;
  for (const auto& [group, count] : pc.by_group)
    if (!is_layer_group(group)) n -= count;
  return n / layers;
}

// Counts and decode-state sizes of `c` (the modules are built, no weights).
json describe(const Config& c) {
  const Stack stack = build_stack(c);
  const ParamCounts pc = count_params(stack.params);
  json j;
  j["params"] = json::object();
  for (const auto& [group, n] : pc.by_group) j["params"][group] = n;
  j["total_params"] = pc.total;
  j["buffers"] = pc.buffers;
  j["layer_params"] = layer_params(pc, c.num_hidden_layers);
  if (c.recipe == "modified")  // what a modified layer adds over the Llama layer it came from
    j["llama_layer_params"] = layer_params(count_params(with_llama_layers(c)), c.num_hidden_layers);
  j["layers"] = json::array();
  for (const LayerConf& l : c.layers.unit) j["layers"].push_back(describe_layer(l));
  j["layer_repeat"] = c.num_hidden_layers / static_cast<int64_t>(c.layers.unit.size());
  j["layer_overrides"] = json::object();
  for (const auto& [i, l] : c.layers.overrides) j["layer_overrides"][std::to_string(i)] = describe_layer(l);
  if (c.has_hypernet()) {
    const Config::Hypernet& h = c.hypernet;
    j["hypernet"] = {{"soft_tokens", h.soft_tokens}, {"layers", h.layers}, {"heads", h.heads_for(c.hidden_size)},
                     {"intermediate_size", h.ffn_for(c.hidden_size)}, {"rope_theta", h.rope_theta}, {"chunk", h.chunk}};
  }
  // Decode state per sequence: per module kind, and in all at the full context.
  j["state"] = json::object();
  int64_t at_ctx = 0;
  for (const StateUse& u : state_use(stack)) {
    json& e = j["state"][u.kind];
    if (e.is_null()) e = json{{"modules", 0}, {"fixed_bytes", 0}, {"bytes_per_token", 0}};
    e["modules"] = e.value("modules", int64_t{0}) + u.modules;
    e["fixed_bytes"] = e.value("fixed_bytes", int64_t{0}) + u.modules * u.each.fixed_bytes;
    e["bytes_per_token"] = e.value("bytes_per_token", int64_t{0}) + u.modules * u.each.bytes_per_token;
    e["max_tokens"] = u.each.max_tokens;  // 0: grows with the sequence
    at_ctx += u.modules * u.each.at(c.max_position_embeddings);
  }
  j["state_bytes_at_context"] = at_ctx;
  return j;
}

void print_text(const Config& c, const json& j) {
  const auto [type, arch] = model_type_for(c);
  std::printf("recipe      %s (%s, model_type %s)\n", c.recipe.c_str(), arch.c_str(), type.c_str());
  std::printf("shape       %lld layers, hidden %lld, heads %lld (kv %lld, head_dim %lld), ffn %lld\n",
              (long long)c.num_hidden_layers, (long long)c.hidden_size, (long long)c.num_attention_heads,
              (long long)c.num_key_value_heads, (long long)c.head_dim, (long long)c.intermediate_size);
  std::printf("vocab       %lld, context %lld, rope_theta %g, eps %g, tied head: %s\n", (long long)c.vocab_size,
              (long long)c.max_position_embeddings, c.rope_theta, c.rms_norm_eps, c.tie_word_embeddings ? "yes" : "no");
  std::printf("layers      %lld x", (long long)j["layer_repeat"].get<int64_t>());
  for (const auto& l : j["layers"]) std::printf(" %s", l.get<std::string>().c_str());
  std::printf("\n");
  for (const auto& [i, l] : j["layer_overrides"].items())
    std::printf("            layer %s: %s\n", i.c_str(), l.get<std::string>().c_str());
  if (j.contains("hypernet")) {
    const json& h = j["hypernet"];
    std::printf("hypernet    %lld soft tokens from a %lld-layer bidirectional encoder (heads %lld, ffn %lld, "
                "rope_theta %g), chunks of %lld answer tokens\n",
                (long long)h["soft_tokens"].get<int64_t>(), (long long)h["layers"].get<int64_t>(),
                (long long)h["heads"].get<int64_t>(), (long long)h["intermediate_size"].get<int64_t>(),
                h["rope_theta"].get<double>(), (long long)h["chunk"].get<int64_t>());
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
    std::printf("buffers     %lld values not counted above (saved with the weights, never trained)\n",
                (long long)j["buffers"].get<int64_t>());
  std::printf("\n%-16s %8s %14s %16s %12s\n", "decode state", "modules", "fixed bytes", "bytes / token", "up to");
  for (const auto& [kind, e] : j["state"].items()) {
    const int64_t max = e["max_tokens"];
    std::printf("%-16s %8lld %14lld %16lld %12s\n", kind.c_str(), (long long)e["modules"].get<int64_t>(),
                (long long)e["fixed_bytes"].get<int64_t>(), (long long)e["bytes_per_token"].get<int64_t>(),
                e["bytes_per_token"].get<int64_t>() == 0 ? "constant"
                : max > 0                                ? (std::to_string(max) + " tokens").c_str()
                                                         : "unbounded");
  }
  std::printf("per sequence at the full context (%lld tokens): %.2f MiB\n", (long long)c.max_position_embeddings,
              j["state_bytes_at_context"].get<int64_t>() / 1048576.0);
}

}  // namespace

void register_info(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string preset, config;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("info", "describe a model, a preset or a config.json");
  CLI::Option* m = add_model_flags(cmd, o->model, false);
  auto* preset_opt = cmd->add_option("--preset", o->preset, "a built-in configuration (counted, not allocated)");
  auto* config_opt = cmd->add_option("--config", o->config, "a config.json (counted, not allocated)");
  m->excludes(preset_opt)->excludes(config_opt);
  preset_opt->excludes(config_opt);
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] {
    if (o->model.path.empty() && o->preset.empty() && o->config.empty())
      fail("info: give a model (-m), a preset (--preset) or a config.json (--config)");
    if (!o->preset.empty() || !o->config.empty()) {
      const Config c = o->preset.empty() ? Config::from_json_text(read_file_text(o->config), o->config)
                                         : preset_config(o->preset);
      json j = describe(c);
      if (!o->preset.empty()) j["preset"] = o->preset;
      j["config"] = json::parse(c.to_json_text());
      if (o->json) return void(std::printf("%s\n", j.dump().c_str()));
      std::printf("%s      %s (counted from the declarations, nothing allocated)\n",
                  o->preset.empty() ? "config" : "preset", (o->preset.empty() ? o->config : o->preset).c_str());
      print_text(c, j);
      return;
    }
    Loaded l = load(o->model, false);
    const Config& c = l.model->config();
    json j = describe(c);
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
