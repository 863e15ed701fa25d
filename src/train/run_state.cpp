// Run directories: atomic checkpoints, finding the latest one, metrics.jsonl.
#include "train/run_state.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/checkpoint.h"
#include "strata/error.h"

namespace strata {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kTmpPrefixes[] = {".tmp-checkpoint-", ".tmp-prune-", ".tmp-replaced-"};

void fsync_path(const fs::path& p, bool dir) {
  const int fd = ::open(p.c_str(), (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) fail(p.string(), ": cannot open for fsync: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail(p.string(), ": fsync failed: ", std::strerror(err));
}

bool exists_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// "checkpoint-123" -> 123; anything else (zero padding is accepted) -> -1.
int64_t checkpoint_step(const std::string& name) {
  const std::string prefix = "checkpoint-";
  if (!name.starts_with(prefix) || name.size() == prefix.size() || name.size() > prefix.size() + 18) return -1;
  int64_t v = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

// A temp dir is stale when the process that made it (the number after the last '-') is gone or is us.
bool is_stale_tmp(const std::string& name) {
  const size_t dash = name.rfind('-');
  const std::string digits = dash == std::string::npos ? std::string() : name.substr(dash + 1);
  const bool numeric = std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits.empty() || digits.size() > 9 || !numeric) return true;
  const pid_t pid = static_cast<pid_t>(std::stol(digits));
  if (pid <= 0 || pid == ::getpid()) return true;
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

void remove_tree(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) fail(p.string(), ": cannot remove: ", ec.message());
}

// Removes a whole directory without ever leaving a partly deleted checkpoint-N
// behind: it is first renamed to a temp name.
void remove_checkpoint(const fs::path& run_dir, const fs::path& dir, int64_t step) {
  const fs::path doomed = run_dir / cat(".tmp-prune-", step, "-", ::getpid());
  remove_tree(doomed);
  std::error_code ec;
  fs::rename(dir, doomed, ec);
  if (ec) fail(dir.string(), ": cannot move aside for removal: ", ec.message());
  fsync_path(run_dir, true);
  remove_tree(doomed);
}

// Moves the finished temp dir to `final_dir`, atomically replacing an existing one.
void install_dir(const fs::path& run_dir, const fs::path& tmp, const fs::path& final_dir, int64_t step) {
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) {
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0)
      fail(final_dir.string(), ": cannot rename the new checkpoint into place: ", std::strerror(errno));
    return;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    remove_tree(tmp);  // now holds the replaced checkpoint
    return;
  }
  // File systems without RENAME_EXCHANGE: move the old one aside first.
  const fs::path old = run_dir / cat(".tmp-replaced-", step, "-", ::getpid());
  remove_tree(old);
  if (::rename(final_dir.c_str(), old.c_str()) != 0)
    fail(final_dir.string(), ": cannot move the old checkpoint aside: ", std::strerror(errno));
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0)
    fail(final_dir.string(), ": cannot rename the new checkpoint into place: ", std::strerror(errno));
  remove_tree(old);
}

struct MetricsLine {
  std::string text;
  json value;
  int64_t step;
};

// Parses every non-empty line; a last line that does not parse and has no
// newline is a write cut short by a crash and is dropped.
std::vector<MetricsLine> parse_metrics(const std::string& path, const std::string& text) {
  std::vector<MetricsLine> out;
  size_t pos = 0;
  int64_t lineno = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    const bool torn = nl == std::string::npos;
    if (torn) nl = text.size();
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      if (torn) break;
      fail(path, ":", lineno, ": not valid JSON");
    }
    if (!j.is_object()) fail(path, ":", lineno, ": expected a JSON object");
    auto it = j.find("step");
    if (it == j.end() || !it->is_number_integer()) fail(path, ":", lineno, ": missing integer field 'step'");
    const int64_t step = it->get<int64_t>();
    out.push_back({line, std::move(j), step});
  }
  return out;
}

}  // namespace

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return (fs::path(run_dir) / cat("checkpoint-", step)).string();
}

