// strata init: a randomly initialised model in HF layout.
#include <filesystem>

#include "cli/common.h"
#include "io/checkpoint.h"
#include "strata/error.h"

namespace strata::cli {

void register_init(CLI::App& app) {
  struct Opts {
    std::string preset, out, dtype, tokenizer;
    uint64_t seed = 0;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("init", "write a randomly initialised model");
  cmd->add_option("--preset", o->preset, "configuration: " + [] {
    std::string s;
    for (const auto& n : preset_names()) s += (s.empty() ? "" : ", ") + n;
    return s;
  }())->required();
  cmd->add_option("-o,--out", o->out, "output directory")->required();
  cmd->add_option("--seed", o->seed, "random seed");
  cmd->add_option("--dtype", o->dtype, "bf16 or f32 (default: the preset's torch_dtype)");
  cmd->add_option("--tokenizer", o->tokenizer, "copy this SentencePiece model in and use its vocabulary size");
  add_threads_option(cmd, &o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    Config cfg = preset_config(o->preset);
    if (!o->tokenizer.empty()) {
      auto tok = Tokenizer::load(o->tokenizer);
      cfg.vocab_size = tok->vocab_size();
    }
    DType dtype = cfg.torch_dtype == "bfloat16" ? DType::BF16 : DType::F32;
    if (!o->dtype.empty() && (!parse_dtype(o->dtype, &dtype) || dtype == DType::F16))
      fail("--dtype '", o->dtype, "': expected bf16 or f32");
    cfg.torch_dtype = dtype == DType::BF16 ? "bfloat16" : "float32";
    auto model = Model::random(cfg, o->seed, dtype);
    save_hf_checkpoint(o->out, cfg, model->named_tensors());
    if (!o->tokenizer.empty())
      std::filesystem::copy_file(o->tokenizer, std::filesystem::path(o->out) / "tokenizer.model",
                                 std::filesystem::copy_options::overwrite_existing);
    std::fprintf(stderr, "wrote %s: %s, %lld parameters, %s\n", o->out.c_str(), o->preset.c_str(),
                 static_cast<long long>(model->num_params()), std::string(dtype_name(dtype)).c_str());
  });
}

}  // namespace strata::cli
