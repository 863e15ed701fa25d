// strata info: configuration, parameter counts per module kind, dtypes, bytes.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <map>

#include "cli/common.h"

namespace strata::cli {

void register_info(CLI::App& app) {
  struct Opts {
    std::string model;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("info", "describe a model");
  cmd->add_option("-m,--model", o->model, "model")->required();
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] {
    Loaded l = load(o->model, "", false);
    const Config& c = l.model->config();
    std::map<std::string, int64_t> bytes_by_dtype;
    int64_t bytes = 0;
    for (const auto& [name, t] : l.model->named_tensors()) {
      bytes_by_dtype[std::string(dtype_name(t.dtype))] += static_cast<int64_t>(t.nbytes());
      bytes += static_cast<int64_t>(t.nbytes());
    }
    nlohmann::json j;
    j["format"] = l.format;
    j["config"] = nlohmann::json::parse(c.to_json_text());
    j["params"] = nlohmann::json::object();
    for (const auto& [group, n] : l.model->param_counts()) j["params"][group] = n;
    j["total_params"] = l.model->num_params();
    j["bytes"] = bytes;
    j["bytes_by_dtype"] = bytes_by_dtype;
    if (o->json) {
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("format      %s\n", l.format.c_str());
    std::printf("recipe      %s (%s)\n", c.recipe.c_str(), c.architecture.c_str());
    std::printf("layers      %lld, hidden %lld, heads %lld (kv %lld, head_dim %lld), ffn %lld\n",
                (long long)c.num_hidden_layers, (long long)c.hidden_size, (long long)c.num_attention_heads,
                (long long)c.num_key_value_heads, (long long)c.head_dim, (long long)c.intermediate_size);
    std::printf("vocab       %lld, context %lld, rope_theta %g, eps %g, tied head: %s\n", (long long)c.vocab_size,
                (long long)c.max_position_embeddings, c.rope_theta, c.rms_norm_eps,
                c.tie_word_embeddings ? "yes" : "no");
    std::printf("\n%-16s %16s\n", "module", "parameters");
    for (const auto& [group, n] : l.model->param_counts()) std::printf("%-16s %16lld\n", group.c_str(), (long long)n);
    std::printf("%-16s %16lld\n", "total", (long long)l.model->num_params());
    std::printf("\n%-16s %16s\n", "dtype", "bytes");
    for (const auto& [dt, b] : bytes_by_dtype) std::printf("%-16s %16lld\n", dt.c_str(), (long long)b);
    std::printf("%-16s %16lld (%.1f MiB)\n", "total", (long long)bytes, bytes / 1048576.0);
  });
}

}  // namespace strata::cli