void save_checkpoint(const std::string& run_dir, int64_t step, const Config& config, const NamedTensors& model,
                     const NamedTensors& optimizer_state, const std::string& trainer_state_json, int keep_last,
                     const std::string& tokenizer) {
  if (step < 0) fail("save_checkpoint: step must be >= 0, got ", step);
  if (!json::accept(trainer_state_json)) fail("save_checkpoint: trainer state is not valid JSON");
  const fs::path run(run_dir);
  std::error_code ec;
  fs::create_directories(run, ec);
  if (ec || !fs::is_directory(run)) fail(run_dir, ": cannot create directory: ", ec ? ec.message() : "not a directory");

  const fs::path tmp = run / cat(".tmp-checkpoint-", step, "-", ::getpid());
  const fs::path final_dir = checkpoint_dir(run_dir, step);
  remove_tree(tmp);
  struct Cleanup {  // a failed save leaves no temp dir behind
    fs::path p;
    bool armed = true;
    ~Cleanup() {
      std::error_code e;
      if (armed) fs::remove_all(p, e);
    }
  } cleanup{tmp};

  save_hf_checkpoint(tmp.string(), config, model);
  write_safetensors((tmp / kOptimizerFile).string(), optimizer_state);
  write_file_atomic((tmp / kTrainerStateFile).string(), trainer_state_json);
  if (!tokenizer.empty()) {
    fs::copy_file(tokenizer, tmp / "tokenizer.model", ec);
    if (ec) fail(tokenizer, ": cannot copy the tokenizer into the checkpoint: ", ec.message());
  }
  for (const auto& e : fs::directory_iterator(tmp))
    if (e.is_regular_file()) fsync_path(e.path(), false);
  fsync_path(tmp, true);
  write_file_atomic((tmp / kCompleteFile).string(), cat("step ", step, "\n"));  // fsyncs the file and tmp

  install_dir(run, tmp, final_dir, step);
  cleanup.armed = false;
  fsync_path(run, true);

  if (keep_last <= 0) return;
  auto all = list_checkpoints(run_dir);
  std::vector<std::pair<int64_t, std::string>> others;
  for (auto& c : all)
    if (c.first != step) others.push_back(c);
  // Keep the one just written plus the newest keep_last - 1 others.
  const size_t keep_others = static_cast<size_t>(keep_last - 1);
  if (others.size() <= keep_others) return;
  for (size_t i = 0; i < others.size() - keep_others; ++i) remove_checkpoint(run, others[i].second, others[i].first);
}

bool is_complete_checkpoint(const std::string& dir) {
  const fs::path d(dir);
  return exists_file(d / kCompleteFile) && exists_file(d / "config.json") &&
         (exists_file(d / "model.safetensors") || exists_file(d / "model.safetensors.index.json")) &&
         exists_file(d / kOptimizerFile) && exists_file(d / kTrainerStateFile);
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    const int64_t step = checkpoint_step(e.path().filename().string());
    if (step < 0 || !e.is_directory(ec) || !is_complete_checkpoint(e.path().string())) continue;
    out.emplace_back(step, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return std::nullopt;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    const std::string name = e.path().filename().string();
    for (const char* prefix : kTmpPrefixes)
      if (name.starts_with(prefix) && e.is_directory(ec) && is_stale_tmp(name)) stale.push_back(e.path());
  }
  for (const fs::path& p : stale) remove_tree(p);
  auto all = list_checkpoints(run_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

MetricsLog::MetricsLog(const std::string& path, bool resume, int64_t resume_step) : path_(path) {
  std::error_code ec;
  if (resume && fs::exists(path, ec)) {
    std::string kept;
    for (const MetricsLine& l : parse_metrics(path, read_file_text(path)))
      if (l.step <= resume_step) kept += l.text + "\n";
    write_file_atomic(path, kept);
  } else {
    write_file_atomic(path, "");
  }
  f_ = std::fopen(path.c_str(), "ab");
  if (!f_) fail(path, ": cannot open for appending: ", std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::write(const nlohmann::ordered_json& record) {
  if (!record.is_object()) fail(path_, ": metrics record must be a JSON object");
  auto it = record.find("step");
  if (it == record.end() || !it->is_number_integer()) fail(path_, ": metrics record needs an integer 'step'");
  const std::string line = record.dump() + "\n";  // NaN/inf are written as null
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
    fail(path_, ": write failed: ", std::strerror(errno));
}

void MetricsLog::sync() {
  if (std::fflush(f_) != 0 || ::fsync(::fileno(f_)) != 0) fail(path_, ": fsync failed: ", std::strerror(errno));
}

MetricsSeries read_metrics(const std::string& path) {
  MetricsSeries s;
  for (const MetricsLine& l : parse_metrics(path, read_file_text(path))) {
    auto loss = l.value.find("loss");
    if (loss != l.value.end() && loss->is_number()) s.loss.emplace_back(l.step, loss->get<double>());
    auto val = l.value.find("val_loss");
    if (val != l.value.end() && val->is_number()) s.val_loss.emplace_back(l.step, val->get<double>());
  }
  return s;
}

int64_t last_logged_step(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return -1;
  int64_t last = -1;
  for (const MetricsLine& l : parse_metrics(path, read_file_text(path))) last = std::max(last, l.step);
  return last;
}

}  // namespace strata
