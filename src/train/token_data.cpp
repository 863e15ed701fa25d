#include "train/token_data.h"

#include <limits>
#include <type_traits>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "strata/error.h"

namespace fs = std::filesystem;

namespace strata {

static_assert(std::endian::native == std::endian::little, "token shards are read in place as little-endian");

namespace {

template <class T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

void fsync_dir(const std::string& dir) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writing

TokenShardWriter::TokenShardWriter(const std::string& path, uint32_t dtype) : path_(path), dtype_(dtype) {
  if (dtype != 2 && dtype != 4) fail(path, ": token shard dtype must be 2 or 4, got ", dtype);
  fs::path p(path);
  const std::string dir = p.parent_path().empty() ? std::string(".") : p.parent_path().string();
  tmp_ = (fs::path(dir) / cat(".", p.filename().string(), ".tmp.XXXXXX")).string();
  fd_ = mkstemp(tmp_.data());
  if (fd_ < 0) fail(path, ": cannot create a temporary file in ", dir, ": ", std::strerror(errno));
  fchmod(fd_, 0644);
  buf_.assign(kTokenShardHeaderBytes, 0);  // placeholder; the real header is written by commit()
  buf_.reserve(size_t{4} << 20);
}

TokenShardWriter::~TokenShardWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void TokenShardWriter::flush() {
  const uint8_t* p = buf_.data();
  size_t n = buf_.size();
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path_, ": write failed: ", std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  buf_.clear();
}

void TokenShardWriter::append(const int32_t* ids, int64_t n) {
  if (committed_) fail(path_, ": append after commit");
  const int64_t limit = dtype_ == 2 ? 65536 : (int64_t{1} << 31);
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= limit)
      fail(path_, ": token id ", ids[i], " does not fit a dtype of ", dtype_, " bytes");
    if (dtype_ == 2) {
      const uint16_t v = static_cast<uint16_t>(ids[i]);
      buf_.push_back(static_cast<uint8_t>(v));
      buf_.push_back(static_cast<uint8_t>(v >> 8));
    } else {
      const uint32_t v = static_cast<uint32_t>(ids[i]);
      for (int b = 0; b < 4; ++b) buf_.push_back(static_cast<uint8_t>(v >> (8 * b)));
    }
    if (buf_.size() >= (size_t{4} << 20)) flush();
  }
  count_ += n;
}

void TokenShardWriter::commit() {
  flush();
  uint8_t h[kTokenShardHeaderBytes] = {};
  std::memcpy(h, kTokenShardMagic, 8);
  const uint32_t version = kTokenShardVersion;
  const uint64_t count = static_cast<uint64_t>(count_);
  std::memcpy(h + 8, &version, 4);
  std::memcpy(h + 12, &dtype_, 4);
  std::memcpy(h + 16, &count, 8);
  if (::pwrite(fd_, h, sizeof(h), 0) != static_cast<ssize_t>(sizeof(h)))
    fail(path_, ": write failed: ", std::strerror(errno));
  if (::fsync(fd_) != 0) fail(path_, ": fsync failed: ", std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail(path_, ": close failed: ", std::strerror(errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail(path_, ": cannot rename temporary file: ", std::strerror(errno));
  committed_ = true;
  fs::path p(path_);
  fsync_dir(p.parent_path().empty() ? std::string(".") : p.parent_path().string());
}

void write_token_shard(const std::string& path, const std::vector<int32_t>& ids, uint32_t dtype) {
  TokenShardWriter w(path, dtype);
  w.append(ids.data(), static_cast<int64_t>(ids.size()));
  w.commit();
}

// ---------------------------------------------------------------------------------------------
// Reading

namespace {

nlohmann::json read_meta(const std::string& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f) fail(file, ": not found (not a data directory from `strata tokenize`, or an incomplete one)");
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    nlohmann::json j = nlohmann::json::parse(ss.str());
    if (!j.is_object()) fail(file, ": expected a JSON object");
    return j;
  } catch (const nlohmann::json::exception& e) {
    fail(file, ": invalid JSON: ", e.what());
  }
}

template <class T>
T meta_field(const nlohmann::json& j, const std::string& file, const char* key) {
  if (!j.contains(key)) fail(file, ": missing field \"", key, "\"");
  if constexpr (std::is_integral_v<T>) {
    // nlohmann converts floats and out-of-range integers with a plain cast
    // (undefined for values the type cannot hold), so check first.
    const nlohmann::json& v = j.at(key);
    if (!v.is_number_integer()) fail(file, ": field \"", key, "\" must be an integer, not ", v.dump());
    const bool fits = v.is_number_unsigned()
                          ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
                          : v.get<int64_t>() >= std::numeric_limits<T>::min() && v.get<int64_t>() <= std::numeric_limits<T>::max();
    if (!fits) fail(file, ": field \"", key, "\" is out of range: ", v.dump());
    return v.is_number_unsigned() ? static_cast<T>(v.get<uint64_t>()) : static_cast<T>(v.get<int64_t>());
  }
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail(file, ": field \"", key, "\" has the wrong type");
  }
}

}  // namespace

