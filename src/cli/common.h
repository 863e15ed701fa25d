// Shared pieces of the subcommands: the model-loading flags every command
// with -m takes, loading a model with its tokenizer, and the registration of
// the subcommands (cli::run is the whole command line, main() calls it).
#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <optional>
#include <string>

#include "strata/model.h"
#include "strata/tokenizer.h"

namespace strata::cli {

// -m MODEL, --tokenizer FILE, --threads N: the same on every command that loads a model.
struct ModelFlags {
  std::string path, tokenizer;
  int threads = 0;
  std::string self_extend;  // "G,W" (add_self_extend_flag): applied by load()
};
// Adds the three flags; returns the -m option (required unless `required` is false).
CLI::Option* add_model_flags(CLI::App* cmd, ModelFlags& flags, bool required = true);
// --self-extend G,W on the inference commands (docs/long-context.md).
void add_self_extend_flag(CLI::App* cmd, ModelFlags& flags);

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when neither needed nor given
  bool add_bos = true;
  std::string format;  // "hf", "hf-mamba", "gguf" or "llama2c"
};

// Applies --threads, loads the model and, when needed or given, its
// tokenizer (--tokenizer, or the one beside the model), checking that the
// vocabularies agree. `matrices`: the matrices converted to this dtype.
Loaded load(const ModelFlags& flags, bool need_tokenizer, std::optional<DType> matrices = std::nullopt);

// A tokenizer fits a model whose vocabulary has at least its pieces: models
// trained with a padded vocabulary (lit-gpt's padded_vocab_size, e.g. 50277
// pieces in 50304 rows) keep unused rows past the tokenizer's ids. More
// pieces than rows is an error naming the tokenizer file.
void check_tokenizer_fits(const std::string& tok_path, int64_t pieces, int64_t model_vocab);

// The tokenizer that goes with a model being written out: `given` (it must fit
// the vocabulary), else one beside the model (or inside a GGUF) that fits; null if none.
std::unique_ptr<Tokenizer> find_model_tokenizer(const std::string& model_path, const std::string& given, int64_t vocab);

// Writes the model of `flags` as one GGUF file of file type `type` (strata
// quantize, convert --to gguf) and says what it wrote on stderr.
void export_gguf(const ModelFlags& flags, const std::string& out, const std::string& type);

// Number checks for options: NaN is refused, and the message says what is
// allowed in plain numbers ("must be >= 0", "must be in [0, 1]").
CLI::Validator at_least(double lo);
CLI::Validator above(double lo);
CLI::Validator between(double lo, double hi, bool open_lo = false);  // [lo, hi] or (lo, hi]

// Adds --threads and applies it (and STRATA_ISA) before the command runs.
void add_threads_option(CLI::App* cmd, int* threads);
void apply_threads(int threads);

// The whole command line: parses argv, runs the subcommand, prints errors
// as one line. Returns the exit code.
int run(int argc, char** argv);

// Each subcommand registers itself on the app.
// A prompt as the user turn of a chat (`format`: zephyr, chatml, llama-2)
// with the assistant's opening, without BOS: the query of a model with a
// hypernetwork (docs/hypernet.md).
std::vector<int32_t> chat_query(const Tokenizer& tok, int32_t bos, const std::string& prompt, const std::string& format);

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
void register_module_run(CLI::App& app);
void register_exact_match(CLI::App& app);
void register_eval(CLI::App& app);
void register_data(CLI::App& app);
void register_quantize(CLI::App& app);
void register_serve(CLI::App& app);
void register_chat(CLI::App& app);

}  // namespace strata::cli
