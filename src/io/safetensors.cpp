#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/mapped_file.h"
#include "io/atomic_writer.h"
#include "strata/error.h"

namespace strata {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

// A non-negative integer from the header, or false.
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

template <class... Args>
[[noreturn]] void bad(const std::string& path, const std::string& name, const Args&... what) {
  fail(path, ": tensor '", name, "': ", what...);
}

}  // namespace

void read_safetensors(const std::string& path, WeightSet& out) {
  std::shared_ptr<MappedFile> mf = MappedFile::open(path);
  const uint8_t* base = mf->data();
  const uint64_t size = mf->size();
  if (size < 8) fail(path, ": header: file is ", size, " bytes, too short for a safetensors header");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | base[i];  // little-endian
  if (hlen > size - 8) fail(path, ": header: header length ", hlen, " is larger than the file (", size, " bytes)");
  const uint64_t data_begin = 8 + hlen;
  const uint64_t data_size = size - data_begin;

  // nlohmann keeps the last of duplicate keys silently; record them while parsing.
  std::string duplicate;
  std::set<std::string> keys;
  json header;
  try {
    const char* h = reinterpret_cast<const char*>(base + 8);
    header = json::parse(h, h + hlen, [&](int depth, json::parse_event_t ev, json& parsed) {
      if (ev == json::parse_event_t::key && depth == 1 && parsed.is_string() && duplicate.empty()) {
        if (!keys.insert(parsed.get<std::string>()).second) duplicate = parsed.get<std::string>();
      }
      return true;
    });
  } catch (const json::exception& e) {
    fail(path, ": header: invalid JSON: ", one_line(e.what()));
  }
  if (!header.is_object()) fail(path, ": header: expected a JSON object, got ", header.type_name());
  if (!duplicate.empty()) fail(path, ": tensor '", duplicate, "': duplicate name in the header");

  // Collected first so a malformed entry leaves `out` untouched.
  std::vector<std::pair<std::string, Tensor>> loaded;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) fail(path, ": header: __metadata__ is not an object");
      for (auto m = e.begin(); m != e.end(); ++m)
        if (!m.value().is_string()) fail(path, ": header: __metadata__ value '", m.key(), "' is not a string");
      continue;
    }
    if (!e.is_object()) bad(path, name, "entry is not an object (got ", e.type_name(), ")");

    auto dt_it = e.find("dtype");
    if (dt_it == e.end() || !dt_it->is_string()) bad(path, name, "missing or non-string 'dtype'");
    DType dtype;
    const std::string dts = dt_it->get<std::string>();
    if (!parse_dtype(dts, &dtype) || is_quantized(dtype))
      bad(path, name, "unsupported dtype '", dts, "' (supported: F32, BF16, F16)");

    auto sh_it = e.find("shape");
    if (sh_it == e.end() || !sh_it->is_array()) bad(path, name, "'shape' is missing or not a list");
    Shape shape;
    uint64_t numel = 1;
    for (const json& d : *sh_it) {
      uint64_t v;
      if (!as_u64(d, &v)) bad(path, name, "'shape' must be a list of non-negative integers, got ", sh_it->dump());
      if (v > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, v, &numel))
        bad(path, name, "shape ", sh_it->dump(), " overflows the element count");
      shape.push_back(static_cast<int64_t>(v));
    }
    uint64_t nbytes;
    if (numel > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, dtype_size(dtype), &nbytes))
      bad(path, name, "shape ", sh_it->dump(), " overflows the byte size");

    auto off_it = e.find("data_offsets");
    uint64_t begin, end;
    if (off_it == e.end() || !off_it->is_array() || off_it->size() != 2 || !as_u64((*off_it)[0], &begin) ||
        !as_u64((*off_it)[1], &end))
      bad(path, name, "'data_offsets' must be a list of two non-negative integers");
    if (begin > end) bad(path, name, "data_offsets begin ", begin, " is after end ", end);
    if (end > data_size) bad(path, name, "data_offsets end ", end, " is past the data section (", data_size, " bytes)");
    if (end - begin != nbytes)
      bad(path, name, "data_offsets span ", end - begin, " bytes but shape ", shape_str(shape), " of ", dts, " needs ",
          nbytes);

    if (out.find(name)) bad(path, name, "duplicate tensor name (already loaded from ", out.source_of(name), ")");
    Tensor t;
    t.dtype = dtype;
    t.shape = std::move(shape);
    const uint8_t* p = base + data_begin + begin;
    if (reinterpret_cast<uintptr_t>(p) % dtype_size(dtype) == 0) {
      // A view: the aliasing constructor shares ownership of the whole mapping.
      t.data = const_cast<uint8_t*>(p);
      t.owner = std::shared_ptr<void>(mf, t.data);
      t.mapped = true;
    } else {
      Tensor c = Tensor::alloc(dtype, t.shape);
      std::memcpy(c.data, p, nbytes);
      t = std::move(c);
    }
    loaded.emplace_back(name, std::move(t));
  }
  for (auto& [name, t] : loaded) out.add(name, std::move(t), path);
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  ojson header;
  ojson meta = ojson::object();
  meta["format"] = "pt";
  for (const auto& [k, v] : metadata) meta[k] = v;
  header["__metadata__"] = meta;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__") fail(path, ": tensor '", name, "': invalid tensor name");
    if (!names.insert(name).second) fail(path, ": tensor '", name, "': duplicate name");
    for (int64_t d : t.shape)
      if (d < 0) fail(path, ": tensor '", name, "': negative dimension in shape ", shape_str(t.shape));
    if (is_quantized(t.dtype))
      fail(path, ": tensor '", name, "': ", dtype_name(t.dtype), " has no safetensors dtype (write GGUF instead)");
    if (t.nbytes() > 0 && !t.data) fail(path, ": tensor '", name, "': has no data");
    header[name] = ojson{{"dtype", std::string(dtype_name(t.dtype))},
                         {"shape", t.shape},
                         {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(h.size()) >> (8 * i));

  AtomicWriter w(path);
  w.write(len, 8);
  w.write(h.data(), h.size());
  for (const auto& [name, t] : tensors) w.write(t.data, t.nbytes());
  w.commit();
}

void write_file_atomic(const std::string& path, const std::string& data) {
  AtomicWriter w(path);
  w.write(data.data(), data.size());
  w.commit();
}

std::string read_file_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open for reading");
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(path, ": read error");
  return ss.str();
}

}  // namespace strata
