// strata train / strata sft: the trainer (src/train/trainer.cpp) on packed
// token shards or on chat JSONL with loss masks.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/common.h"
#include "core/parallel.h"
#include "io/safetensors.h"
#include "strata/error.h"
#include "train/sft_data.h"
#include "train/token_data.h"
#include "train/trainer.h"

namespace strata::cli {
namespace {

namespace fs = std::filesystem;

struct CommonOpts {
  TrainerOptions t;
  std::string out, init, tokenizer, shuffle = "on", precision = "f32";
  std::vector<std::string> groups;
  double lr = 3e-4, min_lr = -1, wd = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  int64_t warmup = 0;
  int threads = 0;
};

void add_common(CLI::App* cmd, CommonOpts& o) {
  cmd->add_option("-o,--out", o.out, "run directory (checkpoints, metrics.jsonl)")->required();
  cmd->add_option("--steps", o.t.steps, "optimizer steps")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", o.t.batch, "sequences per micro-batch")->check(CLI::PositiveNumber);
  cmd->add_option("--seq", o.t.seq, "tokens per sequence")->check(CLI::PositiveNumber);
  cmd->add_option("--accum", o.t.accum, "micro-batches per step (gradient accumulation)")->check(CLI::PositiveNumber);
  cmd->add_option("--lr", o.lr, "peak learning rate")->check(CLI::PositiveNumber);
  cmd->add_option("--min-lr", o.min_lr, "final learning rate of the cosine decay (default lr/10)");
  cmd->add_option("--warmup", o.warmup, "linear warmup steps")->check(CLI::NonNegativeNumber);
  cmd->add_option("--wd", o.wd, "AdamW weight decay (matrices; see --param-group)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--beta1", o.beta1, "AdamW beta1");
  cmd->add_option("--beta2", o.beta2, "AdamW beta2");
  cmd->add_option("--eps", o.eps, "AdamW epsilon");
  cmd->add_option("--clip", o.t.clip, "global gradient-norm clip (0: off)");
  cmd->add_option("--skip-spikes", o.t.skip_spike_z, "skip steps whose loss is Z std devs above the recent mean");
  cmd->add_option("--param-group", o.groups, "PATTERN:lr_scale=X,wd=Y,frozen (repeatable; the last match wins)");
  cmd->add_option("--seed", o.t.seed, "seed (data order, initialisation)");
  cmd->add_option("--eval-every", o.t.eval_every, "validation every N steps (0: never)");
  cmd->add_option("--eval-batches", o.t.eval_batches, "micro-batches per validation")->check(CLI::PositiveNumber);
  cmd->add_option("--save-every", o.t.save_every, "checkpoint every N steps (and at the end)");
  cmd->add_option("--keep-last", o.t.keep_last, "keep only the newest N checkpoints (0: all)");
  cmd->add_option("--shuffle", o.shuffle, "on|off")->check(CLI::IsMember({"on", "off"}));
  cmd->add_flag("--resume", o.t.resume, "continue from the newest complete checkpoint in the run directory");
  cmd->add_option("--precision", o.precision, "f32, or bf16: mixed precision (BF16 products on AMX, F32 master weights)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_flag("--checkpoint-activations", o.t.checkpoint_activations,
                "keep only block inputs and recompute the rest in backward (less memory, ~1/3 more compute)");
  cmd->add_option("--tokenizer", o.tokenizer, "tokenizer.model (copied into every checkpoint)");
  add_threads_option(cmd, &o.threads);
}

void finish_options(CommonOpts& o) {
  apply_threads(o.threads);
  o.t.run_dir = o.out;
  o.t.schedule.lr = o.lr;
  o.t.schedule.min_lr = o.min_lr < 0 ? o.lr / 10 : o.min_lr;
  o.t.schedule.warmup = o.warmup;
  o.t.adamw.weight_decay = o.wd;
  o.t.adamw.beta1 = o.beta1;
  o.t.adamw.beta2 = o.beta2;
  o.t.adamw.eps = o.eps;
  o.t.bf16 = o.precision == "bf16";
  for (const auto& g : o.groups) o.t.adamw.rules.push_back(parse_param_group(g));
}

// Copies the tokenizer beside every checkpoint so each is a runnable model directory.
void copy_tokenizer(const std::string& run_dir, const std::string& tokenizer) {
  if (tokenizer.empty()) return;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.rfind("checkpoint-", 0) == 0 && !fs::exists(e.path() / "tokenizer.model"))
      fs::copy_file(tokenizer, e.path() / "tokenizer.model");
  }
}

}  // namespace