TokenData::TokenData(const std::string& path, const std::string& split) : path_(path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (split != "train" && split != "val") fail(path, ": unknown split '", split, "' (train or val)");
    const std::string meta_file = (fs::path(path) / "meta.json").string();
    const nlohmann::json j = read_meta(meta_file);
    if (j.contains("tokenizer")) {  // optional
      if (!j["tokenizer"].is_string()) fail(meta_file, ": field \"tokenizer\" must be a string (a file name)");
      meta_.tokenizer = j["tokenizer"].get<std::string>();
    }
    meta_.vocab_size = meta_field<int64_t>(j, meta_file, "vocab_size");
    meta_.eos_id = meta_field<int32_t>(j, meta_file, "eos_id");
    meta_.bos_id = meta_field<int32_t>(j, meta_file, "bos_id");
    meta_.train_tokens = meta_field<int64_t>(j, meta_file, "train_tokens");
    meta_.val_tokens = meta_field<int64_t>(j, meta_file, "val_tokens");
    const auto shards = meta_field<nlohmann::json>(j, meta_file, "shards");
    if (!shards.is_array()) fail(meta_file, ": field \"shards\" must be an array");
    for (const auto& s : shards) {
      if (!s.is_object() || !s.contains("file") || !s["file"].is_string() || !s.contains("split") ||
          !s["split"].is_string() || !s.contains("tokens") || !s["tokens"].is_number_integer())
        fail(meta_file, ": each entry of \"shards\" needs \"file\", \"split\" and \"tokens\"");
      if (s["split"] != split) continue;
      const std::string name = s["file"].get<std::string>();
      if (name.find('/') != std::string::npos) fail(meta_file, ": shard file '", name, "' must be a plain file name");
      add_shard((fs::path(path) / name).string(), false, meta_field<int64_t>(s, meta_file, "tokens"));
    }
    const int64_t expected = split == "train" ? meta_.train_tokens : meta_.val_tokens;
    if (expected != total_)
      fail(meta_file, ": field \"", split, "_tokens\" is ", expected, " but the ", split, " shards hold ", total_);
    return;
  }
  auto f = MappedFile::open(path);
  const bool shard = f->size() >= 8 && std::memcmp(f->data(), kTokenShardMagic, 8) == 0;
  add_shard(path, !shard, -1);
  raw_ = !shard;
}

void TokenData::add_shard(const std::string& file, bool raw, int64_t expected_count) {
  Shard s;
  s.file = MappedFile::open(file);
  const uint8_t* d = s.file->data();
  const int64_t size = static_cast<int64_t>(s.file->size());
  if (raw) {
    if (size % 2 != 0) fail(file, ": raw token file size ", size, " is odd (expected little-endian uint16 ids)");
    s.data = d;
    s.count = size / 2;
  } else {
    if (size < 8 || std::memcmp(d, kTokenShardMagic, 8) != 0) fail(file, ": bad magic (not a STRATOK1 token shard)");
    if (size < kTokenShardHeaderBytes)
      fail(file, ": truncated header (", size, " bytes, expected ", kTokenShardHeaderBytes, ")");
    const uint32_t version = load_le<uint32_t>(d + 8);
    const uint32_t dtype = load_le<uint32_t>(d + 12);
    const uint64_t count = load_le<uint64_t>(d + 16);
    const uint64_t reserved = load_le<uint64_t>(d + 24);
    if (version != kTokenShardVersion) fail(file, ": header field version is ", version, ", expected 1");
    if (dtype != 2 && dtype != 4) fail(file, ": header field dtype is ", dtype, ", expected 2 (uint16) or 4 (uint32)");
    if (reserved != 0) fail(file, ": header field reserved is ", reserved, ", expected 0");
    const uint64_t payload = static_cast<uint64_t>(size - kTokenShardHeaderBytes);
    if (count > payload / dtype || count * dtype != payload)
      fail(file, ": header field count is ", count, " tokens of ", dtype, " bytes, but the file holds ", payload,
           " bytes after the header (truncated or corrupt shard)");
    s.data = d + kTokenShardHeaderBytes;
    s.dtype = dtype;
    s.count = static_cast<int64_t>(count);
  }
  if (expected_count >= 0 && expected_count != s.count)
    fail(file, ": holds ", s.count, " tokens but meta.json lists ", expected_count);
  s.begin = total_;
  total_ += s.count;
  if (s.count > 0) shards_.push_back(std::move(s));
}

size_t TokenData::shard_of(int64_t i) const {
  auto it = std::upper_bound(shards_.begin(), shards_.end(), i, [](int64_t v, const Shard& s) { return v < s.begin; });
  return static_cast<size_t>(it - shards_.begin()) - 1;
}

int32_t TokenData::token(int64_t i) const {
  if (i < 0 || i >= total_) fail(path_, ": token index ", i, " out of range [0, ", total_, ")");
  const Shard& s = shards_[shard_of(i)];
  const int64_t k = i - s.begin;
  return s.dtype == 2 ? static_cast<int32_t>(load_le<uint16_t>(s.data + 2 * k))
                      : static_cast<int32_t>(load_le<uint32_t>(s.data + 4 * k));
}

