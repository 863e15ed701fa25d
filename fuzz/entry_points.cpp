#include "entry_points.h"

#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "core/weights.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "serve/api.h"
#include "strata/error.h"
#include "train/sft_data.h"
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
  };
  return t;
}

}  // namespace strata::fuzz
