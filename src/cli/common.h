// Shared pieces of the subcommands: loading a model with its tokenizer, and
// the common flags.
#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "strata/model.h"
#include "strata/tokenizer.h"

namespace strata::cli {

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when not requested
  bool add_bos = true;
  std::string format;  // "hf" or "llama2c"
};

// Loads MODEL; with need_tokenizer, also its tokenizer (`tokenizer_override`
// or tokenizer.model beside the model), checking that the vocabularies agree.
Loaded load(const std::string& model_path, const std::string& tokenizer_override, bool need_tokenizer);

// Adds --threads and applies it (and STRATA_ISA) before the command runs.
void add_threads_option(CLI::App* cmd, int* threads);
void apply_threads(int threads);

// Each subcommand registers itself on the app.
void register_generate(CLI::App& app);
void register_logits(CLI::App& app);
void register_init(CLI::App& app);
void register_info(CLI::App& app);
void register_ppl(CLI::App& app);
void register_bench(CLI::App& app);
void register_convert(CLI::App& app);
void register_train_tokenizer(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_plot(CLI::App& app);
void register_train(CLI::App& app);
void register_sft(CLI::App& app);

}  // namespace strata::cli