void register_train(CLI::App& app) {
  struct Opts : CommonOpts {
    std::string preset, config, data;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("train", "pretrain or continue training a model on token shards");
  auto* p = cmd->add_option("--preset", o->preset, "start from a random model of this preset");
  auto* c = cmd->add_option("--config", o->config, "start from a random model of this config.json");
  auto* i = cmd->add_option("--init", o->init, "continue from this model directory");
  p->excludes(c)->excludes(i);
  c->excludes(i);
  cmd->add_option("--data", o->data, "data directory from `strata tokenize`, or a raw uint16 .bin")->required();
  add_common(cmd, *o);
  cmd->callback([o] {
    finish_options(*o);
    if (o->preset.empty() + o->config.empty() + o->init.empty() != 2)
      fail("train: give exactly one of --preset, --config, --init");
    TokenData train_data(o->data, "train");
    std::unique_ptr<TokenData> val_data;
    if (fs::is_directory(o->data)) {
      val_data = std::make_unique<TokenData>(o->data, "val");
      if (val_data->size() <= o->t.seq) val_data.reset();
    }
    std::unique_ptr<Model> model;
    if (!o->init.empty()) {
      model = Model::load(o->init);
    } else {
      Config cfg = o->preset.empty() ? Config::from_json_text(read_file_text(o->config), o->config) : preset_config(o->preset);
      if (train_data.meta().vocab_size > 0 && train_data.meta().vocab_size != cfg.vocab_size) {
        std::fprintf(stderr, "vocab_size %lld -> %lld (the data's tokenizer)\n", (long long)cfg.vocab_size,
                     (long long)train_data.meta().vocab_size);
        cfg.vocab_size = train_data.meta().vocab_size;
      }
      cfg.torch_dtype = "float32";
      model = Model::random(cfg, o->t.seed, DType::F32);
    }
    const Config& cfg = model->config();
    if (o->t.seq > cfg.max_position_embeddings)
      fail("--seq ", o->t.seq, " exceeds the model's context of max_position_embeddings=", cfg.max_position_embeddings);
    train_data.check_vocab(cfg.vocab_size);
    if (val_data) val_data->check_vocab(cfg.vocab_size);
    if (o->tokenizer.empty()) o->tokenizer = train_data.meta().tokenizer;
    const bool shuffle = o->shuffle == "on";
    BatchLoader train_loader(train_data, o->t.batch, o->t.seq, shuffle, o->t.seed);
    std::unique_ptr<BatchLoader> val_loader;
    if (val_data) val_loader = std::make_unique<BatchLoader>(*val_data, o->t.batch, o->t.seq, false, 0);
    std::fprintf(stderr, "training %lld parameters on %lld tokens: %lld steps x %lld tokens\n",
                 (long long)model->num_params(), (long long)train_data.size(), (long long)o->t.steps,
                 (long long)(o->t.batch * o->t.seq * o->t.accum));
    BatchFn val_fn;
    if (val_loader) val_fn = [&](int64_t m, int32_t* in, int32_t* tg) { val_loader->micro_batch(m, in, tg); };
    auto r = train(*model, o->t, [&](int64_t m, int32_t* in, int32_t* tg) { train_loader.micro_batch(m, in, tg); },
                   val_fn);
    if (!o->tokenizer.empty() && fs::exists(o->tokenizer)) copy_tokenizer(o->out, o->tokenizer);
    std::printf("final step %lld  loss %.4f%s\n", (long long)r.last_step, r.last_loss,
                r.last_val_loss >= 0 ? ("  val_loss " + std::to_string(r.last_val_loss)).c_str() : "");
  });
}

void register_sft(CLI::App& app) {
  struct Opts : CommonOpts {
    std::vector<std::string> data;
    std::string format = "zephyr";
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("sft", "supervised fine-tuning on chat JSONL (loss on assistant tokens)");
  cmd->add_option("--init", o->init, "model directory to fine-tune")->required();
  cmd->add_option("--data", o->data, "JSONL files: {\"messages\": [...]} or {\"prompt\", \"completion\"}")->required();
  cmd->add_option("--template", o->format, "chat template: zephyr, chatml, llama-2");
  add_common(cmd, *o);
  cmd->callback([o] {
    finish_options(*o);
    Loaded l = load(ModelFlags{o->init, o->tokenizer, o->threads}, true);
    if (o->tokenizer.empty()) {
      fs::path p = fs::is_directory(o->init) ? fs::path(o->init) : fs::path(o->init).parent_path();
      o->tokenizer = (p / "tokenizer.model").string();
    }
    SftLoadReport rep;
    auto examples = load_sft_jsonl(o->data, *l.tokenizer, parse_chat_format(o->format), o->t.seq + 1, &rep);
    if (examples.empty()) fail("sft: no trainable sample in the data");
    std::fprintf(stderr, "sft: %lld samples, %lld tokens, %lld with loss\n", (long long)rep.samples,
                 (long long)rep.tokens, (long long)rep.loss_tokens);
    SftBatcher batcher(std::move(examples), o->t.batch, o->t.seq, o->shuffle == "on", o->t.seed);
    auto r = train(*l.model, o->t,
                   [&](int64_t m, int32_t* in, int32_t* tg) { batcher.micro_batch(m, in, tg); }, BatchFn());
    copy_tokenizer(o->out, o->tokenizer);
    std::printf("final step %lld  loss %.4f\n", (long long)r.last_step, r.last_loss);
  });
}

}  // namespace strata::cli
