// Which built-in chat template (train/sft_data.h) a model's own template
// string is: HF's tokenizer_config.json "chat_template" or GGUF's
// tokenizer.chat_template are Jinja programs; strata recognises the common
// ones by their markers instead of running them.
#pragma once
#include <optional>
#include <string>

#include "train/sft_data.h"

namespace strata::serve {

// zephyr (<|user|> ... <|assistant|>), chatml (<|im_start|>), llama-2
// ([INST]); nothing for anything else.
std::optional<ChatFormat> recognise_chat_template(const std::string& jinja);

// The model's template string: from a GGUF file's metadata, or from
// tokenizer_config.json in (or beside) the model path; "" if there is none.
std::string model_chat_template(const std::string& model_path);

// --chat-template NAME if given; else the model's template if recognised;
// else zephyr when the model has none. A template that is not recognised is
// an error that says which --chat-template to pass.
ChatFormat choose_chat_format(const std::string& flag, const std::string& model_path);

}  // namespace strata::serve
