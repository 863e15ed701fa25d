// strata logits: the prompt's token ids and, per position, the top-K logits and
// the argmax, for checking a model against other implementations.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "cli/common.h"
#include "model/hypernet.h"
#include "strata/error.h"

namespace strata::cli {

void register_logits(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string prompt;
    int top = 5;
    bool json = false, hypernet = false;
    std::string format = "zephyr";
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("logits", "print the top logits at every position of a prompt");
  add_model_flags(cmd, o->model);
  add_self_extend_flag(cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompt, "prompt text")->required();
  cmd->add_option("--top", o->top, "logits to show per position")->check(above(0));
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->add_flag("--hypernet", o->hypernet,
                "the prompt as a chat user turn after [BOS] and the soft prompt the model's hypernetwork writes from "
                "it (the soft rows are not shown)");
  cmd->add_option("--template", o->format, "--hypernet: chat template (zephyr, chatml, llama-2)");
  cmd->callback([o] {
    Loaded l = load(o->model, true);
    const int32_t bos = l.model->config().bos_token_id;
    std::vector<int32_t> ids;
    std::vector<float> logits, soft;
    int64_t soft_rows = 0;  // positions 1 .. soft_rows are the soft prompt (--hypernet)
    if (o->hypernet) {
      if (!l.model->hypernet()) fail("logits --hypernet: ", o->model.path, " has no hypernetwork");
      const std::vector<int32_t> query = chat_query(*l.tokenizer, bos, o->prompt, o->format);
      soft = first_soft_prompt(*l.model, query);
      soft_rows = l.model->hypernet()->soft_tokens();
      ids = {bos};
      ids.insert(ids.end(), query.begin(), query.end());
      SeqInput in{{Segment::of_tokens({&ids[0], 1}), Segment::of_embeds(soft.data(), soft_rows),
                   Segment::of_tokens(std::span<const int32_t>(ids).subspan(1))}};
      l.model->forward({&in, 1}, Logits::All, logits);
      logits.erase(logits.begin() + l.model->config().vocab_size,
                   logits.begin() + (1 + soft_rows) * l.model->config().vocab_size);
    } else {
      ids = l.tokenizer->encode(o->prompt, l.add_bos);
      if (ids.empty()) ids.push_back(bos);
      SeqInput in{ids};
      l.model->forward({&in, 1}, Logits::All, logits);
    }
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
