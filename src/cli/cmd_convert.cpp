// strata convert: rewrite a checkpoint in another layout.
//   --to hf        an HF directory (F32 or BF16, optionally sharded) from any model strata reads;
//   --to modified  the modified decoder converted from a Llama model with identity inits
//                  (docs/modified-decoder.md), then how far its logits are from the base's.
//   --add-hypernet the same model with a freshly initialised hypernetwork of
//                  recursive soft prompting attached (docs/hypernet.md).
// The source is whatever -m is (--from auto), or a lit-gpt / microsoft/Samba
// state dict in .safetensors (--from litgpt --samba-config NAME).
#include <cstdio>
#include <filesystem>
#include <set>

#include "cli/common.h"
#include "core/rng.h"
#include "core/weights.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "model/convert_modified.h"
#include "model/export_gguf.h"
#include "model/hypernet.h"
#include "model/import_samba.h"
#include "model/stack.h"
#include "strata/error.h"

namespace strata::cli {

namespace {

namespace fs = std::filesystem;

// The probe of the closeness report: plain English for a model with a
// tokenizer, else a fixed pseudo-random id sequence.
constexpr const char* kProbeText =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
    "friends. One day, she saw a big red ball under a tree and ran to get it.";
constexpr int64_t kProbeRandomTokens = 64;

std::vector<int32_t> probe_ids(const Config& cfg, const Tokenizer* tok, bool add_bos, std::string* what) {
  std::vector<int32_t> ids;
  if (tok) {
    ids = tok->encode(kProbeText, add_bos);
    *what = "a fixed English text";
  } else {
    Rng rng(20240229);
    ids.push_back(cfg.bos_token_id);
    while (static_cast<int64_t>(ids.size()) < kProbeRandomTokens)
      ids.push_back(static_cast<int32_t>(rng.next() % static_cast<uint64_t>(cfg.vocab_size)));
    *what = "fixed pseudo-random ids (no tokenizer)";
  }
  if (static_cast<int64_t>(ids.size()) > cfg.max_position_embeddings) ids.resize(cfg.max_position_embeddings);
  return ids;
}

// Runs base and converted on the probe and prints the distance on stdout.
// `rounded`: F32 base matrices were written as BF16, which the distance includes.
void report_closeness(Model& base, const Config& cfg, const NamedTensors& tensors, const Tokenizer* tok, bool add_bos,
                      const ModifiedOptions& opt, bool rounded) {
  WeightSet w;
  for (const auto& [name, t] : tensors) w.add(name, t, "<converted>");
  auto converted = Model::from_weights(cfg, w);
  std::string what;
  const std::vector<int32_t> ids = probe_ids(cfg, tok, add_bos, &what);
  const LogitComparison c = compare_logits(base, *converted, ids);
  std::printf("closeness to the base on %lld tokens (%s)%s:\n", (long long)c.positions, what.c_str(),
              rounded ? ", including the rounding of F32 matrices to BF16" : "");
  std::printf("  max |delta logit|          %.3g\n", c.max_abs_diff);
  std::printf("  mean KL(base || converted) %.3g nats per position\n", c.mean_kl);
  const bool exact = opt.attention == "standard" || opt.diff_layout == "expanded";
  if (exact && !rounded && c.max_abs_diff > 1e-4)
    std::fprintf(stderr, "warning: this conversion should reproduce the base (max |delta logit| <= 1e-4)\n");
  if (!exact)
    std::printf("  the paper layout is approximate (half of each diff head's value channels use another head's "
                "attention map): train to heal it\n");
}

// A lit-gpt state dict under strata's names, as a loaded model.
Loaded load_litgpt(const ModelFlags& flags, const std::string& config_name) {
  apply_threads(flags.threads);
  Imported im = import_litgpt(flags.path, config_name);
  Loaded l;
  l.model = Model::from_weights(im.config, im.weights);
  l.format = "litgpt";
  return l;
}

std::string litgpt_names() {
  std::string r;
  for (const auto& [lit, preset] : litgpt_configs()) r += (r.empty() ? "" : ", ") + lit;
  return r;
}

}  // namespace

// The tokenizer that goes with the output: --tokenizer (it must fit the
// model's vocabulary, check_tokenizer_fits), else one beside the model that
// fits (llama2.c names custom ones tok<V>.model). Null if there is none.
std::unique_ptr<Tokenizer> find_model_tokenizer(const std::string& model_path, const std::string& given, int64_t vocab) {
  if (!given.empty()) {
    auto tok = Tokenizer::load(given);
    check_tokenizer_fits(given, tok->vocab_size(), vocab);
    return tok;
  }
  if (is_gguf(model_path)) {  // a GGUF carries its own vocabulary, if any
    try {
      auto tok = Tokenizer::load(model_path);
      if (tok->vocab_size() <= vocab) return tok;
    } catch (const Error&) {
    }
    return nullptr;
  }
  const fs::path p(model_path);
  const fs::path dir = fs::is_directory(p) ? p : p.parent_path();
  for (const fs::path& cand : {dir / ("tok" + std::to_string(vocab) + ".model"), dir / "tokenizer.model", dir / "tokenizer.json"}) {
    std::error_code ec;
    if (!fs::is_regular_file(cand, ec)) continue;
    auto tok = Tokenizer::load(cand.string());
    if (tok->vocab_size() <= vocab) return tok;
  }
  return nullptr;
}

void register_convert(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string out, to = "hf", dtype, from = "auto", samba_config, gguf_type = "f32";
    ModifiedOptions modified;
    int64_t max_shard = 0;
    bool add_hypernet = false;
    Config::Hypernet hypernet{.soft_tokens = 128};
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("convert", "convert a checkpoint");
  add_model_flags(cmd, o->model);
  cmd->add_option("-o,--out", o->out, "output directory (--to gguf: the file)")->required();
  cmd->add_option("--to", o->to,
                  "target: hf (same model, HF layout), gguf (one GGUF file, --type) or modified (the modified decoder)")
      ->check(CLI::IsMember({"hf", "gguf", "modified"}));
  cmd->add_option("--type", o->gguf_type, "--to gguf: f32, f16, bf16, q8_0, q4_0 or q4_k_m (docs/quantization.md)")
      ->check(CLI::IsMember(std::vector<std::string>(std::begin(kGgufFileTypes), std::end(kGgufFileTypes))));
  cmd->add_option("--dtype", o->dtype,
                  "f32 or bf16 for the matrices (default: the source's dtype; the modified decoder: f32)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("--from", o->from,
                  "source layout: auto (what -m is: HF Llama or Mamba directory, strata, llama2.c) or litgpt "
                  "(a lit-gpt / microsoft/Samba state dict as .safetensors; needs --samba-config)")
      ->check(CLI::IsMember({"auto", "litgpt"}));
  cmd->add_option("--samba-config", o->samba_config,
                  "--from litgpt: the lit-gpt config name (" + litgpt_names() + ") or a strata preset name");
  cmd->add_option("--max-shard-size", o->max_shard, "bytes per shard (0: one file)")->check(at_least(0));
  ModifiedOptions& m = o->modified;
  cmd->add_option("--attention", m.attention, "--to modified: differential or standard")
      ->check(CLI::IsMember({"differential", "standard"}));
  cmd->add_option("--diff-layout", m.diff_layout, "--to modified: expanded (exact) or paper (approximate)")
      ->check(CLI::IsMember({"expanded", "paper"}));
  cmd->add_option("--ctx-mode", m.ctx_mode, "--to modified: causal or global context statistics")
      ->check(CLI::IsMember({"causal", "global"}));
  cmd->add_option("--seed", m.seed,
                  "--to modified: seed of ctx_down, SE fc1 and the lambda vectors; --add-hypernet: seed of sp0 and "
                  "the hypernetwork's weights");
  Config::Hypernet& h = o->hypernet;
  cmd->add_flag("--add-hypernet", o->add_hypernet,
                "attach a new hypernetwork of recursive soft prompting (out_proj = 0: the model behaves as the base "
                "with the fixed prefix sp0)");
  cmd->add_option("--soft-tokens", h.soft_tokens, "--add-hypernet: soft prompt tokens")->check(between(1, 4096));
  cmd->add_option("--hypernet-layers", h.layers, "--add-hypernet: encoder layers")->check(between(1, 64));
  cmd->add_option("--hypernet-heads", h.heads, "--add-hypernet: attention heads (default max(1, hidden / 128))")
      ->check(between(1, 1024));
  cmd->add_option("--hypernet-ffn", h.intermediate_size, "--add-hypernet: MLP width (default 1.5 x hidden)")
      ->check(between(1, 1 << 20));
  cmd->add_option("--chunk", h.chunk, "--add-hypernet: answer tokens per chunk")->check(between(1, 4096));
  cmd->add_option("--ada-rank", m.ada_rank, "--to modified: AdaRMSNorm context rank")->check(at_least(0));
  cmd->add_option("--tm-kernel", m.tm_kernel, "--to modified: token-mixing taps")->check(between(1, 8));
  cmd->add_option("--se-reduction", m.se_reduction, "--to modified: SE reduction")->check(above(0));
  cmd->callback([o, cmd] {
    if (o->to == "gguf") {
      for (const char* opt : {"--dtype", "--max-shard-size", "--add-hypernet", "--from", "--samba-config"})
        if (cmd->count(opt) > 0) fail(opt, " does not apply to --to gguf");
      return export_gguf(o->model, o->out, o->gguf_type);
    }
    if (cmd->count("--type") > 0) fail("--type applies to --to gguf only (use --dtype for --to hf)");
    const bool to_modified = o->to == "modified";
    for (const char* opt : {"--attention", "--diff-layout", "--ctx-mode", "--ada-rank", "--tm-kernel", "--se-reduction"})
      if (!to_modified && cmd->count(opt) > 0) fail(opt, " applies to --to modified only");
    if (!to_modified && !o->add_hypernet && cmd->count("--seed") > 0)
      fail("--seed applies to --to modified and --add-hypernet only");
    for (const char* opt : {"--soft-tokens", "--hypernet-layers", "--hypernet-heads", "--hypernet-ffn", "--chunk"})
      if (!o->add_hypernet && cmd->count(opt) > 0) fail(opt, " applies to --add-hypernet only");
    if (to_modified && o->add_hypernet)
      fail("--to modified and --add-hypernet: convert to the modified decoder first, then add the hypernetwork to "
           "its output");
    const bool litgpt = o->from == "litgpt";
    if (litgpt && o->samba_config.empty())
      fail("--from litgpt needs --samba-config NAME (", litgpt_names(), ", or a strata preset)");
    if (!litgpt && cmd->count("--samba-config") > 0) fail("--samba-config applies to --from litgpt only");
    ModelFlags flags = o->model;
    flags.tokenizer.clear();  // checked below against the vocabulary, with a fallback search
    Loaded l = litgpt ? load_litgpt(flags, o->samba_config) : load(flags, false);
    auto tok = find_model_tokenizer(o->model.path, o->model.tokenizer, l.model->config().vocab_size);

    Config cfg = l.model->config();
    if (o->add_hypernet && cfg.has_hypernet())
      fail(o->model.path, ": the model already has a hypernetwork (", cfg.hypernet.soft_tokens, " soft tokens)");
    NamedTensors tensors = to_modified      ? convert_to_modified(*l.model, o->modified, &cfg)
                           : o->add_hypernet ? add_hypernet(*l.model, o->hypernet, o->modified.seed, &cfg)
                                             : l.model->named_tensors();
    // Default: the matrices keep the source's dtype (BF16 stays BF16); the
    // modified decoder's conversion is F32.
    DType source_dt = DType::F32;
    for (const ParamInfo& p : l.model->param_info())
      if (p.shape.size() == 2 && !is_quantized(p.dtype)) source_dt = p.dtype;  // quantized sources dequantize to F32
    const DType dt = o->dtype.empty() ? (to_modified ? DType::F32 : source_dt) : o->dtype == "bf16" ? DType::BF16 : DType::F32;
    cfg.torch_dtype = dt == DType::BF16 ? "bfloat16" : "float32";
    std::set<std::string> matrices;  // read by matmuls: may be BF16; everything else stays F32
    for (const DeclaredParam& p : declared_params(cfg))
      if (p.decl.matrix) matrices.insert(p.decl.name);
    for (auto& [name, t] : tensors) {
      const DType want = matrices.count(name) ? dt : DType::F32;
      if (t.dtype != want) t = t.to(want);
    }
    save_hf_checkpoint(o->out, cfg, tensors, o->max_shard);
    if (tok && is_gguf(tok->path()))  // the vocabulary inside a GGUF, as a SentencePiece model
      write_file_atomic((fs::path(o->out) / "tokenizer.model").string(), tok->spm_model_proto());
    else if (tok)
      fs::copy_file(tok->path(), fs::path(o->out) / "tokenizer.model", fs::copy_options::overwrite_existing);
    std::fprintf(stderr, "wrote %s (%zu tensors)%s\n", o->out.c_str(), tensors.size(),
                 tok ? "" : "; no tokenizer with the model's vocabulary found, none copied");
    if (!to_modified) return;
    bool rounded = false;
    for (const auto& [name, t] : l.model->named_tensors())
      rounded |= dt == DType::BF16 && t.dtype == DType::F32 && matrices.count(name);
    report_closeness(*l.model, cfg, tensors, tok.get(), l.add_bos, o->modified, rounded);
    std::fflush(stdout);  // the warning comes after the report on a terminal
    if (o->modified.ctx_mode == "global") std::fprintf(stderr, "warning: %s\n", kGlobalContextWarning);
  });
}

}  // namespace strata::cli
