// strata logits: the prompt's token ids and, per position, the top-K logits and
// the argmax, for checking a model against other implementations.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "cli/common.h"

namespace strata::cli {

void register_logits(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string prompt;
    int top = 5;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("logits", "print the top logits at every position of a prompt");
  add_model_flags(cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompt, "prompt text")->required();
  cmd->add_option("--top", o->top, "logits to show per position")->check(above(0));
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] {
    Loaded l = load(o->model, true);
    std::vector<int32_t> ids = l.tokenizer->encode(o->prompt, l.add_bos);
    if (ids.empty()) ids.push_back(l.model->config().bos_token_id);
    std::vector<float> logits;
    SeqInput in{ids};
    l.model->forward({&in, 1}, Logits::All, logits);
    const int64_t V = l.model->config().vocab_size;
    const int k = static_cast<int>(std::min<int64_t>(o->top, V));
    nlohmann::json out;
    out["tokens"] = ids;
    out["positions"] = nlohmann::json::array();
    std::vector<int32_t> order(static_cast<size_t>(V));
    for (size_t p = 0; p < ids.size(); ++p) {
      const float* row = &logits[p * V];
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return row[a] > row[b] || (row[a] == row[b] && a < b);
      });
      nlohmann::json top = nlohmann::json::array();
      for (int i = 0; i < k; ++i) top.push_back({{"id", order[i]}, {"logit", row[order[i]]}});
      out["positions"].push_back({{"pos", p}, {"token", ids[p]}, {"argmax", order[0]}, {"top", top}});
    }
    if (o->json) {
      std::printf("%s\n", out.dump().c_str());
      return;
    }
    std::printf("tokens:");
    for (int32_t id : ids) std::printf(" %d", id);
    std::printf("\n");
    for (const auto& p : out["positions"]) {
      std::printf("pos %d token %d argmax %d |", p["pos"].get<int>(), p["token"].get<int>(), p["argmax"].get<int>());
      for (const auto& t : p["top"]) std::printf(" %d:%.6f", t["id"].get<int>(), t["logit"].get<float>());
      std::printf("\n");
    }
  });
}

}  // namespace strata::cli
