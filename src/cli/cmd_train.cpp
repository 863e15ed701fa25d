// strata train / strata sft: the trainer (src/train/trainer.cpp) on packed
// token shards or on chat JSONL with loss masks.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/common.h"
#include "core/parallel.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "strata/error.h"
#include "train/comm.h"
#include "train/hypernet_sft.h"
#include "train/sft_data.h"
#include "train/token_data.h"
#include "train/trainer.h"
#include "train/trainer_state.h"

namespace strata::cli {
namespace {

namespace fs = std::filesystem;

struct CommonOpts {
  TrainerOptions t;
  std::string out, init, tokenizer, shuffle = "on", precision = "f32";
  std::vector<std::string> groups;
  double lr = 3e-4, min_lr = -1, wd = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  int64_t warmup = 0;
  std::string decay;  // "matrices", "all", or empty: the model's training defaults, else matrices
  int threads = 0;
  int zero = 0;
  double bucket_mb = 25;
  std::string overlap = "on";
};

void add_common(CLI::App* cmd, CommonOpts& o) {
  cmd->add_option("-o,--out", o.out, "run directory (checkpoints, metrics.jsonl)")->required();
  cmd->add_option("--steps", o.t.steps, "optimizer steps")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", o.t.batch, "sequences per micro-batch")->check(CLI::PositiveNumber);
  cmd->add_option("--seq", o.t.seq, "tokens per sequence")->check(CLI::PositiveNumber);
  cmd->add_option("--accum", o.t.accum, "micro-batches per step (gradient accumulation)")->check(CLI::PositiveNumber);
  cmd->add_option("--lr", o.lr, "peak learning rate")->check(CLI::PositiveNumber);
  cmd->add_option("--min-lr", o.min_lr, "final learning rate of the cosine decay (default lr/10)");
  cmd->add_option("--warmup", o.warmup, "linear warmup steps (default: the model's strata_training fraction of --steps, else 0)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--wd", o.wd, "AdamW weight decay (see --decay and --param-group)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--decay", o.decay,
                  "which parameters decay: matrices, or all (norms and biases too; default: the model's "
                  "strata_training, else matrices)")
      ->check(CLI::IsMember({"matrices", "all"}));
  cmd->add_option("--beta1", o.beta1, "AdamW beta1");
  cmd->add_option("--beta2", o.beta2, "AdamW beta2");
  cmd->add_option("--eps", o.eps, "AdamW epsilon");
  cmd->add_option("--clip", o.t.clip, "global gradient-norm clip (0: off)");
  cmd->add_option("--skip-spikes", o.t.skip_spike_z, "skip steps whose loss is Z std devs above the recent mean");
  cmd->add_option("--param-group", o.groups, "PATTERN:lr_scale=X,wd=Y,frozen (repeatable; the last match wins)");
  cmd->add_option("--seed", o.t.seed, "seed (data order, initialisation)");
  cmd->add_option("--eval-every", o.t.eval_every,
                  "validation every N steps (0: never; train: the data's val split, sft: --val-data or --val-fraction)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-batches", o.t.eval_batches, "micro-batches per validation")->check(CLI::PositiveNumber);
  cmd->add_option("--save-every", o.t.save_every, "checkpoint every N steps (and at the end)");
  cmd->add_option("--keep-last", o.t.keep_last, "keep only the newest N checkpoints (0: all)");
  cmd->add_option("--shuffle", o.shuffle, "on|off")->check(CLI::IsMember({"on", "off"}));
  cmd->add_flag("--resume", o.t.resume,
                "continue the run in the run directory from its newest complete checkpoint (the run's settings must "
                "match; --steps may be raised)");
  cmd->add_option("--precision", o.precision, "f32, or bf16: mixed precision (BF16 products on AMX or AVX512-BF16, F32 master weights)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_flag("--checkpoint-activations", o.t.checkpoint_activations,
                "keep only block inputs and recompute the rest in backward (less memory, ~1/3 more compute)");
  cmd->add_option("--tokenizer", o.tokenizer,
                  "tokenizer copied into every checkpoint (train default: the data's, else the one beside --init; "
                  "sft: the one the model loads with)");
  add_threads_option(cmd, &o.threads);
  // Several processes (mpirun -np N strata train ...): docs/distributed.md.
  cmd->add_option("--zero", o.zero, "over several ranks: 1 shards the AdamW moments across them (ZeRO-1)")
      ->check(CLI::IsMember({0, 1}));
  cmd->add_option("--bucket-mb", o.bucket_mb, "over several ranks: MiB of gradients per all-reduce")
      ->check(CLI::Range(0.001, 4096.0));
  cmd->add_option("--overlap", o.overlap, "over several ranks: reduce gradients during the backward (on|off)")
      ->check(CLI::IsMember({"on", "off"}));
}

// Joins the ranks when mpirun started this process; ranks on one machine
// share its cores unless --threads says otherwise.
void join_ranks(int& threads) {
  const dist::Comm& comm = dist::init_world();
  if (comm.size() == 1) return;
  dist::quiet_other_ranks();
  if (threads == 0) threads = std::max(1, num_threads() / comm.local_size());
  std::fprintf(stderr, "%d ranks (%d on this machine), %d threads each\n", comm.size(), comm.local_size(), threads);
}

void finish_options(CommonOpts& o) {
  join_ranks(o.threads);
  apply_threads(o.threads);
  o.t.sync.zero = o.zero == 1;
  o.t.sync.bucket_bytes = std::max<int64_t>(4, std::llround(o.bucket_mb * (1 << 20)));
  o.t.sync.overlap = o.overlap == "on";
  o.t.run_dir = o.out;
  o.t.schedule.lr = o.lr;
  o.t.schedule.min_lr = o.min_lr < 0 ? o.lr / 10 : o.min_lr;
  o.t.schedule.warmup = o.warmup;
  o.t.adamw.weight_decay = o.wd;
  o.t.adamw.beta1 = o.beta1;
  o.t.adamw.beta2 = o.beta2;
  o.t.adamw.eps = o.eps;
  o.t.adamw.decay_vectors = o.decay == "all";
  o.t.bf16 = o.precision == "bf16";
  for (const auto& g : o.groups) o.t.adamw.rules.push_back(parse_param_group(g));
}

// The model's published training recipe (config strata_training, e.g. the
// Samba family's 1% warmup and decay on every parameter) where the command
// line says nothing else.
void apply_training_defaults(const CLI::App& cmd, const Config& cfg, CommonOpts& o) {
  const Config::TrainingDefaults& d = cfg.training;
  if (cmd.count("--warmup") == 0 && d.warmup_fraction >= 0) {
    // A resumed run keeps the warmup it started with, even when --steps grows.
    const std::optional<RunSettings> saved = o.t.resume ? read_run_file(o.out) : std::nullopt;
    o.t.schedule.warmup = saved ? saved->warmup : std::llround(d.warmup_fraction * static_cast<double>(o.t.steps));
    std::fprintf(stderr, "warmup %lld steps (%s, the model's strata_training; --warmup overrides)\n",
                 (long long)o.t.schedule.warmup,
                 saved ? "as the run started" : cat(d.warmup_fraction, " of ", o.t.steps, " steps").c_str());
  }
  if (o.decay.empty() && d.decay_all) {
    o.t.adamw.decay_vectors = true;
    std::fprintf(stderr, "weight decay on every parameter (the model's strata_training; --decay overrides)\n");
  }
}

void check_seq(const Config& cfg, int64_t seq) {
  if (seq > cfg.max_position_embeddings)
    std::fprintf(stderr, "note: --seq %lld is longer than max_position_embeddings=%lld (the length it was made for)\n",
                 static_cast<long long>(seq), static_cast<long long>(cfg.max_position_embeddings));
}

// What the run trains on, for the run settings compared on --resume: the data's
// fingerprint and its order.
void set_data_identity(CommonOpts& o, nlohmann::ordered_json fingerprint, const std::string& source) {
  fingerprint["shuffle"] = o.shuffle;
  o.t.data_fingerprint = std::move(fingerprint);
  o.t.data_source = source;
}

// The tokenizer copied into train's checkpoints: --tokenizer, else the data's
// (meta.json), else the one beside --init; checked against the model's
// vocabulary so that every checkpoint runs with it.
std::string train_tokenizer(const std::string& given, const std::string& data_tok, const std::string& init_tok,
                            int64_t vocab) {
  std::string path = given;
  if (path.empty() && !data_tok.empty()) {
    if (fs::is_regular_file(data_tok)) path = data_tok;
    else std::fprintf(stderr, "warning: the data's tokenizer %s no longer exists\n", data_tok.c_str());
  }
  if (path.empty()) path = init_tok;
  if (path.empty()) {
    std::fprintf(stderr, "note: no tokenizer (--tokenizer FILE): the checkpoints will have no tokenizer.model\n");
    return path;
  }
  const auto tok = Tokenizer::load(path);
  check_tokenizer_fits(path, tok->vocab_size(), vocab);
  return path;
}

// The options of `sft --hypernet` (docs/hypernet.md).
struct HyperOpts {
  bool on = false;
  int stage = 1;
  int64_t chunk = 0, max_query = 256, max_answer = 256;
  std::string context = "full";
  bool detach = false;
  double llm_lr = 3e-5;
};

void add_hyper_options(CLI::App* cmd, HyperOpts& h) {
  cmd->add_flag("--hypernet", h.on,
                "per-chunk SFT of a model with a hypernetwork (recursive soft prompting; --lr is the hypernetwork's, "
                "default 1e-4)");
  cmd->add_option("--stage", h.stage, "--hypernet: 1 (the model frozen, embeddings included) or 2 (both train)")
      ->check(CLI::IsMember({1, 2}));
  cmd->add_option("--llm-lr", h.llm_lr, "--hypernet --stage 2: the model's learning rate (default 3e-5)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--chunk", h.chunk, "--hypernet or chunked: answer tokens per chunk (default: the model's, 16)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-query", h.max_query,
                  "--hypernet or chunked: longest query in tokens (longer ones are an error)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-answer", h.max_answer, "--hypernet or chunked: answers are cut to this many tokens")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--chunk-context", h.context,
                  "full (query and earlier chunks) or recurrent (the last token only); without --hypernet: chunked "
                  "SFT with no soft prompt, the baseline of a hypernetwork")
      ->check(CLI::IsMember({"full", "recurrent"}));
  cmd->add_flag("--detach-between-chunks", h.detach, "--hypernet: truncated backpropagation between chunks");
}

// `sft --hypernet`: micro-batches of --batch examples in a seeded epoch order;
// each step's loss is normalised by the answer tokens of all its micro-batches.
void run_hypernet_sft(CommonOpts& o, const HyperOpts& h, Loaded& l,
                      std::vector<SftExample> examples, std::vector<SftExample> val) {
  Model& model = *l.model;
  if (h.on && !model.hypernet())
    fail("sft --hypernet: ", o.init, " has no hypernetwork (add one with `strata convert --add-hypernet`)");
  const Config& cfg = model.config();
  int64_t cut = 0, val_cut = 0;
  const auto train_ex = hyper_examples(examples, cfg.bos_token_id, h.max_query, h.max_answer, &cut);
  const auto val_ex = hyper_examples(val, cfg.bos_token_id, h.max_query, h.max_answer, &val_cut);
  if (cut + val_cut > 0)
    std::fprintf(stderr, "note: %lld answers longer than --max-answer %lld were cut (without their EOS)\n",
                 (long long)(cut + val_cut), (long long)h.max_answer);
  int64_t eos_only = 0;
  for (const HyperExample& e : train_ex) eos_only += e.answer.size() == 1 && e.answer[0] == l.tokenizer->eos_id();
  if (eos_only > 0)
    std::fprintf(stderr, "note: %lld examples have an empty completion: their whole answer is the end marker\n",
                 (long long)eos_only);
  HyperSftOptions so;
  so.chunk = h.chunk > 0 ? h.chunk : cfg.hypernet.chunk;
  so.context = h.context == "full" ? ChunkContext::Full : ChunkContext::Recurrent;
  so.detach_between_chunks = h.detach;
  so.embed_grads = h.stage == 2;
  so.soft_prompt = h.on;
  // Two parameter groups: the hypernetwork at --lr; the model frozen (stage 1)
  // or at --llm-lr (stage 2). The user's --param-group rules come after.
  // Without --hypernet (chunked SFT, no soft prompt) every parameter trains.
  std::vector<ParamGroupRule> rules;
  ParamGroupRule llm{"*"}, hyper{"hypernet.*"};
  if (h.stage == 1) llm.frozen = true;
  else llm.lr_scale = h.llm_lr / o.lr;
  hyper.lr_scale = 1.0;
  if (h.on) {
    rules.push_back(llm);
    rules.push_back(hyper);
  }
  rules.insert(rules.end(), o.t.adamw.rules.begin(), o.t.adamw.rules.end());
  o.t.adamw.rules = rules;
  o.t.data_fingerprint["chunks"] = {{"hypernet", h.on},         {"stage", h.stage},
                                     {"chunk", so.chunk},        {"context", h.context},
                                     {"detach", h.detach},       {"max_query", h.max_query},
                                     {"max_answer", h.max_answer}};
  if (h.on && h.stage == 2) o.t.data_fingerprint["chunks"]["llm_lr"] = h.llm_lr;
  model.set_hypernet_chunk(so.chunk);  // saved with every checkpoint: generation uses the trained chunk
  const int64_t B = o.t.batch, n = static_cast<int64_t>(train_ex.size());
  const EpochOrder order(n, o.shuffle == "on", o.t.seed);
  auto answer_tokens = [&](int64_t m) {  // of global micro-batch m
    int64_t t = 0;
    for (int64_t r = 0; r < B; ++r) t += static_cast<int64_t>(train_ex[order.item(m * B + r)].answer.size());
    return t;
  };
  const MicroStepFn step = [&](const MicroBatch& mb) {
    // The loss is normalised by the answer tokens of the whole step, over all ranks.
    int64_t norm = 0;
    for (int64_t k = mb.step_first; k < mb.step_first + mb.step_count; ++k) norm += answer_tokens(k);
    std::vector<HyperExample> batch;
    for (int64_t r = 0; r < B; ++r) batch.push_back(train_ex[order.item(mb.index * B + r)]);
    const auto r = hypernet_sft(model, batch, so, static_cast<double>(norm), true);
    return MicroResult{r.sum / static_cast<double>(norm), answer_tokens(mb.index)};
  };
  EvalFn eval;
  if (!val_ex.empty())
    eval = [&](int64_t i) {
      std::vector<HyperExample> b;
      for (int64_t r = 0; r < B; ++r) b.push_back(val_ex[(i * B + r) % static_cast<int64_t>(val_ex.size())]);
      return hypernet_sft(model, b, so, 1.0, false);
    };
  auto hyper_params = [&] {
    for (const auto& [g, c] : model.param_counts().by_group)
      if (g == "hypernet") return c;
    return int64_t{0};
  };
  if (h.on)
    std::fprintf(stderr, "sft --hypernet stage %d: %lld examples, chunks of %lld, %s context, %lld hypernetwork "
                 "parameters%s\n", h.stage, (long long)n, (long long)so.chunk, h.context.c_str(),
                 (long long)hyper_params(),
                 h.stage == 1 ? " (the model frozen)" : cat(" and the model at lr ", h.llm_lr).c_str());
  else
    std::fprintf(stderr, "chunked sft without a soft prompt: %lld examples, chunks of %lld, %s context\n",
                 (long long)n, (long long)so.chunk, h.context.c_str());
  auto r = train(model, o.t, step, eval);
  std::printf("final step %lld  loss %.4f%s\n", (long long)r.last_step, r.last_loss,
              r.last_val_loss >= 0 ? ("  val_loss " + std::to_string(r.last_val_loss)).c_str() : "");
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
  cmd->callback([o, cmd] {
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
    std::string init_tokenizer;
    if (!o->init.empty()) {
      Checkpoint ck = load_checkpoint(o->init);
      init_tokenizer = ck.tokenizer_path;
      model = Model::from_weights(ck.config, ck.weights);
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
    apply_training_defaults(*cmd, cfg, *o);
    check_seq(cfg, o->t.seq);
    train_data.check_vocab(cfg.vocab_size);
    if (val_data) val_data->check_vocab(cfg.vocab_size);
    o->t.tokenizer = train_tokenizer(o->tokenizer, train_data.meta().tokenizer, init_tokenizer, cfg.vocab_size);
    set_data_identity(*o, token_data_fingerprint(train_data), o->data);
    if (o->t.eval_every > 0 && !val_data)
      std::fprintf(stderr, "warning: --eval-every %lld: %s has no val split of more than --seq tokens, no validation\n",
                   (long long)o->t.eval_every, o->data.c_str());
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
    std::printf("final step %lld  loss %.4f%s\n", (long long)r.last_step, r.last_loss,
                r.last_val_loss >= 0 ? ("  val_loss " + std::to_string(r.last_val_loss)).c_str() : "");
  });
}

void register_sft(CLI::App& app) {
  struct Opts : CommonOpts {
    std::vector<std::string> data, val_data;
    double val_fraction = 0;
    std::string format = "zephyr";
    HyperOpts hyper;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("sft", "supervised fine-tuning on chat JSONL (loss on assistant tokens)");
  add_hyper_options(cmd, o->hyper);
  cmd->add_option("--init", o->init, "model directory to fine-tune")->required();
  cmd->add_option("--data", o->data, "JSONL files: {\"messages\": [...]} or {\"prompt\", \"completion\"}")->required();
  cmd->add_option("--template", o->format,
                  "chat template: zephyr, chatml, llama-2, or none (plain text: prompt then completion, loss on the "
                  "completion)");
  auto* vd = cmd->add_option("--val-data", o->val_data, "held-out JSONL files (same format) for --eval-every");
  auto* vf = cmd->add_option("--val-fraction", o->val_fraction,
                             "hold out the last fraction of the --data examples for --eval-every (0: none)")
                 ->check(CLI::Range(0.0, 1.0));
  vd->excludes(vf);
  add_common(cmd, *o);
  cmd->callback([o, cmd] {
    const HyperOpts& h = o->hyper;
    const bool chunked = h.on || cmd->count("--chunk-context") > 0;
    for (const char* opt : {"--stage", "--llm-lr", "--detach-between-chunks"})
      if (!h.on && cmd->count(opt) > 0) fail(opt, " applies to --hypernet only");
    for (const char* opt : {"--chunk", "--max-query", "--max-answer"})
      if (!chunked && cmd->count(opt) > 0) fail(opt, " applies to --hypernet or --chunk-context only");
    if (h.on) {  // the documented defaults of recursive soft prompting (docs/hypernet.md)
      if (cmd->count("--lr") == 0) o->lr = 1e-4;
      if (cmd->count("--wd") == 0) o->wd = 0;
      if (cmd->count("--beta2") == 0) o->beta2 = 0.999;
    }
    finish_options(*o);
    if (h.on && cmd->count("--warmup") == 0) {  // 3% of the steps; a resumed run keeps the warmup it started with
      const std::optional<RunSettings> saved = o->t.resume ? read_run_file(o->out) : std::nullopt;
      o->t.schedule.warmup = saved ? saved->warmup : std::llround(0.03 * static_cast<double>(o->t.steps));
    }
    const bool has_val = !o->val_data.empty() || o->val_fraction > 0;
    if (o->t.eval_every > 0 && !has_val)
      fail("sft: --eval-every ", o->t.eval_every, " needs validation data: give --val-data FILE... or --val-fraction F");
    Loaded l = load(ModelFlags{o->init, o->tokenizer, o->threads}, true);
    check_seq(l.model->config(), o->t.seq);
    o->t.tokenizer = l.tokenizer->path();  // the one loaded (e.g. tok512.model beside a llama2.c .bin)
    const ChatFormat format = parse_chat_format(o->format);
    const std::string limit = cat("--seq ", o->t.seq, " + 1");
    const int64_t max_len = chunked ? 0 : o->t.seq + 1;  // (chunked: --max-query and --max-answer)
    auto examples = load_sft_jsonl(o->data, *l.tokenizer, format, max_len, nullptr, limit);
    if (examples.empty()) fail("sft: no trainable sample in the data");
    std::vector<SftExample> val = o->val_data.empty()
                                      ? split_off_validation(examples, o->val_fraction)
                                      : load_sft_jsonl(o->val_data, *l.tokenizer, format, max_len, nullptr, limit);
    if (has_val && val.empty()) fail("sft: no sample with assistant tokens in --val-data");
    if (chunked) {
      set_data_identity(*o, sft_fingerprint(examples), o->data.front());
      return run_hypernet_sft(*o, h, l, std::move(examples), std::move(val));
    }
    const auto fp = sft_fingerprint(examples);
    std::string files;
    for (const auto& f : o->data) files += (files.empty() ? "" : " ") + f;
    set_data_identity(*o, fp, files);
    std::fprintf(stderr, "sft: %lld samples, %lld tokens, %lld with loss%s\n", (long long)fp["examples"].get<int64_t>(),
                 (long long)fp["tokens"].get<int64_t>(), (long long)fp["loss_tokens"].get<int64_t>(),
                 val.empty() ? "" : cat("; ", val.size(), " held out for validation").c_str());
    SftBatcher batcher(std::move(examples), o->t.batch, o->t.seq, o->shuffle == "on", o->t.seed);
    std::unique_ptr<SftBatcher> val_batcher;
    BatchFn val_fn;
    if (!val.empty()) {
      val_batcher = std::make_unique<SftBatcher>(std::move(val), o->t.batch, o->t.seq, false, 0);
      if (o->t.eval_every == 0)
        std::fprintf(stderr, "note: the validation data is evaluated only with --eval-every N\n");
      // More micro-batches than the set has would count examples twice.
      if (o->t.eval_batches > val_batcher->micro_batches_per_epoch()) {
        std::fprintf(stderr, "note: --eval-batches %lld: the validation set has %lld micro-batches, evaluating those\n",
                     (long long)o->t.eval_batches, (long long)val_batcher->micro_batches_per_epoch());
        o->t.eval_batches = val_batcher->micro_batches_per_epoch();
      }
      val_fn = [&](int64_t m, int32_t* in, int32_t* tg) { val_batcher->micro_batch(m, in, tg); };
    }
    auto r = train(*l.model, o->t,
                   [&](int64_t m, int32_t* in, int32_t* tg) { batcher.micro_batch(m, in, tg); }, val_fn);
    std::printf("final step %lld  loss %.4f%s\n", (long long)r.last_step, r.last_loss,
                r.last_val_loss >= 0 ? ("  val_loss " + std::to_string(r.last_val_loss)).c_str() : "");
  });
}

}  // namespace strata::cli
