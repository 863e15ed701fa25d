// strata convert: rewrite a checkpoint in another layout. --to hf writes an HF
// directory (F32 or BF16, optionally sharded) from any model strata reads.
#include <filesystem>

#include "cli/common.h"
#include "io/checkpoint.h"
#include "strata/error.h"

namespace strata::cli {

void register_convert(CLI::App& app) {
  struct Opts {
    std::string model, out, to = "hf", dtype = "f32", tokenizer;
    int64_t max_shard = 0;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("convert", "convert a checkpoint");
  cmd->add_option("-m,--model", o->model, "input model")->required();
  cmd->add_option("-o,--out", o->out, "output directory")->required();
  cmd->add_option("--to", o->to, "target layout: hf")->check(CLI::IsMember({"hf"}));
  cmd->add_option("--dtype", o->dtype, "f32 or bf16 for the matrices")->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("--max-shard-size", o->max_shard, "bytes per shard (0: one file)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--tokenizer", o->tokenizer, "tokenizer.model to copy beside the output");
  add_threads_option(cmd, &o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    Loaded l = load(o->model, "", false);
    Config cfg = l.model->config();
    const DType dt = o->dtype == "bf16" ? DType::BF16 : DType::F32;
    cfg.torch_dtype = dt == DType::BF16 ? "bfloat16" : "float32";
    NamedTensors out;
    for (auto& [name, t] : l.model->named_tensors()) {
      const bool matrix = t.shape.size() >= 2;
      const DType want = matrix ? dt : DType::F32;
      out.emplace_back(name, t.dtype == want ? t : t.to(want));
    }
    save_hf_checkpoint(o->out, cfg, out, o->max_shard);
    std::string tok = o->tokenizer;
    if (tok.empty()) {
      auto p = std::filesystem::path(o->model);
      auto beside = (std::filesystem::is_directory(p) ? p : p.parent_path()) / "tokenizer.model";
      if (std::filesystem::exists(beside)) tok = beside.string();
    }
    if (!tok.empty())
      std::filesystem::copy_file(tok, std::filesystem::path(o->out) / "tokenizer.model",
                                 std::filesystem::copy_options::overwrite_existing);
    std::fprintf(stderr, "wrote %s (%zu tensors)\n", o->out.c_str(), out.size());
  });
}

}  // namespace strata::cli
