#include "entry_points.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/weights.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "serve/api.h"
#include "strata/error.h"
#include "strata/tokenizer.h"
#include "train/sft_data.h"
#include "train/token_data.h"
#include "train/trainer_state.h"

namespace strata::fuzz {

namespace {

// The bytes as a file (the file parsers map files): an anonymous memory file
// reached through /proc, so nothing touches the disk.
class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) : fd_(memfd_create("strata-fuzz", 0)) {
    if (fd_ < 0) return;
    for (size_t done = 0; done < size;) {
      const ssize_t n = write(fd_, data + done, size - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
  }
  ~MemFile() {
    if (fd_ >= 0) close(fd_);
  }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

// A fresh directory for one input of a directory format, removed afterwards.
class TempDir {
 public:
  TempDir() {
    // In memory (/dev/shm) where there is one: the directory targets write
    // files for every input, and a disk-backed /tmp makes them 2-3x slower.
    for (const char* base : {"/dev/shm", "/tmp"}) {
      std::string tmpl = std::string(base) + "/strata-fuzz-XXXXXX";
      if (mkdtemp(tmpl.data())) {
        path_ = tmpl;
        return;
      }
    }
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path_ + "/" + name, std::ios::binary) << bytes;
  }

 private:
  std::string path_;
};

// The input cut at its first NUL byte: two files' contents.
std::pair<std::string, std::string> two_parts(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  const size_t cut = s.find('\0');
  if (cut == std::string::npos) return {s, ""};
  return {s.substr(0, cut), s.substr(cut + 1)};
}

// Touches every byte range a loader would read of each tensor.
void touch(const WeightSet& w) {
  size_t sum = 0;
  for (const auto& [name, t] : w.tensors) {
    const auto* p = static_cast<const uint8_t*>(t.data);
    if (t.nbytes() > 0) sum += p[0] + p[t.nbytes() - 1];
  }
  (void)sum;
}

template <class F>
void refusals_are_fine(F f) {
  try {
    f();
  } catch (const Error&) {
  } catch (const serve::ApiError&) {
  }
}

void gguf(const uint8_t* data, size_t size) {
  MemFile f(data, size);
  if (!f.ok()) return;
  refusals_are_fine([&] {
    const GgufFile g = GgufFile::open(f.path());
    // Walk what a loader reads: every key, every tensor's bytes.
    for (const auto& [key, value] : g.metadata()) (void)g.find(key);
    size_t sum = 0;
    for (const GgufTensorInfo& t : g.tensors()) {
      const Tensor v = g.tensor(t);
      const auto* p = static_cast<const uint8_t*>(v.data);
      if (v.nbytes() > 0) sum += p[0] + p[v.nbytes() - 1];
    }
    (void)sum;
  });
}

void safetensors(const uint8_t* data, size_t size) {
  MemFile f(data, size);
  if (!f.ok()) return;
  refusals_are_fine([&] {
    WeightSet w;
    read_safetensors(f.path(), w);
  });
}

void request(serve::Endpoint e, const uint8_t* data, size_t size) {
  refusals_are_fine([&] {
    const serve::GenRequest r = serve::parse_request(e, std::string(reinterpret_cast<const char*>(data), size), 1);
    // Whatever parses must also render.
    serve::Outcome o{"x", "stop", {}, {}};
    (void)serve::dump(serve::response_json(r, "id", 0, o));
    (void)serve::sse(serve::chunk_json(r, "id", 0, "x", {}, ""));
  });
}

void chat_request(const uint8_t* data, size_t size) { request(serve::Endpoint::kChat, data, size); }
void completion_request(const uint8_t* data, size_t size) { request(serve::Endpoint::kCompletions, data, size); }

void sft_record(const uint8_t* data, size_t size) {
  refusals_are_fine([&] { (void)parse_sft_record(std::string(reinterpret_cast<const char*>(data), size)); });
}

void llama2c(const uint8_t* data, size_t size) {
  MemFile f(data, size);
  if (!f.ok()) return;
  refusals_are_fine([&] { touch(read_llama2c(f.path()).weights); });
}

// An HF directory: the input is config.json, NUL, model.safetensors.index.json;
// the two shards the index may name are small valid files.
void hf_dir(const uint8_t* data, size_t size) {
  static const std::pair<std::string, std::string> shards = [] {
    TempDir d;
    Tensor a = Tensor::alloc(DType::F32, {2, 3}), b = Tensor::alloc(DType::F32, {4});
    std::fill(a.f32(), a.f32() + 6, 0.5f);
    std::fill(b.f32(), b.f32() + 4, -1.0f);
    write_safetensors(d.path() + "/1", {{"model.embed_tokens.weight", a}});
    write_safetensors(d.path() + "/2", {{"model.norm.weight", b}});
    return std::pair{read_file_text(d.path() + "/1"), read_file_text(d.path() + "/2")};
  }();
  const auto [config, index] = two_parts(data, size);
  TempDir d;
  if (d.path().empty()) return;
  d.write("config.json", config);
  d.write("model.safetensors.index.json", index);
  d.write("model-00001-of-00002.safetensors", shards.first);
  d.write("model-00002-of-00002.safetensors", shards.second);
  refusals_are_fine([&] { touch(read_checkpoint_files(d.path()).weights); });
}

// Token data: the input is meta.json, NUL, the bytes of train-00000.bin.
void token_data(const uint8_t* data, size_t size) {
  const auto [meta, shard] = two_parts(data, size);
  TempDir d;
  if (d.path().empty()) return;
  d.write("meta.json", meta);
  d.write("train-00000.bin", shard);
  refusals_are_fine([&] {
    const TokenData t(d.path(), "train");
    std::vector<int32_t> ids(static_cast<size_t>(std::min<int64_t>(t.size(), 64)));
    if (!ids.empty()) t.read(t.size() - static_cast<int64_t>(ids.size()), static_cast<int64_t>(ids.size()), ids.data());
  });
}

// A tokenizer file (tokenizer.json as byte-level BPE; anything that is not a
// JSON object goes to SentencePiece's loader), then a round trip of text.
void tokenizer(const uint8_t* data, size_t size) {
  MemFile f(data, size);
  if (!f.ok()) return;
  refusals_are_fine([&] {
    const auto tok = Tokenizer::load(f.path());
    const std::vector<int32_t> ids = tok->encode("Hello world, \xC3\xA9t\xC3\xA9 \xF0\x9F\x99\x82 123\n", true);
    (void)tok->decode(ids);
    for (int32_t id = 0; id < std::min<int32_t>(tok->vocab_size(), 300); ++id) (void)tok->piece(id);
  });
}

void trainer_state(const uint8_t* data, size_t size) {
  MemFile f(data, size);
  if (!f.ok()) return;
  refusals_are_fine([&] { (void)read_trainer_state(f.path()); });
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> t = {
      {"gguf", gguf},
      {"safetensors", safetensors},
      {"chat_request", chat_request},
      {"completion_request", completion_request},
      {"sft_record", sft_record},
      {"trainer_state", trainer_state},
      {"llama2c", llama2c},
      {"hf_dir", hf_dir},
      {"token_data", token_data},
      {"tokenizer", tokenizer},
  };
  return t;
}

}  // namespace strata::fuzz
