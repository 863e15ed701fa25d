#include "cli/common.h"

#include <cstdio>

#include "core/cpu.h"
#include "core/parallel.h"
#include "model/checkpoint.h"
#include "model/convert_modified.h"
#include "model/stack.h"
#include "strata/error.h"

namespace strata::cli {

CLI::Option* add_model_flags(CLI::App* cmd, ModelFlags& f, bool required) {
  CLI::Option* m = cmd->add_option("-m,--model", f.path, "model: HF directory, .safetensors or llama2.c .bin");
  if (required) m->required();
  cmd->add_option("--tokenizer", f.tokenizer, "SentencePiece model (default: tokenizer.model beside the model)");
  add_threads_option(cmd, &f.threads);
  return m;
}

Loaded load(const ModelFlags& flags, bool need_tokenizer, std::optional<DType> matrices) {
  apply_threads(flags.threads);
  Loaded r;
  std::string tok_path;
  {
    Checkpoint ck = load_checkpoint(flags.path);
    r.add_bos = ck.add_bos;
    r.format = ck.format;
    tok_path = flags.tokenizer.empty() ? ck.tokenizer_path : flags.tokenizer;
    if (matrices) {  // e.g. `bench --dtype`: the matrices in another dtype, everything else as it is
      for (const DeclaredParam& p : declared_params(ck.config)) {
        Tensor* t = ck.weights.tensors.count(p.decl.name) ? &ck.weights.tensors[p.decl.name] : nullptr;
        if (t && p.decl.matrix && t->dtype != *matrices) *t = t->to(*matrices);
      }
      ck.config.torch_dtype = *matrices == DType::BF16 ? "bfloat16" : "float32";
    }
    r.model = Model::from_weights(ck.config, ck.weights);
    if (!r.model->causal()) std::fprintf(stderr, "warning: %s\n", kGlobalContextWarning);
  }  // the checkpoint's own references to the mapping are released here
  if (need_tokenizer || !flags.tokenizer.empty()) {
    if (tok_path.empty()) fail(flags.path, ": no tokenizer.model beside the model; pass --tokenizer FILE");
    r.tokenizer = Tokenizer::load(tok_path);
    const int64_t v = r.model->config().vocab_size;
    if (r.tokenizer->vocab_size() != v)
      fail(tok_path, ": tokenizer has ", r.tokenizer->vocab_size(), " pieces but the model's vocab_size is ", v,
           " (wrong tokenizer for this model?)");
  }
  return r;
}

void add_threads_option(CLI::App* cmd, int* threads) {
  cmd->add_option("--threads,-t", *threads, "worker threads (0: all cores)")->check(CLI::NonNegativeNumber);
}

void apply_threads(int threads) {
  set_num_threads(threads);
  (void)active_isa();  // reject a bad STRATA_ISA before any work
}

}  // namespace strata::cli
