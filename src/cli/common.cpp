#include "cli/common.h"

#include <cstdio>

#include "core/cpu.h"
#include "core/parallel.h"
#include "io/checkpoint.h"
#include "model/convert_modified.h"
#include "strata/error.h"

namespace strata::cli {

Loaded load(const std::string& model_path, const std::string& tokenizer_override, bool need_tokenizer) {
  Loaded r;
  std::string tok_path;
  {
    Checkpoint ck = load_checkpoint(model_path);
    if (ck.weights.origin.empty()) ck.weights.origin = model_path;
    r.add_bos = ck.add_bos;
    r.format = ck.format;
    tok_path = tokenizer_override.empty() ? ck.tokenizer_path : tokenizer_override;
    r.model = Model::from_weights(ck.config, ck.weights);
    if (!r.model->causal()) std::fprintf(stderr, "warning: %s\n", kGlobalContextWarning);
  }  // the checkpoint's own references to the mapping are released here
  if (need_tokenizer) {
    if (tok_path.empty())
      fail(model_path, ": no tokenizer.model beside the model; pass --tokenizer FILE");
    r.tokenizer = Tokenizer::load(tok_path);
    const int64_t v = r.model->config().vocab_size;
    if (r.tokenizer->vocab_size() != v)
      fail(tok_path, ": tokenizer has ", r.tokenizer->vocab_size(), " pieces but the model's vocab_size is ", v,
           " (wrong tokenizer for this model?)");
  }
  return r;
}

void add_threads_option(CLI::App* cmd, int* threads) {
  cmd->add_option("--threads,-t", *threads, "worker threads (default: all cores)")->check(CLI::NonNegativeNumber);
}

void apply_threads(int threads) {
  set_num_threads(threads);
  (void)active_isa();  // reject a bad STRATA_ISA before any work
}

}  // namespace strata::cli
