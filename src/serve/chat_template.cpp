#include "serve/chat_template.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "strata/error.h"

namespace strata::serve {

namespace fs = std::filesystem;

std::optional<ChatFormat> recognise_chat_template(const std::string& t) {
  auto has = [&](const char* s) { return t.find(s) != std::string::npos; };
  if (has("<|im_start|>") && has("<|im_end|>")) return ChatFormat::kChatML;
  if (has("<|user|>") && has("<|assistant|>")) return ChatFormat::kZephyr;
  if (has("[INST]") && has("[/INST]")) return ChatFormat::kLlama2;
  return std::nullopt;
}

std::string model_chat_template(const std::string& model_path) {
  if (is_gguf(model_path)) return GgufFile::open(model_path).get_string("tokenizer.chat_template", "");
  const fs::path dir = fs::is_directory(model_path) ? fs::path(model_path) : fs::path(model_path).parent_path();
  const fs::path cfg = dir / "tokenizer_config.json";
  if (!fs::exists(cfg)) return "";
  std::ifstream in(cfg);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(cfg.string(), ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object() || !j.contains("chat_template")) return "";
  const auto& t = j["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  // A list of named templates: the "default" one.
  if (t.is_array())
    for (const auto& item : t)
      if (item.is_object() && item.value("name", "") == "default" && item.contains("template") && item["template"].is_string())
        return item["template"].get<std::string>();
  fail(cfg.string(), ": chat_template is neither a string nor a list with a \"default\" template");
}

ChatFormat choose_chat_format(const std::string& flag, const std::string& model_path) {
  if (!flag.empty()) return parse_chat_format(flag);
  const std::string t = model_chat_template(model_path);
  if (t.empty()) return ChatFormat::kZephyr;
  if (auto f = recognise_chat_template(t)) return *f;
  fail(model_path, ": its chat template is not one strata knows (zephyr, chatml, llama-2); pass --chat-template NAME");
}

}  // namespace strata::serve
