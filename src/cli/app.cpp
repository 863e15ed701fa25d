// The command line: one subcommand per file in src/cli/.
#include <cstdio>
#include <exception>

#include "cli/common.h"
#include "strata/error.h"
#include "train/comm.h"

namespace strata::cli {

namespace {

// `strata` alone: every command with its one-line description.
void print_commands(const CLI::App& app) {
  std::printf("%s\n\nusage: strata COMMAND [options]   (strata COMMAND --help for its options)\n\ncommands:\n",
              app.get_description().c_str());
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    std::printf("  %-16s %s\n", sub->get_name().c_str(), sub->get_description().c_str());
}

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{"strata: build, convert, train and run TinyLlama-family models on CPU"};
  app.require_subcommand(0, 1);
  app.option_defaults()->always_capture_default();  // every --help shows the defaults
  app.set_version_flag("--version", "strata 0.1.0");
  register_generate(app);
  register_logits(app);
  register_init(app);
  register_info(app);
  register_ppl(app);
  register_bench(app);
  register_convert(app);
  register_train_tokenizer(app);
  register_tokenize(app);
  register_plot(app);
  register_train(app);
  register_sft(app);
  register_module_run(app);
  register_exact_match(app);
  register_eval(app);
  register_data(app);
  register_quantize(app);
  register_serve(app);
  register_chat(app);
  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) {
      print_commands(app);
      return 1;
    }
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "strata: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    // In a run of several ranks this stops them all.
    dist::report_fatal_error(e.what());
    return 1;
  }
  dist::finalize();
  return 0;
}

}  // namespace strata::cli
