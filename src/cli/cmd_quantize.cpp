// strata quantize: a model as one GGUF file with quantized matrices, the way
// llama.cpp's quantizer chooses each tensor's type (docs/quantization.md).
// `convert --to gguf` is the same command.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli/common.h"
#include "model/export_gguf.h"
#include "serve/chat_template.h"
#include "strata/error.h"

namespace strata::cli {

void export_gguf(const ModelFlags& flags, const std::string& out, const std::string& type) {
  const auto t0 = std::chrono::steady_clock::now();
  ModelFlags f = flags;
  f.tokenizer.clear();  // checked against the vocabulary below
  Loaded l = load(f, false);
  const Config& cfg = l.model->config();
  auto tok = find_model_tokenizer(flags.path, flags.tokenizer, cfg.vocab_size);
  std::filesystem::path name = std::filesystem::path(flags.path);
  if (name.filename().empty()) name = name.parent_path();
  const GgufExportResult r =
      write_model_gguf(out, cfg, l.model->named_tensors(), tok.get(), l.add_bos, type, name.stem().string(),
                       serve::model_chat_template(flags.path));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "wrote %s: %s, architecture '%s', %.1f MiB of tensors, %s (%.1f s)\n", out.c_str(),
               type.c_str(), r.architecture.c_str(), static_cast<double>(r.bytes) / (1 << 20),
               r.tokenizer_embedded ? "tokenizer embedded"
               : tok                ? "tokenizer not embedded (only SentencePiece vocabularies are)"
                                    : "no tokenizer found to embed",
               secs);
}

void register_quantize(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string out, type = "q4_k_m";
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("quantize", "write a model as a GGUF file with quantized weights");
  add_model_flags(cmd, o->model);
  cmd->add_option("-o,--out", o->out, "output .gguf file")->required();
  cmd->add_option("--type", o->type, "f32, f16, bf16, q8_0, q4_0 or q4_k_m (default q4_k_m)")
      ->check(CLI::IsMember(std::vector<std::string>(std::begin(kGgufFileTypes), std::end(kGgufFileTypes))));
  cmd->callback([o] { export_gguf(o->model, o->out, o->type); });
}

}  // namespace strata::cli