void TokenData::read(int64_t start, int64_t n, int32_t* out) const {
  if (n <= 0) return;
  if (start < 0 || start + n > total_)
    fail(path_, ": token range [", start, ", ", start + n, ") out of range [0, ", total_, ")");
  size_t si = shard_of(start);
  while (n > 0) {
    const Shard& s = shards_[si++];
    const int64_t k = start - s.begin;
    const int64_t take = std::min(n, s.count - k);
    if (s.dtype == 2) {
      for (int64_t j = 0; j < take; ++j) out[j] = load_le<uint16_t>(s.data + 2 * (k + j));
    } else {
      for (int64_t j = 0; j < take; ++j) out[j] = static_cast<int32_t>(load_le<uint32_t>(s.data + 4 * (k + j)));
    }
    out += take;
    start += take;
    n -= take;
  }
}

void TokenData::check_vocab(int64_t vocab) const {
  for (const Shard& s : shards_) {
    if (s.dtype == 2 && vocab >= 65536) continue;
    for (int64_t k = 0; k < s.count; ++k) {
      const uint64_t v = s.dtype == 2 ? load_le<uint16_t>(s.data + 2 * k) : load_le<uint32_t>(s.data + 4 * k);
      if (v >= static_cast<uint64_t>(vocab))
        fail(s.file->path(), ": token id ", v, " at position ", k, " (global index ", s.begin + k,
             ") is outside the vocabulary [0, ", vocab, ")");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Batches

uint64_t epoch_seed(uint64_t seed, uint64_t epoch) {
  uint64_t x = seed;
  uint64_t y = Rng::splitmix64(x) ^ epoch;
  return Rng::splitmix64(y);
}

std::vector<uint32_t> epoch_permutation(int64_t n, uint64_t seed, uint64_t epoch) {
  if (n < 0 || n > int64_t{0xFFFFFFFF}) fail("epoch_permutation: ", n, " items do not fit 32-bit indices");
  std::vector<uint32_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<uint32_t>(i);
  Rng rng(epoch_seed(seed, epoch));
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.next() % static_cast<uint64_t>(i + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

EpochOrder::EpochOrder(int64_t n, bool shuffle, uint64_t seed) : n_(n), shuffle_(shuffle), seed_(seed) {
  if (n <= 0) fail("epoch order: no items");
  if (shuffle && n > int64_t{0xFFFFFFFF}) fail("epoch order: ", n, " items are too many to shuffle");
}

int64_t EpochOrder::item(int64_t g) const {
  if (g < 0) fail("epoch order: negative index ", g);
  if (!shuffle_) return g % n_;
  const int64_t epoch = g / n_;
  std::shared_ptr<const std::vector<uint32_t>> perm;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int slot = static_cast<int>(epoch & 1);  // consecutive epochs never evict each other
    if (cached_epoch_[slot] != epoch) {
      cached_[slot] = std::make_shared<const std::vector<uint32_t>>(
          epoch_permutation(n_, seed_, static_cast<uint64_t>(epoch)));
      cached_epoch_[slot] = epoch;
    }
    perm = cached_[slot];
  }
  return (*perm)[static_cast<size_t>(g % n_)];
}

namespace {
int64_t checked_windows(const TokenData& data, int64_t B, int64_t T) {
  if (B <= 0 || T <= 0) fail("batch loader: batch (", B, ") and sequence length (", T, ") must be positive");
  if (data.size() < T + 1)
    fail(data.path(), ": ", data.size(), " tokens is shorter than one window of T+1 = ", T + 1, " tokens");
  return (data.size() - 1) / T;
}
}  // namespace

BatchLoader::BatchLoader(const TokenData& data, int64_t B, int64_t T, bool shuffle, uint64_t seed)
    : data_(data), B_(B), T_(T), shuffle_(shuffle), order_(checked_windows(data, B, T), shuffle, seed) {}

int64_t BatchLoader::window_start(int64_t g) const {
  if (g < 0) fail("batch loader: negative window index ", g);
  if (!shuffle_) {
    // g*T mod N without overflow for any step count.
    return static_cast<int64_t>((static_cast<unsigned __int128>(g) * static_cast<unsigned __int128>(T_)) %
                                static_cast<unsigned __int128>(data_.size()));
  }
  return order_.item(g) * T_;
}

void BatchLoader::micro_batch(int64_t m, int32_t* inputs, int32_t* targets) const {
  if (m < 0) fail("batch loader: negative micro-batch index ", m);
  const int64_t N = data_.size();
  std::vector<int32_t> w(static_cast<size_t>(T_ + 1));
  for (int64_t r = 0; r < B_; ++r) {
    const int64_t start = window_start(m * B_ + r);
    // Only the unshuffled stream can run past the end (N >= T+1, so at most one wrap).
    const int64_t first = std::min(T_ + 1, N - start);
    data_.read(start, first, w.data());
    data_.read(0, T_ + 1 - first, w.data() + first);
    std::copy(w.begin(), w.end() - 1, inputs + r * T_);
    std::copy(w.begin() + 1, w.end(), targets + r * T_);
  }
}

}  // namespace strata
