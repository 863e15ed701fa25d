#include "train/trainer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>

#include "model/checkpoint.h"
#include "io/safetensors.h"
#include "strata/error.h"
#include "kernels/kernels.h"
#include "model/convert_modified.h"
#include "kernels/exec.h"
#include "kernels/ops.h"
#include "train/comm.h"
#include "train/grad_sync.h"
#include "train/run_state.h"
#include "train/trainer_state.h"

namespace strata {
namespace {

std::vector<TrainParam> train_params(Model& m) {
  std::vector<TrainParam> r;
  auto w = m.named_tensors();
  auto g = m.named_grads();
  for (size_t i = 0; i < w.size(); ++i) {
    const bool buffer = g[i].second.numel() == 0 || !g[i].second.data;
    r.push_back({w[i].first, w[i].second.f32(), buffer ? nullptr : g[i].second.f32(), w[i].second.numel(),
                 w[i].second.shape, buffer});
  }
  return r;
}

// Copies the weights of checkpoint `dir` into the (training) model's tensors.
void load_weights_into(Model& m, const std::string& dir) {
  Checkpoint ck = load_checkpoint(dir);
  for (auto& [name, t] : m.named_tensors()) {
    const Tensor* src = ck.weights.find(name);
    if (!src || src->shape != t.shape) fail(dir, ": checkpoint tensor '", name, "' is missing or has another shape");
    to_f32(src->dtype, src->data, t.f32(), t.numel());
  }
}

std::string fmt_duration(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  else std::snprintf(buf, sizeof buf, "%.0fs", s);
  return buf;
}

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

RunSettings run_settings(const TrainerOptions& o) {
  RunSettings r;
  r.seed = o.seed;
  r.seq = o.seq;
  r.micro_batch = o.batch;
  r.accum = o.accum;
  r.ranks = dist::world().size();
  r.lr = o.schedule.lr;
  r.min_lr = o.schedule.min_lr;
  r.warmup = o.schedule.warmup;
  r.weight_decay = o.adamw.weight_decay;
  r.decay = o.adamw.decay_vectors ? "all" : "matrices";
  r.data = o.data_fingerprint;
  r.data_source = o.data_source;
  return r;
}

struct ResumePoint {
  std::string dir;
  TrainerState state;
};

// One run per directory: refuses a fresh run into a used one and a resume
// with other settings than the saved run's. Returns the checkpoint to resume
// from, if any.
std::optional<ResumePoint> open_run_dir(const TrainerOptions& o, const RunSettings& given) {
  const auto ck = latest_checkpoint(o.run_dir);
  const int64_t logged = last_logged_step(o.run_dir + "/" + kMetricsFile);
  const std::string how = "pass --resume to continue it, or give another output directory (-o) for a new run";
  if (!o.resume) {
    if (ck) fail(o.run_dir, ": holds another run (", std::filesystem::path(*ck).filename().string(), "): ", how);
    if (logged >= 0) fail(o.run_dir, ": holds another run (", kMetricsFile, " up to step ", logged, "): ", how);
    return std::nullopt;
  }
  if (!ck) {
    // Nothing to continue from. A metrics.jsonl of this same run (one that died
    // before its first checkpoint) is redone from step 1; another run's is not
    // overwritten.
    if (logged >= 0) {
      const auto prev = read_run_file(o.run_dir);
      const std::string whose = cat(o.run_dir, ": --resume: no complete checkpoint, and ", kMetricsFile,
                                    " (up to step ", logged, ") is of ");
      if (!prev) fail(whose, "a run with unknown settings (no ", kRunFile, "): give another output directory (-o)");
      const std::string diff = describe_mismatch(*prev, given);
      if (!diff.empty()) fail(whose, "another run: ", diff, "; give another output directory (-o)");
      std::fprintf(stderr, "--resume: no complete checkpoint in %s: starting fresh (steps 1..%lld were never checkpointed)\n",
                   o.run_dir.c_str(), (long long)logged);
    } else {
      std::fprintf(stderr, "--resume: no complete checkpoint in %s, starting fresh\n", o.run_dir.c_str());
    }
    return std::nullopt;
  }
  ResumePoint rp{*ck, read_trainer_state(*ck + "/" + kTrainerStateFile)};
  const TrainerState& st = rp.state;
  if (st.run) {
    // Another number of ranks with the same micro-batch is the same run on
    // other machines: the global batch follows the ranks, the data position
    // (in samples) is kept.
    RunSettings compared = given;
    if (st.run->ranks != given.ranks && st.run->micro_batch == given.micro_batch &&
        st.run->global_batch() != given.global_batch()) {
      compared.accum = st.run->accum;
      compared.ranks = st.run->ranks;
      std::fprintf(stderr,
                   "note: the run was saved with %lld rank(s) (global batch %lld), it goes on with %lld (global batch "
                   "%lld): the data continues in the same order from where it stopped\n",
                   (long long)st.run->ranks, (long long)st.run->global_batch(), (long long)given.ranks,
                   (long long)given.global_batch());
    }
    const std::string diff = describe_mismatch(*st.run, compared);
    if (!diff.empty())
      fail(*ck, ": --resume with other settings than the saved run's: ", diff,
           "; give the saved values, or another output directory (-o) for a new run");
  } else {
    std::fprintf(stderr, "note: %s records no run settings (saved by an older strata): they are not checked\n",
                 ck->c_str());
  }
  if (o.steps < st.step)
    fail("--steps ", o.steps, " is below step ", st.step, " of ", *ck, " (on resume --steps may change, but not below the checkpoint's step)");
  if (st.total_steps > 0 && o.steps != st.total_steps)
    std::fprintf(stderr,
                 "note: --steps %lld, the saved run had %lld: the learning-rate schedule now follows %lld steps "
                 "(this is not the same run as one started with --steps %lld)\n",
                 (long long)o.steps, (long long)st.total_steps, (long long)o.steps, (long long)o.steps);
  return rp;
}

// A gradient-sync hook on the model for the length of a run.
class HookGuard {
 public:
  HookGuard(Model& m, GradSync* sync) : m_(m) {
    if (sync) m_.set_backward_hook([sync](int stage) { sync->on_stage(stage); });
  }
  ~HookGuard() { m_.set_backward_hook(nullptr); }

