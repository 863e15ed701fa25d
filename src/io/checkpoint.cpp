// Hugging Face checkpoint directories: load (single file or sharded) and save.
#include "io/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "io/gguf.h"

#include "strata/error.h"

namespace strata {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

json parse_json_file(const std::string& path) {
  const std::string text = read_file_text(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    std::string msg = e.what();
    for (char& c : msg)
      if (c == '\n' || c == '\r') c = ' ';
    fail(path, ": invalid JSON: ", msg);
  }
}

// A shard name from the index must stay inside the checkpoint directory.
bool escapes_dir(const fs::path& rel) {
  if (rel.empty() || rel.is_absolute() || rel.has_root_name() || rel.has_root_directory()) return true;
  for (const fs::path& part : rel)
    if (part == "..") return true;
  return false;
}

void read_index(const fs::path& dir, WeightSet& out) {
  const std::string index_path = (dir / kIndexName).string();
  const json idx = parse_json_file(index_path);
  if (!idx.is_object()) fail(index_path, ": expected a JSON object at the top level");
  auto wm = idx.find("weight_map");
  if (wm == idx.end() || !wm->is_object()) fail(index_path, ": field 'weight_map': missing or not an object");
  if (wm->empty()) fail(index_path, ": field 'weight_map': is empty");

  std::vector<std::string> shards;  // in first-mention order
  std::set<std::string> seen;
  std::map<std::string, std::string> expected;  // tensor -> shard path
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it->is_string())
      fail(index_path, ": tensor '", it.key(), "': shard name must be a string, got ", it->type_name());
    const std::string file = it->get<std::string>();
    if (escapes_dir(fs::path(file)))
      fail(index_path, ": tensor '", it.key(), "': shard path '", file, "' escapes the checkpoint directory");
    const std::string full = (dir / file).string();
    if (!is_file(full)) fail(index_path, ": tensor '", it.key(), "': shard '", file, "' does not exist");
    if (seen.insert(full).second) shards.push_back(full);
    expected[it.key()] = full;
  }
  for (const std::string& s : shards) read_safetensors(s, out);
  for (const auto& [name, full] : expected) {
    if (!out.find(name) || out.source_of(name) != full)
      fail(index_path, ": tensor '", name, "' not found in shard '", fs::path(full).filename().string(), "'");
  }
}

bool read_add_bos(const fs::path& dir) {
  const fs::path p = dir / "tokenizer_config.json";
  if (!is_file(p)) return true;
  const json j = parse_json_file(p.string());
  if (!j.is_object()) fail(p.string(), ": expected a JSON object at the top level");
  auto it = j.find("add_bos_token");
  if (it == j.end() || it->is_null()) return true;
  if (!it->is_boolean()) fail(p.string(), ": field 'add_bos_token': expected true or false, got ", it->type_name());
  return it->get<bool>();
}

CheckpointFiles load_hf(const fs::path& dir, const fs::path* single_file, const ConfigCheck& on_config) {
  CheckpointFiles ck;
  ck.format = "hf";
  const fs::path cfg = dir / "config.json";
  if (!is_file(cfg)) fail(dir.string(), ": no config.json");
  ck.config_json = read_file_text(cfg.string());
  ck.config_source = cfg.string();
  if (on_config) on_config(ck.config_json, ck.config_source);

  if (single_file) {
    read_safetensors(single_file->string(), ck.weights);
  } else if (is_file(dir / kIndexName)) {
    read_index(dir, ck.weights);
  } else if (is_file(dir / "model.safetensors")) {
    read_safetensors((dir / "model.safetensors").string(), ck.weights);
  } else {
    fail(dir.string(), ": no model.safetensors or model.safetensors.index.json");
  }
  // Old checkpoints carry RoPE inverse-frequency buffers; they are recomputed, not loaded.
  for (auto it = ck.weights.tensors.begin(); it != ck.weights.tensors.end();) {
    if (it->first.ends_with(".rotary_emb.inv_freq")) {
      ck.weights.source.erase(it->first);
      it = ck.weights.tensors.erase(it);
    } else {
      ++it;
    }
  }
  // SentencePiece first, as before; a Hugging Face byte-level BPE tokenizer.json otherwise.
  for (const char* name : {"tokenizer.model", "tokenizer.json"}) {
    if (!is_file(dir / name)) continue;
    ck.tokenizer_path = (dir / name).string();
    break;
  }
  ck.add_bos = read_add_bos(dir);
  return ck;
}

