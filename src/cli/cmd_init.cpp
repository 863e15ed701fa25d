// strata init: a randomly initialised model in HF layout, from a preset or a config.json.
#include <filesystem>

#include "cli/common.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "strata/error.h"

namespace strata::cli {

void register_init(CLI::App& app) {
  struct Opts {
    std::string preset, config, out, dtype, tokenizer;
    uint64_t seed = 0;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("init", "write a randomly initialised model (a preset or any config.json)");
  auto* p = cmd->add_option("--preset", o->preset, "configuration: " + [] {
    std::string s;
    for (const auto& n : preset_names()) s += (s.empty() ? "" : ", ") + n;
    return s;
  }());
  auto* c = cmd->add_option("--config", o->config, "a config.json: HF fields plus strata_recipe / strata_layers");
  p->excludes(c);
  cmd->add_option("-o,--out", o->out, "output directory")->required();
  cmd->add_option("--seed", o->seed, "random seed");
  cmd->add_option("--dtype", o->dtype, "bf16 or f32 (default: the config's torch_dtype)");
  cmd->add_option("--tokenizer", o->tokenizer, "copy this SentencePiece model in and use its vocabulary size");
  add_threads_option(cmd, &o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    if (o->preset.empty() == o->config.empty()) fail("init: give --preset NAME or --config FILE");
    Config cfg = o->preset.empty() ? Config::from_json_text(read_file_text(o->config), o->config)
                                   : preset_config(o->preset);
    if (!o->tokenizer.empty()) {
      auto tok = Tokenizer::load(o->tokenizer);
      cfg.vocab_size = tok->vocab_size();
    }
    DType dtype = cfg.torch_dtype == "bfloat16" ? DType::BF16 : DType::F32;
    if (!o->dtype.empty() && (!parse_dtype(o->dtype, &dtype) || (dtype != DType::F32 && dtype != DType::BF16)))
      fail("--dtype '", o->dtype, "': expected bf16 or f32");
    cfg.torch_dtype = dtype == DType::BF16 ? "bfloat16" : "float32";
    auto model = Model::random(cfg, o->seed, dtype);
    save_hf_checkpoint(o->out, cfg, model->named_tensors());
    if (!o->tokenizer.empty())
      std::filesystem::copy_file(o->tokenizer, std::filesystem::path(o->out) / "tokenizer.model",
                                 std::filesystem::copy_options::overwrite_existing);
    const ParamCounts pc = model->param_counts();
    std::fprintf(stderr, "wrote %s: %s, %lld parameters%s, %s\n", o->out.c_str(),
                 (o->preset.empty() ? o->config : o->preset).c_str(), static_cast<long long>(pc.total),
                 pc.buffers ? cat(" (+", pc.buffers, " buffer values)").c_str() : "",
                 std::string(dtype_name(dtype)).c_str());
  });
}

}  // namespace strata::cli