 private:
  Model& m_;
};

// The non-frozen parameters' slices that this rank owns (ZeRO-1), as
// parameters of their own, for the norm, finiteness and clipping.
std::vector<TrainParam> owned_views(const AdamW& opt) {
  std::vector<TrainParam> out;
  for (size_t i = 0; i < opt.params().size(); ++i) {
    if (opt.settings(i).frozen) continue;
    const TrainParam& p = opt.params()[i];
    const ParamSlice& sl = opt.slice(i);
    if (sl.size() > 0) out.push_back({p.name, p.w + sl.lo, p.g + sl.lo, sl.size(), {sl.size()}, false});
  }
  return out;
}

TrainerResult train_impl(Model& model, const TrainerOptions& o, const MicroStepFn& train_step, const EvalFn& eval,
                         bool single_backward);

}  // namespace

TrainerResult train(Model& model, const TrainerOptions& o, const BatchFn& train_batches, const BatchFn& val_batches) {
  const int64_t B = o.batch, T = o.seq, rows = B * T;
  std::vector<int32_t> in(static_cast<size_t>(rows)), tg(static_cast<size_t>(rows));
  const MicroStepFn step = [&](const MicroBatch& mb) {
    train_batches(mb.index, in.data(), tg.data());
    const double n = static_cast<double>(mb.step_count);
    auto r = model.train_batch(in.data(), tg.data(), B, T, static_cast<float>(1.0 / n));
    return MicroResult{r.sum / static_cast<double>(r.count) / n, rows};
  };
  EvalFn eval;
  if (val_batches)
    eval = [&](int64_t i) {
      val_batches(i, in.data(), tg.data());
      return model.eval_batch(in.data(), tg.data(), B, T);
    };
  return train_impl(model, o, step, eval, true);
}

TrainerResult train(Model& model, const TrainerOptions& o, const MicroStepFn& train_step, const EvalFn& eval) {
  return train_impl(model, o, train_step, eval, false);
}

namespace {

TrainerResult train_impl(Model& model, const TrainerOptions& o, const MicroStepFn& train_step, const EvalFn& eval,
                         bool single_backward) {
  using clock = std::chrono::steady_clock;
  dist::Comm& comm = dist::world();
  const int ranks = comm.size();
  const bool root = comm.root();
  model.enable_training();
  if (!model.causal())
    std::fprintf(stderr, "warning: %s; training it is not causal language modelling\n", kGlobalContextWarning);
  model.set_checkpoint_activations(o.checkpoint_activations);
  model.set_exec(model.exec().with_precision(o.bf16 ? ops::Precision::BF16 : ops::Precision::F32));
  if (o.bf16 && !model.exec().bf16_products())
    std::fprintf(stderr, "note: BF16 products need AVX512-BF16 or AMX, which this CPU does not have: training in F32\n");
  LrSchedule sched = o.schedule;
  sched.total_steps = o.steps;
  // Rank 0's schedule (its warmup default may come from its run directory).
  double sched_values[3] = {sched.lr, sched.min_lr, static_cast<double>(sched.warmup)};
  comm.broadcast(sched_values, sizeof sched_values);
  sched.lr = sched_values[0];
  sched.min_lr = sched_values[1];
  sched.warmup = static_cast<int64_t>(sched_values[2]);
  validate(sched);
  if (root && !o.tokenizer.empty() && !std::filesystem::is_regular_file(o.tokenizer))
    fail(o.tokenizer, ": tokenizer not found (it is copied into every checkpoint)");

  // Several ranks: the buckets first, since with ZeRO-1 they decide which
  // slice of the optimizer state each rank holds.
  const std::vector<TrainParam> all = train_params(model);
  std::unique_ptr<GradSync> sync;
  std::vector<ParamSlice> slices;
  if (ranks > 1) {
    std::vector<bool> trainable;
    for (const TrainParam& p : all) trainable.push_back(!p.buffer && !resolve_param(p.name, p.shape, o.adamw).frozen);
    GradSyncOptions so = o.sync;
    so.overlap = so.overlap && single_backward;  // several backwards per micro-batch: reduce after them
    sync = std::make_unique<GradSync>(comm, all, trainable, model.grad_stages(), model.num_blocks(), so);
    if (so.zero) slices = sync->slices();
  } else if (o.sync.zero) {
    std::fprintf(stderr, "note: --zero 1 shards the optimizer state across ranks; in one process it changes nothing\n");
  }
  AdamW opt(all, o.adamw, slices);
  // PyTorch's clip_grad_norm_ and its finiteness check see only the parameters
  // handed to the optimizer: frozen ones must not count.
  const std::vector<TrainParam> params = opt.trainable_params();
  if (opt.num_trainable() == 0)
    fail("nothing to train: every parameter is frozen (--param-group ...:frozen) or a buffer");
  const std::vector<TrainParam> owned = sync && sync->zero() ? owned_views(opt) : params;
  if (sync)
    std::fprintf(stderr,
                 "data-parallel over %d ranks: %s MiB of gradients in %lld buckets per step, %s; optimizer state "
                 "%s MiB per rank%s\n",
                 ranks, mib(sync->bytes_per_step()).c_str(), (long long)sync->buckets(),
                 o.sync.overlap && single_backward ? "reduced during the backward" : "reduced after the backward",
                 mib(opt.moment_bytes()).c_str(),
                 sync->zero() ? cat(" (ZeRO-1; ", mib(opt.num_trainable() * 8), " MiB unsharded)").c_str() : "");

  // Rank 0 alone looks at the run directory; the others take its decision,
  // its state and its weights (resume reads the very TrainerState save() writes).
  TrainerState state;
  state.run = run_settings(o);
  state.run->warmup = sched.warmup;  // rank 0's
  if (ranks > 1) {  // every rank must have been started as the same run
    const std::string root_json = broadcast_string(comm, state.run->to_json().dump());
    const std::string diff =
        describe_mismatch(RunSettings::from_json(nlohmann::ordered_json::parse(root_json), "rank 0"), *state.run,
                          "rank 0", "this rank");
    if (!diff.empty())
      fail("rank ", comm.rank(), " was started with other settings than rank 0 (", diff,
           "): give every rank the same command line and data");
  }
  std::optional<ResumePoint> resume_from;
  std::optional<WeightSet> saved_moments;
  if (root) {
    std::filesystem::create_directories(o.run_dir);
    resume_from = open_run_dir(o, *state.run);
    if (resume_from) {
      load_weights_into(model, resume_from->dir);
      saved_moments.emplace();
      read_safetensors(resume_from->dir + "/" + kOptimizerFile, *saved_moments);
      opt.load_state(*saved_moments);
    }
  }
  const std::string saved_json = broadcast_string(comm, resume_from ? resume_from->state.to_json() : std::string());
  broadcast_tensors(comm, model.named_tensors());
  const bool resumed = !saved_json.empty();
  const int64_t global_batch = state.run->global_batch();
  int64_t samples = 0;  // the data position
  if (resumed) {
    broadcast_moments(comm, opt, saved_moments ? &*saved_moments : nullptr);
    saved_moments.reset();
    const TrainerState saved = TrainerState::from_json(saved_json, resume_from ? resume_from->dir : "rank 0's state");
    state.step = saved.step;
    state.updates = saved.updates;
    state.recent_losses = saved.recent_losses;
    samples = saved.samples >= 0 ? saved.samples : saved.step * (saved.run ? saved.run->global_batch() : global_batch);
    if (samples % o.batch != 0)
      fail("--resume: the saved run stopped at sample ", samples, ", which micro-batches of --batch ", o.batch,
           " do not reach");
    if (root)
      std::fprintf(stderr, "resuming from %s (step %lld, sample %lld)\n", resume_from->dir.c_str(),
                   (long long)state.step, (long long)samples);
  }
  state.total_steps = o.steps;
  if (root) write_run_file(o.run_dir, *state.run);
  TrainerResult res;
  res.start_step = res.last_step = state.step;
  if (res.start_step >= o.steps)
    std::fprintf(stderr, "nothing to do: the run is already at step %lld of --steps %lld\n", (long long)res.start_step,
                 (long long)o.steps);
  int64_t updates = state.updates;  // optimizer steps applied (AdamW's bias-correction t)
  std::deque<double> recent(state.recent_losses.begin(), state.recent_losses.end());
  std::optional<MetricsLog> log;
  if (root) log.emplace(o.run_dir + "/" + kMetricsFile, resumed, res.start_step);
  const HookGuard hook(model, sync.get());

  auto save = [&](int64_t step) {
    state.step = step;
    state.updates = updates;
    state.samples = samples;
    state.recent_losses.assign(recent.begin(), recent.end());
    const NamedTensors moments = gather_moments(comm, opt, sync.get());
    check_same_weights(comm, model.named_tensors());
    if (!root) return;
    log->sync();
    save_checkpoint(o.run_dir, step, model.config(), model.named_tensors(), moments, state.to_json(), o.keep_last,
                    o.tokenizer);
  };
  auto evaluate = [&](int64_t step) {
    // The validation micro-batches are shared out over the ranks.
    double sum = 0;
    int64_t count = 0;
    for (int64_t i = comm.rank(); i < o.eval_batches; i += ranks) {
      auto r = eval(i);
      sum += r.sum;
      count += r.count;
    }
    comm.allreduce_sum(&sum, 1);
    comm.allreduce_sum(&count, 1);
    const double v = sum / static_cast<double>(count);
    if (log) log->write(nlohmann::ordered_json{{"step", step}, {"val_loss", v}});
    std::fprintf(stderr, "step %lld  val_loss %.4f\n", (long long)step, v);
    return v;
  };

  const int64_t per_step = o.accum * ranks;  // micro-batches of a step over all ranks
  const auto t_start = clock::now();
  for (int64_t step = res.start_step + 1; step <= o.steps; ++step) {
    const auto t0 = clock::now();
    model.zero_grads();
    const int64_t first = samples / o.batch;
    double sums[2] = {0, 0};  // loss, tokens
    for (int64_t a = 0; a < o.accum; ++a) {
      if (sync && a + 1 == o.accum) sync->arm();
      const MicroResult r = train_step({first + comm.rank() * o.accum + a, first, per_step});
      sums[0] += r.loss;
      sums[1] += static_cast<double>(r.tokens);
    }
    if (sync) sync->finish();
    comm.allreduce_sum(sums, 2);
    const double loss = sums[0];
    const int64_t tokens = static_cast<int64_t>(sums[1]);
    double sq = grad_sum_squares(owned);
    int64_t finite = all_finite(owned);
    if (sync && sync->zero()) {
      comm.allreduce_sum(&sq, 1);
      comm.allreduce_min(&finite, 1);
    }
    const double norm = std::sqrt(sq);
    const double lr = lr_at(step, sched);
    std::string skip;
    if (!std::isfinite(loss) || !std::isfinite(norm) || !finite) {
      skip = "non-finite loss or gradient";
    } else if (o.skip_spike_z > 0 && recent.size() >= 16) {
      double mean = 0, var = 0;
      for (double l : recent) mean += l;
      mean /= recent.size();
      for (double l : recent) var += (l - mean) * (l - mean);
      const double sd = std::sqrt(var / recent.size());
      if (sd > 0 && (loss - mean) / sd > o.skip_spike_z) skip = "loss spike";
    }
    if (skip.empty()) {
      if (o.clip > 0) clip_grads(owned, norm, o.clip);
      opt.step(lr, ++updates);
      if (sync) sync->gather_weights();
      recent.push_back(loss);
      if (recent.size() > 64) recent.pop_front();
    } else {
      ++res.skipped;
      std::fprintf(stderr, "step %lld skipped: %s (loss %g, grad norm %g)\n", (long long)step, skip.c_str(), loss, norm);
    }
    samples += per_step * o.batch;
    const auto t1 = clock::now();
    const double dt = std::chrono::duration<double>(t1 - t0).count();
    const double tok_s = static_cast<double>(tokens) / dt;
    nlohmann::ordered_json line{{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens_per_s", tok_s},
                                {"samples", samples}};
    std::string comm_note;
    if (sync) {
      const double c = sync->wait_seconds() + (skip.empty() ? sync->gather_seconds() : 0.0);
      line["comm_s"] = c;
      comm_note = cat("  comm ", std::llround(c * 1000), " ms");
    }
    if (!skip.empty()) line["skipped"] = skip;
    if (log) log->write(line);
    const double elapsed = std::chrono::duration<double>(t1 - t_start).count();
    const double eta = elapsed / static_cast<double>(step - res.start_step) * static_cast<double>(o.steps - step);
    std::fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  %.0f tok/s%s  ETA %s\n", (long long)step,
                 (long long)o.steps, loss, lr, norm, tok_s, comm_note.c_str(), fmt_duration(eta).c_str());
    res.last_loss = loss;
    res.last_step = step;
    if (o.eval_every > 0 && eval && step % o.eval_every == 0) res.last_val_loss = evaluate(step);
    if ((o.save_every > 0 && step % o.save_every == 0) || step == o.steps) save(step);
  }
  return res;
}

}  // namespace
}  // namespace strata
