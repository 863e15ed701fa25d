#include "train/trainer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <optional>

#include "model/checkpoint.h"
#include "io/safetensors.h"
#include "strata/error.h"
#include "kernels/kernels.h"
#include "model/convert_modified.h"
#include "kernels/exec.h"
#include "kernels/ops.h"
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

RunSettings run_settings(const TrainerOptions& o) {
  RunSettings r;
  r.seed = o.seed;
  r.seq = o.seq;
  r.micro_batch = o.batch;
  r.accum = o.accum;
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
    const std::string diff = describe_mismatch(*st.run, given);
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

}  // namespace

TrainerResult train(Model& model, const TrainerOptions& o, const BatchFn& train_batches, const BatchFn& val_batches) {
  const int64_t B = o.batch, T = o.seq, rows = B * T;
  std::vector<int32_t> in(static_cast<size_t>(rows)), tg(static_cast<size_t>(rows));
  const MicroStepFn step = [&](int64_t m) {
    train_batches(m, in.data(), tg.data());
    auto r = model.train_batch(in.data(), tg.data(), B, T, 1.0f / static_cast<float>(o.accum));
    return MicroResult{r.sum / static_cast<double>(r.count) / static_cast<double>(o.accum), rows};
  };
  EvalFn eval;
  if (val_batches)
    eval = [&](int64_t i) {
      val_batches(i, in.data(), tg.data());
      return model.eval_batch(in.data(), tg.data(), B, T);
    };
  return train(model, o, step, eval);
}

TrainerResult train(Model& model, const TrainerOptions& o, const MicroStepFn& train_step, const EvalFn& eval) {
  using clock = std::chrono::steady_clock;
  model.enable_training();
  if (!model.causal())
    std::fprintf(stderr, "warning: %s; training it is not causal language modelling\n", kGlobalContextWarning);
  model.set_checkpoint_activations(o.checkpoint_activations);
  model.set_exec(model.exec().with_precision(o.bf16 ? ops::Precision::BF16 : ops::Precision::F32));
  if (o.bf16 && !model.exec().bf16_products())
    std::fprintf(stderr, "note: BF16 products need AVX512-BF16 or AMX, which this CPU does not have: training in F32\n");
  LrSchedule sched = o.schedule;
  sched.total_steps = o.steps;
  validate(sched);
  if (!o.tokenizer.empty() && !std::filesystem::is_regular_file(o.tokenizer))
    fail(o.tokenizer, ": tokenizer not found (it is copied into every checkpoint)");
  AdamW opt(train_params(model), o.adamw);
  // PyTorch's clip_grad_norm_ and its finiteness check see only the parameters
  // handed to the optimizer: frozen ones must not count.
  const std::vector<TrainParam> params = opt.trainable_params();
  if (opt.num_trainable() == 0)
    fail("nothing to train: every parameter is frozen (--param-group ...:frozen) or a buffer");
  std::filesystem::create_directories(o.run_dir);

  // Resume reads the very TrainerState that save() writes.
  TrainerState state;
  state.run = run_settings(o);
  const auto resume_from = open_run_dir(o, *state.run);
  if (resume_from) {
    const TrainerState& saved = resume_from->state;
    load_weights_into(model, resume_from->dir);
    WeightSet os;
    read_safetensors(resume_from->dir + "/" + kOptimizerFile, os);
    opt.load_state(os);
    state.step = saved.step;
    state.updates = saved.updates;
    state.recent_losses = saved.recent_losses;
    std::fprintf(stderr, "resuming from %s (step %lld)\n", resume_from->dir.c_str(), (long long)state.step);
  }
  state.total_steps = o.steps;
  write_run_file(o.run_dir, *state.run);
  TrainerResult res;
  res.start_step = res.last_step = state.step;
  if (res.start_step >= o.steps)
    std::fprintf(stderr, "nothing to do: the run is already at step %lld of --steps %lld\n", (long long)res.start_step,
                 (long long)o.steps);
  int64_t updates = state.updates;  // optimizer steps applied (AdamW's bias-correction t)
  std::deque<double> recent(state.recent_losses.begin(), state.recent_losses.end());
  MetricsLog log(o.run_dir + "/" + kMetricsFile, resume_from.has_value(), res.start_step);

  auto save = [&](int64_t step) {
    state.step = step;
    state.updates = updates;
    state.recent_losses.assign(recent.begin(), recent.end());
    log.sync();
    save_checkpoint(o.run_dir, step, model.config(), model.named_tensors(), opt.state(), state.to_json(),
                    o.keep_last, o.tokenizer);
  };
  auto evaluate = [&](int64_t step) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < o.eval_batches; ++i) {
      auto r = eval(i);
      sum += r.sum;
      count += r.count;
    }
    const double v = sum / static_cast<double>(count);
    log.write(nlohmann::ordered_json{{"step", step}, {"val_loss", v}});
    std::fprintf(stderr, "step %lld  val_loss %.4f\n", (long long)step, v);
    return v;
  };

  const auto t_start = clock::now();
  for (int64_t step = res.start_step + 1; step <= o.steps; ++step) {
    const auto t0 = clock::now();
    model.zero_grads();
    double loss = 0;
    int64_t tokens = 0;
    for (int64_t a = 0; a < o.accum; ++a) {
      const MicroResult r = train_step((step - 1) * o.accum + a);
      loss += r.loss;
      tokens += r.tokens;
    }
    const double norm = global_grad_norm(params);
    const double lr = lr_at(step, sched);
    std::string skip;
    if (!std::isfinite(loss) || !std::isfinite(norm) || !all_finite(params)) {
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
      if (o.clip > 0) clip_grads(params, norm, o.clip);
      opt.step(lr, ++updates);
      recent.push_back(loss);
      if (recent.size() > 64) recent.pop_front();
    } else {
      ++res.skipped;
      std::fprintf(stderr, "step %lld skipped: %s (loss %g, grad norm %g)\n", (long long)step, skip.c_str(), loss, norm);
    }
    const auto t1 = clock::now();
    const double dt = std::chrono::duration<double>(t1 - t0).count();
    const double tok_s = static_cast<double>(tokens) / dt;
    nlohmann::ordered_json line{{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens_per_s", tok_s}};
    if (!skip.empty()) line["skipped"] = skip;
    log.write(line);
    const double elapsed = std::chrono::duration<double>(t1 - t_start).count();
    const double eta = elapsed / static_cast<double>(step - res.start_step) * static_cast<double>(o.steps - step);
    std::fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  %.0f tok/s  ETA %s\n", (long long)step,
                 (long long)o.steps, loss, lr, norm, tok_s, fmt_duration(eta).c_str());
    res.last_loss = loss;
    res.last_step = step;
    if (o.eval_every > 0 && eval && step % o.eval_every == 0) res.last_val_loss = evaluate(step);
    if ((o.save_every > 0 && step % o.save_every == 0) || step == o.steps) save(step);
  }
  return res;
}

}  // namespace strata
