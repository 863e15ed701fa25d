// A training run directory on disk:
//
//   RUN_DIR/metrics.jsonl          one JSON object per line, each with an integer "step"
//   RUN_DIR/checkpoint-STEP/       STEP not zero-padded; complete when COMPLETE exists
//       config.json, model.safetensors (HF layout, loadable by `strata generate`)
//       optimizer.safetensors      AdamW moments (AdamW::state())
//       trainer_state.json         the trainer's own JSON (train/trainer_state.h)
//       tokenizer.model            when the run has a tokenizer: the checkpoint runs as it is
//       COMPLETE                   written last, before the directory is renamed into place
//   RUN_DIR/run.json               the run's settings (train/trainer_state.h), written at its start
//   RUN_DIR/.tmp-*                 checkpoints being written or pruned; removed when stale
#pragma once
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "strata/config.h"

namespace strata {

inline constexpr const char* kOptimizerFile = "optimizer.safetensors";
inline constexpr const char* kTrainerStateFile = "trainer_state.json";
inline constexpr const char* kCompleteFile = "COMPLETE";
inline constexpr const char* kMetricsFile = "metrics.jsonl";

std::string checkpoint_dir(const std::string& run_dir, int64_t step);  // RUN_DIR/checkpoint-STEP

// Writes RUN_DIR/checkpoint-STEP atomically: everything is built in
// RUN_DIR/.tmp-checkpoint-STEP-PID, every file and the directory fsynced,
// COMPLETE written last, then the directory is renamed into place (replacing
// an existing checkpoint-STEP atomically) and RUN_DIR fsynced. Then complete
// checkpoints beyond the newest `keep_last` (<= 0: keep all) are removed; the
// one just written is always kept. `trainer_state_json` must be valid JSON.
// A non-empty `tokenizer` file is copied in as tokenizer.model before COMPLETE
// is written, so no checkpoint is ever visible without its tokenizer.
void save_checkpoint(const std::string& run_dir, int64_t step, const Config& config, const NamedTensors& model,
                     const NamedTensors& optimizer_state, const std::string& trainer_state_json, int keep_last,
                     const std::string& tokenizer = "");

// True when `dir` holds COMPLETE, config.json, the model, the optimizer state and the trainer state.
bool is_complete_checkpoint(const std::string& dir);

// The complete checkpoints of a run, ascending by step. Incomplete ones and
// temp dirs are ignored.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir);

// The directory of the highest complete checkpoint, if any. Removes stale
// .tmp-* directories (of this process or of processes that no longer exist).
std::optional<std::string> latest_checkpoint(const std::string& run_dir);

// metrics.jsonl writer. A fresh run truncates the file. With `resume`, the lines
// whose "step" is <= resume_step are kept (rewritten atomically) and the rest
// dropped, so no step appears twice; a torn last line from a crash is dropped.
// Each line is flushed when written; sync() also fsyncs (call it at checkpoints).
class MetricsLog {
 public:
  MetricsLog(const std::string& path, bool resume, int64_t resume_step);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // `record` must be an object with an integer "step".
  void write(const nlohmann::ordered_json& record);
  void sync();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  FILE* f_ = nullptr;
};

// The loss curves of a metrics.jsonl: (step, loss) and (step, val_loss) points
// in file order. Throws strata::Error naming the file and line for a line that
// is not a JSON object with an integer "step" (a torn last line is skipped).
struct MetricsSeries {
  std::vector<std::pair<int64_t, double>> loss, val_loss;
};
MetricsSeries read_metrics(const std::string& path);

// The highest "step" in a metrics.jsonl, or -1 when the file is absent or has
// no line (a torn last line does not count). Bad lines are errors as above.
int64_t last_logged_step(const std::string& path);

}  // namespace strata
