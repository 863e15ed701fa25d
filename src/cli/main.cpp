// strata: one binary, one subcommand per file in src/cli/.
#include <cstdio>
#include <exception>

#include "cli/common.h"
#include "strata/error.h"

int main(int argc, char** argv) {
  CLI::App app{"strata: build, convert, train and run TinyLlama-family models on CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "strata 0.1.0");
  strata::cli::register_generate(app);
  strata::cli::register_logits(app);
  strata::cli::register_init(app);
  strata::cli::register_info(app);
  strata::cli::register_ppl(app);
  strata::cli::register_bench(app);
  strata::cli::register_convert(app);
  strata::cli::register_train_tokenizer(app);
  strata::cli::register_tokenize(app);
  strata::cli::register_plot(app);
  strata::cli::register_train(app);
  strata::cli::register_sft(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "strata: error: %s\n", e.what());
    return 1;
  } catch (const strata::Error& e) {
    std::fprintf(stderr, "strata: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
