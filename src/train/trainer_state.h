// What a run is and where it stands, as JSON: the settings that identify a
// run (RunSettings), and the trainer's state saved in every checkpoint
// (TrainerState, RUN_DIR/checkpoint-N/trainer_state.json). Saving and resuming
// go through the same to_json / from_json, so resume reads exactly what a save
// wrote. trainer_state.json:
//
//   {"step": 12, "updates": 12, "total_steps": 12, "samples": 24, "recent_losses": [...],
//    "run": {"seed": 3, "seq": 16, "micro_batch": 2, "accum": 1, "ranks": 1, "global_batch": 2,
//            "lr": 0.003, "min_lr": 0.0003, "warmup": 2, "weight_decay": 0.1,
//            "decay": "matrices", "schedule": "warmup-cosine", "data": {...fingerprint...}, "data_source": "tokens.bin"}}
//
// RUN_DIR/run.json holds the "run" object alone, written when a run starts, so
// the directory of a run that died before its first checkpoint still says
// whose metrics.jsonl it holds.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/sft_data.h"
#include "train/token_data.h"

namespace strata {

inline constexpr const char* kRunFile = "run.json";
inline constexpr const char* kScheduleKind = "warmup-cosine";  // the only one (train/schedule.h)

// The settings that make two invocations the same run. Resuming with other
// values would silently continue another experiment: another seed reshuffles
// the data, another sequence length or global batch reads other windows at the
// same step, another rate or decay follows another curve.
struct RunSettings {
  uint64_t seed = 0;
  int64_t seq = 0;
  // Sequences per optimizer step: micro_batch * accum * ranks. Only the product
  // is compared: step s reads the rows [(s-1) * G, s * G) of the data order
  // (G = global batch) however the step is split into micro-batches.
  int64_t micro_batch = 0, accum = 1, ranks = 1;
  double lr = 0, min_lr = 0;
  int64_t warmup = 0;
  double weight_decay = 0;
  std::string decay = "matrices";  // which parameters decay: "matrices" or "all" (AdamWConfig::decay_vectors)
  std::string schedule = kScheduleKind;
  // What the run trains on (token_data_fingerprint / sft_fingerprint), compared
  // key by key. data_source (paths) is only shown: moved data is the same data.
  nlohmann::ordered_json data = nlohmann::ordered_json::object();
  std::string data_source;

  int64_t global_batch() const { return micro_batch * accum * ranks; }
  nlohmann::ordered_json to_json() const;
  // Errors name `origin` (the file) and the field.
  static RunSettings from_json(const nlohmann::ordered_json& j, const std::string& origin);
};

// Every compared field that differs, in one line ("seed (--seed): saved 3,
// given 4; seq (--seq): saved 16, given 32"), or "" when the runs agree.
// `first` and `second` name the two sides ("saved", "given").
std::string describe_mismatch(const RunSettings& saved, const RunSettings& given, const char* first = "saved",
                              const char* second = "given");

struct TrainerState {
  int64_t step = 0;         // the last completed step
  int64_t updates = 0;      // optimizer updates applied (AdamW's t; skipped steps do not count)
  int64_t total_steps = 0;  // --steps of the run that saved it (0: not recorded)
  // Sequences of the data order consumed so far, over all ranks: the data
  // position, kept in samples so a run resumed with another number of ranks
  // (another global batch) reads on from the same place. -1: not recorded
  // (older states), then step x the saved global batch.
  int64_t samples = -1;
  std::vector<double> recent_losses;  // for --skip-spikes, oldest first
  std::optional<RunSettings> run;     // absent in states saved before it was recorded

  std::string to_json() const;
  static TrainerState from_json(const std::string& text, const std::string& origin);
};

// trainer_state.json of a checkpoint. A corrupt or truncated file, or a missing
// or mistyped field, is a one-line error naming the file.
TrainerState read_trainer_state(const std::string& path);

// RUN_DIR/run.json (atomic), and reading it back (nullopt when absent).
void write_run_file(const std::string& run_dir, const RunSettings& s);
std::optional<RunSettings> read_run_file(const std::string& run_dir);

// Data fingerprints for RunSettings::data. Token data: its number of tokens
// and an FNV-1a hash of up to 16384 evenly spaced tokens (cheap on any size).
// SFT: the number of examples, tokens and loss tokens, and a hash of every id
// and mask (so another template or --val-fraction is other data).
nlohmann::ordered_json token_data_fingerprint(const TokenData& d);
nlohmann::ordered_json sft_fingerprint(const std::vector<SftExample>& examples);

}  // namespace strata
