#include "cli/common.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "core/cpu.h"
#include "core/parallel.h"
#include "model/checkpoint.h"
#include "model/convert_modified.h"
#include "model/stack.h"
#include "strata/error.h"
#include "train/sft_data.h"

namespace strata::cli {

CLI::Option* add_model_flags(CLI::App* cmd, ModelFlags& f, bool required) {
  CLI::Option* m = cmd->add_option("-m,--model", f.path, "model: HF directory, .safetensors, .gguf or llama2.c .bin");
  if (required) m->required();
  cmd->add_option("--tokenizer", f.tokenizer,
                  "SentencePiece .model or tokenizer.json (default: the one beside the model)");
  add_threads_option(cmd, &f.threads);
  return m;
}

void add_self_extend_flag(CLI::App* cmd, ModelFlags& f) {
  cmd->add_option("--self-extend", f.self_extend,
                  "G,W: Self-Extend for RoPE attention (keys at distance >= W at positions grouped by G; G divides W)");
}

namespace {

void apply_self_extend(Model& m, const std::string& spec) {
  if (spec.empty()) return;
  const size_t comma = spec.find(',');
  auto number = [&](const std::string& t) {
    char* end = nullptr;
    const long long v = std::strtoll(t.c_str(), &end, 10);
    if (t.empty() || end != t.c_str() + t.size() || v < 1 || v > (int64_t{1} << 40))
      fail("--self-extend '", spec, "': expected G,W with two positive integers");
    return static_cast<int64_t>(v);
  };
  if (comma == std::string::npos) fail("--self-extend '", spec, "': expected G,W (group size, neighbour window)");
  m.set_self_extend(number(spec.substr(0, comma)), number(spec.substr(comma + 1)));
}

}  // namespace

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
    apply_self_extend(*r.model, flags.self_extend);
    if (!r.model->causal()) std::fprintf(stderr, "warning: %s\n", kGlobalContextWarning);
  }  // the checkpoint's own references to the mapping are released here
  if (need_tokenizer || !flags.tokenizer.empty()) {
    if (tok_path.empty())
      fail(flags.path, ": no tokenizer.model or tokenizer.json beside the model; pass --tokenizer FILE");
    r.tokenizer = Tokenizer::load(tok_path);
    check_tokenizer_fits(tok_path, r.tokenizer->vocab_size(), r.model->config().vocab_size);
  }
  return r;
}

void check_tokenizer_fits(const std::string& tok_path, int64_t pieces, int64_t model_vocab) {
  if (pieces > model_vocab)
    fail(tok_path, ": tokenizer has ", pieces, " pieces but the model's vocab_size is ", model_vocab,
         " (wrong tokenizer for this model?)");
}

namespace {

CLI::Validator number_check(double lo, double hi, bool open_lo, std::string what, std::string name) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double v = 0;
        char* end = nullptr;
        v = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size()) return "'" + text + "' is not a number";
        const bool ok = (open_lo ? v > lo : v >= lo) && v <= hi;  // false for NaN
        return ok ? std::string() : "must be " + what + " (got " + text + ")";
      },
      what, name);
}

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

CLI::Validator at_least(double lo) {
  return number_check(lo, HUGE_VAL, false, ">= " + num(lo), "AT_LEAST");
}
CLI::Validator above(double lo) { return number_check(lo, HUGE_VAL, true, "> " + num(lo), "ABOVE"); }
CLI::Validator between(double lo, double hi, bool open_lo) {
  return number_check(lo, hi, open_lo, std::string("in ") + (open_lo ? "(" : "[") + num(lo) + ", " + num(hi) + "]",
                      "BETWEEN");
}

void add_threads_option(CLI::App* cmd, int* threads) {
  cmd->add_option("--threads,-t", *threads, "worker threads (0: all cores)")->check(at_least(0));
}

void apply_threads(int threads) {
  set_num_threads(threads);
  (void)active_isa();  // reject a bad STRATA_ISA before any work
}

std::vector<int32_t> chat_query(const Tokenizer& tok, int32_t bos, const std::string& prompt, const std::string& format) {
  std::vector<int32_t> q = tokenize_chat(tok, parse_chat_format(format), {{"user", prompt}}, true).ids;
  if (!q.empty() && q[0] == bos) q.erase(q.begin());
  return q;
}

}  // namespace strata::cli
