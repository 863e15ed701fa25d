// The training loop shared by `strata train` and `strata sft`: micro-batches
// with gradient accumulation, non-finite and spike skipping, global-norm
// clipping, AdamW on a warmup + cosine schedule, logging, evaluation, atomic
// checkpoints and exact resume.
//
// A run directory holds one run. A fresh run (resume = false) into a directory
// with checkpoints or logged steps is refused; resume = true continues the
// newest complete checkpoint only when the run settings (RunSettings: seed,
// sequence length, global batch, schedule, weight decay, data fingerprint)
// equal the saved ones. `steps` may differ on resume (not below the
// checkpoint's step): the schedule then decays over the new total from the
// checkpoint on, so a run extended from 1000 to 2000 steps is not the same run
// as one started with 2000 steps (its first 1000 steps followed the shorter
// cosine).
//
// Over several processes (dist::world(), docs/distributed.md) each rank runs
// `accum` micro-batches of every step: step s takes the global micro-batches
// [first, first + accum x ranks), rank r those from first + r x accum, so a
// step over N ranks is the computation one process does with accum x N.
// Gradients are averaged across ranks (train/grad_sync.h), every rank takes
// the same optimizer step, the logged loss is the mean over all ranks, and
// rank 0 alone checks the run directory, logs and writes checkpoints; the
// others start from rank 0's weights (and, resuming, its optimizer state), so
// the directory need not be shared. A checkpoint is the same whatever the
// number of ranks: a run may resume with another. With the same global
// batch (--batch x --accum x ranks) it continues as the same computation;
// with another (the same --batch, another number of ranks) it reads on from
// the same sample of the data order.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "strata/model.h"
#include "train/grad_sync.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace strata {

struct TrainerOptions {
  std::string run_dir;
  int64_t steps = 1000;
  int64_t batch = 8, seq = 256, accum = 1;
  LrSchedule schedule;  // lr, min_lr, warmup, total_steps (= steps)
  AdamWConfig adamw;
  float clip = 1.0f;               // <= 0: no clipping
  double skip_spike_z = 0;         // > 0: skip a step whose loss is this many std devs above the recent mean
  int64_t eval_every = 0;          // 0: never
  int64_t eval_batches = 8;
  int64_t save_every = 0;          // 0: only at the end
  int keep_last = 0;               // 0: keep all checkpoints
  bool resume = false;
  uint64_t seed = 0;
  bool bf16 = false;                    // mixed precision: BF16 products (AMX or AVX512-BF16) with F32 master weights
  bool checkpoint_activations = false;  // recompute each block's activations in backward
  GradSyncOptions sync;                 // several ranks: buckets, ZeRO-1, overlap
  // Copied into every checkpoint as tokenizer.model before it is marked
  // complete, so each checkpoint is a runnable model directory ("": none).
  std::string tokenizer;
  // What the run trains on (token_data_fingerprint / sft_fingerprint), part of
  // the run settings compared on resume, and the paths, for messages.
  nlohmann::ordered_json data_fingerprint = nlohmann::ordered_json::object();
  std::string data_source;
};

// Fills inputs/targets [B, T] for global micro-batch m (0-based); stateless in m.
using BatchFn = std::function<void(int64_t m, int32_t* inputs, int32_t* targets)>;

struct TrainerResult {
  int64_t start_step = 0, last_step = 0;
  double last_loss = 0, last_val_loss = -1;
  int64_t skipped = 0;
};

// The general form: train_step(mb) runs global micro-batch mb.index (0-based)
// forward and backward, adding its share of d(step loss)/dθ into the
// gradients, and returns its share of the step's loss and the tokens it
// processed. The step is the micro-batches [mb.step_first, mb.step_first +
// mb.step_count) over all ranks. eval(i) returns the summed loss and count of
// validation micro-batch i (may be empty).
struct MicroBatch {
  int64_t index = 0, step_first = 0, step_count = 1;
};
struct MicroResult {
  double loss = 0;
  int64_t tokens = 0;
};
using MicroStepFn = std::function<MicroResult(const MicroBatch& mb)>;
using EvalFn = std::function<Model::LossSum(int64_t i)>;
TrainerResult train(Model& model, const TrainerOptions& opts, const MicroStepFn& train_step, const EvalFn& eval);

// Trains `model` on [batch, seq] token micro-batches, the step's loss the mean
// of the micro-batches' mean losses. `val` may be empty (no evaluation).
// With opts.resume and a complete checkpoint in run_dir, the model weights,
// optimizer state and step are restored from it first. Errors (one line each):
// nothing trainable, a used run directory without resume, settings that differ
// from the saved run's, steps below the checkpoint's step, a missing tokenizer.
TrainerResult train(Model& model, const TrainerOptions& opts, const BatchFn& train_batches,
                    const BatchFn& val_batches);

}  // namespace strata
