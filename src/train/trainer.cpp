#include "train/trainer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>

#include "model/checkpoint.h"
#include "io/safetensors.h"
#include "strata/error.h"
#include "kernels/kernels.h"
#include "model/convert_modified.h"
#include "kernels/exec.h"
#include "kernels/ops.h"
#include "train/run_state.h"

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

}  // namespace

TrainerResult train(Model& model, const TrainerOptions& o, const BatchFn& train_batches, const BatchFn& val_batches) {
  using clock = std::chrono::steady_clock;
  model.enable_training();
  if (!model.causal())
    std::fprintf(stderr, "warning: %s; training it is not causal language modelling\n", kGlobalContextWarning);
  model.set_checkpoint_activations(o.checkpoint_activations);
  model.set_exec(model.exec().with_precision(o.bf16 ? ops::Precision::BF16 : ops::Precision::F32));
  if (o.bf16 && !model.exec().bf16_products())
    std::fprintf(stderr, "note: BF16 products need AMX, which this CPU (or kernel) does not grant: training in F32\n");
  LrSchedule sched = o.schedule;
  sched.total_steps = o.steps;
  validate(sched);
  std::filesystem::create_directories(o.run_dir);
  AdamW opt(train_params(model), o.adamw);

  TrainerResult res;
  int64_t updates = 0;  // optimizer steps applied (AdamW's bias-correction t)
  std::deque<double> recent;
  if (o.resume) {
    if (auto ck = latest_checkpoint(o.run_dir)) {
      load_weights_into(model, *ck);
      WeightSet os;
      read_safetensors(*ck + "/" + kOptimizerFile, os);
      opt.load_state(os);
      std::ifstream f(*ck + "/" + kTrainerStateFile);
      const auto st = nlohmann::json::parse(f);
      res.start_step = st.at("step").get<int64_t>();
      updates = st.at("updates").get<int64_t>();
      for (double l : st.at("recent_losses")) recent.push_back(l);
      std::fprintf(stderr, "resuming from %s (step %lld)\n", ck->c_str(), (long long)res.start_step);
    } else {
      std::fprintf(stderr, "--resume: no complete checkpoint in %s, starting fresh\n", o.run_dir.c_str());
    }
  }
  MetricsLog log(o.run_dir + "/" + kMetricsFile, o.resume, res.start_step);

  const int64_t B = o.batch, T = o.seq, rows = B * T;
  std::vector<int32_t> in(static_cast<size_t>(rows)), tg(static_cast<size_t>(rows));
  auto params = opt.params();
  auto save = [&](int64_t step) {
    nlohmann::json st{{"step", step}, {"updates", updates}, {"recent_losses", recent}, {"seed", o.seed}};
    log.sync();
    save_checkpoint(o.run_dir, step, model.config(), model.named_tensors(), opt.state(), st.dump(2), o.keep_last);
  };
  auto evaluate = [&](int64_t step) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < o.eval_batches; ++i) {
      val_batches(i, in.data(), tg.data());
      auto r = model.eval_batch(in.data(), tg.data(), B, T);
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
    for (int64_t a = 0; a < o.accum; ++a) {
      const int64_t m = (step - 1) * o.accum + a;
      train_batches(m, in.data(), tg.data());
      auto r = model.train_batch(in.data(), tg.data(), B, T, 1.0f / static_cast<float>(o.accum));
      loss += r.sum / static_cast<double>(r.count) / static_cast<double>(o.accum);
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
    const double tok_s = static_cast<double>(rows * o.accum) / dt;
    nlohmann::ordered_json line{{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens_per_s", tok_s}};
    if (!skip.empty()) line["skipped"] = skip;
    log.write(line);
    const double elapsed = std::chrono::duration<double>(t1 - t_start).count();
    const double eta = elapsed / static_cast<double>(step - res.start_step) * static_cast<double>(o.steps - step);
    std::fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  %.0f tok/s  ETA %s\n", (long long)step,
                 (long long)o.steps, loss, lr, norm, tok_s, fmt_duration(eta).c_str());
    res.last_loss = loss;
    res.last_step = step;
    if (o.eval_every > 0 && val_batches && step % o.eval_every == 0) res.last_val_loss = evaluate(step);
    if ((o.save_every > 0 && step % o.save_every == 0) || step == o.steps) save(step);
  }
  return res;
}

}  // namespace strata