std::string shard_name(size_t k, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k, n);
  return buf;
}

// Matches model-NNNNN-of-NNNNN.safetensors (a shard name written by HF or by us).
bool is_shard_name(const std::string& s) {
  if (s.size() != std::string("model-00001-of-00001.safetensors").size()) return false;
  if (!s.starts_with("model-") || !s.ends_with(".safetensors") || s.compare(11, 4, "-of-") != 0) return false;
  for (size_t i : {6, 7, 8, 9, 10, 15, 16, 17, 18, 19})
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove(p, ec);
}

}  // namespace

CheckpointFiles read_checkpoint_files(const std::string& path, const ConfigCheck& on_config) {
  const fs::path p(path);
  std::error_code ec;
  const fs::file_status st = fs::status(p, ec);
  if (!fs::exists(st)) fail(path, ": no such file or directory");
  if (fs::is_directory(st)) return load_hf(p, nullptr, on_config);
  if (!fs::is_regular_file(st)) fail(path, ": not a regular file or directory");
  if (p.extension() == ".safetensors") {
    const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    return load_hf(dir, &p, on_config);
  }
  if (is_gguf(path)) return read_gguf(path, on_config);
  return read_llama2c(path);  // .bin or any other regular file
}

void write_hf_files(const std::string& dir, const std::string& config_json, const NamedTensors& tensors,
                    int64_t max_shard_bytes) {
  const fs::path d(dir);
  std::error_code ec;
  fs::create_directories(d, ec);
  if (ec || !fs::is_directory(d)) fail(dir, ": cannot create directory: ", ec ? ec.message() : "not a directory");

  int64_t total = 0;
  for (const auto& [name, t] : tensors) total += static_cast<int64_t>(t.nbytes());

  std::set<std::string> written;
  if (max_shard_bytes <= 0 || total <= max_shard_bytes) {
    write_safetensors((d / "model.safetensors").string(), tensors);
    remove_quietly(d / kIndexName);  // a stale index would take precedence over the new file
  } else {
    // Greedy fill in the given order; a tensor larger than the limit gets a shard of its own.
    std::vector<NamedTensors> groups;
    int64_t cur = 0;
    for (const auto& nt : tensors) {
      const int64_t b = static_cast<int64_t>(nt.second.nbytes());
      if (groups.empty() || (!groups.back().empty() && cur + b > max_shard_bytes)) {
        groups.emplace_back();
        cur = 0;
      }
      groups.back().push_back(nt);
      cur += b;
    }
    json weight_map = json::object();
    for (size_t k = 0; k < groups.size(); ++k) {
      const std::string name = shard_name(k + 1, groups.size());
      write_safetensors((d / name).string(), groups[k]);
      written.insert(name);
      for (const auto& nt : groups[k]) weight_map[nt.first] = name;
    }
    ojson index;
    index["metadata"] = ojson{{"total_size", total}};
    index["weight_map"] = weight_map;
    write_file_atomic((d / kIndexName).string(), index.dump(2) + "\n");
    remove_quietly(d / "model.safetensors");
  }
  // Shards of an earlier save into the same directory would otherwise linger.
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(d, ec)) {
    const std::string fname = e.path().filename().string();
    if (is_shard_name(fname) && !written.count(fname)) stale.push_back(e.path());
  }
  for (const fs::path& p : stale) remove_quietly(p);
  write_file_atomic((d / "config.json").string(), config_json);
}

}  // namespace strata
