#include "train/trainer_state.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "io/safetensors.h"
#include "strata/error.h"

namespace strata {
namespace {

using ojson = nlohmann::ordered_json;

// Field access that fails with the file and the field's name (nlohmann's own
// exceptions name neither).
const ojson& field(const ojson& j, const std::string& key, const std::string& origin, const std::string& prefix) {
  if (!j.is_object()) fail(origin, ": ", prefix.empty() ? "expected a JSON object" : "'" + prefix + "' is not an object");
  auto it = j.find(key);
  if (it == j.end()) fail(origin, ": field '", prefix, key, "' missing");
  return *it;
}

[[noreturn]] void bad_type(const std::string& origin, const std::string& prefix, const std::string& key,
                           const char* what) {
  fail(origin, ": field '", prefix, key, "' is not ", what);
}

int64_t get_int(const ojson& j, const std::string& key, const std::string& origin, const std::string& prefix = "") {
  const ojson& v = field(j, key, origin, prefix);
  if (!v.is_number_integer()) bad_type(origin, prefix, key, "an integer");
  return v.get<int64_t>();
}

uint64_t get_uint(const ojson& j, const std::string& key, const std::string& origin, const std::string& prefix = "") {
  const ojson& v = field(j, key, origin, prefix);
  if (!v.is_number_unsigned()) bad_type(origin, prefix, key, "a non-negative integer");
  return v.get<uint64_t>();
}

double get_double(const ojson& j, const std::string& key, const std::string& origin, const std::string& prefix = "") {
  const ojson& v = field(j, key, origin, prefix);
  if (!v.is_number()) bad_type(origin, prefix, key, "a number");
  return v.get<double>();
}

std::string get_string(const ojson& j, const std::string& key, const std::string& origin,
                       const std::string& prefix = "") {
  const ojson& v = field(j, key, origin, prefix);
  if (!v.is_string()) bad_type(origin, prefix, key, "a string");
  return v.get<std::string>();
}

ojson parse_object(const std::string& text, const std::string& origin) {
  ojson j = ojson::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(origin, ": not valid JSON (truncated or corrupt?)");
  if (!j.is_object()) fail(origin, ": expected a JSON object");
  return j;
}

struct Fnv1a {
  uint64_t h = 1469598103934665603ull;
  void add(uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
  }
};

}  // namespace

ojson RunSettings::to_json() const {
  return ojson{{"seed", seed},
               {"seq", seq},
               {"micro_batch", micro_batch},
               {"accum", accum},
               {"ranks", ranks},
               {"global_batch", global_batch()},
               {"lr", lr},
               {"min_lr", min_lr},
               {"warmup", warmup},
               {"weight_decay", weight_decay},
               {"decay", decay},
               {"schedule", schedule},
               {"data", data},
               {"data_source", data_source}};
}

RunSettings RunSettings::from_json(const ojson& j, const std::string& origin) {
  const std::string p = "run.";
  RunSettings s;
  s.seed = get_uint(j, "seed", origin, p);
  s.seq = get_int(j, "seq", origin, p);
  s.micro_batch = get_int(j, "micro_batch", origin, p);
  s.accum = get_int(j, "accum", origin, p);
  s.ranks = get_int(j, "ranks", origin, p);
  if (get_int(j, "global_batch", origin, p) != s.global_batch())
    fail(origin, ": field 'run.global_batch' is not micro_batch x accum x ranks");
  s.lr = get_double(j, "lr", origin, p);
  s.min_lr = get_double(j, "min_lr", origin, p);
  s.warmup = get_int(j, "warmup", origin, p);
  s.weight_decay = get_double(j, "weight_decay", origin, p);
  s.decay = j.contains("decay") ? get_string(j, "decay", origin, p) : "matrices";  // states before it: matrices
  if (s.decay != "matrices" && s.decay != "all")
    fail(origin, ": field 'run.decay' is '", s.decay, "', expected 'matrices' or 'all'");
  s.schedule = get_string(j, "schedule", origin, p);
  s.data = field(j, "data", origin, p);
  if (!s.data.is_object()) bad_type(origin, p, "data", "an object");
  s.data_source = get_string(j, "data_source", origin, p);
  return s;
}

std::string describe_mismatch(const RunSettings& saved, const RunSettings& given, const char* first,
                              const char* second) {
  const ojson a = saved.to_json(), b = given.to_json();
  std::string out;
  auto add = [&](const std::string& name, const ojson& x, const ojson& y, const std::string& extra = "") {
    if (x == y) return;
    out += cat(out.empty() ? "" : "; ", name, ": ", first, " ", x.dump(), ", ", second, " ", y.dump(), extra);
  };
  add("seed (--seed)", a["seed"], b["seed"]);
  add("seq (--seq)", a["seq"], b["seq"]);
  add("global_batch (--batch x --accum)", a["global_batch"], b["global_batch"],
      cat(" (", first, " ", saved.micro_batch, " x ", saved.accum, ", ", second, " ", given.micro_batch, " x ",
          given.accum, ")"));
  add("lr (--lr)", a["lr"], b["lr"]);
  add("min_lr (--min-lr)", a["min_lr"], b["min_lr"]);
  add("warmup (--warmup)", a["warmup"], b["warmup"]);
  add("weight_decay (--wd)", a["weight_decay"], b["weight_decay"]);
  add("decay (--decay)", a["decay"], b["decay"]);
  add("schedule", a["schedule"], b["schedule"]);
  const size_t before = out.size();
  for (const auto& [k, v] : saved.data.items())
    add("data." + k, v, given.data.contains(k) ? given.data[k] : ojson());
  for (const auto& [k, v] : given.data.items())
    if (!saved.data.contains(k)) add("data." + k, ojson(), v);
  if (out.size() != before && saved.data_source != given.data_source)
    out += cat(" (data saved from ", saved.data_source, ", given ", given.data_source, ")");
  return out;
}

std::string TrainerState::to_json() const {
  ojson j{{"step", step}, {"updates", updates}, {"total_steps", total_steps}};
  if (samples >= 0) j["samples"] = samples;
  j["recent_losses"] = recent_losses;
  if (run) j["run"] = run->to_json();
  return j.dump(2);
}

TrainerState TrainerState::from_json(const std::string& text, const std::string& origin) {
  const ojson j = parse_object(text, origin);
  TrainerState s;
  s.step = get_int(j, "step", origin);
  s.updates = get_int(j, "updates", origin);
  if (s.step < 0 || s.updates < 0 || s.updates > s.step)
    fail(origin, ": step ", s.step, " and updates ", s.updates, " are inconsistent");
  if (j.contains("total_steps")) s.total_steps = get_int(j, "total_steps", origin);
  if (j.contains("samples")) {
    s.samples = get_int(j, "samples", origin);
    if (s.samples < 0) fail(origin, ": field 'samples' is negative (", s.samples, ")");
  }
  const ojson& recent = field(j, "recent_losses", origin, "");
  if (!recent.is_array()) bad_type(origin, "", "recent_losses", "an array");
  for (const ojson& l : recent) {
    if (!l.is_number()) bad_type(origin, "", "recent_losses", "an array of numbers");
    s.recent_losses.push_back(l.get<double>());
  }
  if (j.contains("run")) s.run = RunSettings::from_json(j["run"], origin);
  return s;
}

TrainerState read_trainer_state(const std::string& path) { return TrainerState::from_json(read_file_text(path), path); }

void write_run_file(const std::string& run_dir, const RunSettings& s) {
  write_file_atomic(run_dir + "/" + kRunFile, s.to_json().dump(2) + "\n");
}

std::optional<RunSettings> read_run_file(const std::string& run_dir) {
  const std::string path = run_dir + "/" + kRunFile;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  return RunSettings::from_json(parse_object(read_file_text(path), path), path);
}

ojson token_data_fingerprint(const TokenData& d) {
  constexpr int64_t kSamples = 16384;
  const int64_t n = d.size();
  Fnv1a h;
  h.add(static_cast<uint64_t>(n), 8);
  const int64_t k = std::min(n, kSamples);
  for (int64_t i = 0; i < k; ++i) h.add(static_cast<uint32_t>(d.token(n <= kSamples ? i : i * (n / kSamples))), 4);
  return ojson{{"tokens", n}, {"sample_hash", h.hex()}};
}

ojson sft_fingerprint(const std::vector<SftExample>& examples) {
  Fnv1a h;
  int64_t tokens = 0, loss_tokens = 0;
  for (const SftExample& e : examples) {
    h.add(e.ids.size(), 8);
    for (size_t i = 0; i < e.ids.size(); ++i) {
      h.add(static_cast<uint32_t>(e.ids[i]), 4);
      h.add(e.mask[i], 1);
      loss_tokens += i > 0 && e.mask[i];
    }
    tokens += static_cast<int64_t>(e.ids.size());
  }
  return ojson{{"examples", examples.size()}, {"tokens", tokens}, {"loss_tokens", loss_tokens}, {"hash", h.hex()}};
}

}  // namespace strata
