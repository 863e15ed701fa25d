// Pretraining data: token shards written by `strata tokenize` (format in
// docs/formats.md), raw little-endian uint16 .bin files (nanoGPT, llama2.c),
// and the deterministic batches drawn from them.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/mapped_file.h"

namespace strata {

inline constexpr char kTokenShardMagic[8] = {'S', 'T', 'R', 'A', 'T', 'O', 'K', '1'};
inline constexpr uint32_t kTokenShardVersion = 1;
inline constexpr int64_t kTokenShardHeaderBytes = 32;

// Streams token ids into one shard: a hidden temp file beside `path`, renamed
// into place by commit() after fsync (the destructor removes an uncommitted one),
// so a shard file is either complete or absent.
class TokenShardWriter {
 public:
  // dtype: 2 (uint16) or 4 (uint32) bytes per id.
  TokenShardWriter(const std::string& path, uint32_t dtype);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Ids must fit the dtype (checked).
  void append(const int32_t* ids, int64_t n);
  int64_t count() const { return count_; }
  const std::string& path() const { return path_; }
  void commit();

 private:
  void flush();
  std::string path_, tmp_;
  uint32_t dtype_;
  int fd_ = -1;
  int64_t count_ = 0;
  bool committed_ = false;
  std::vector<uint8_t> buf_;
};

// Writes a whole shard at once (atomic, as above).
void write_token_shard(const std::string& path, const std::vector<int32_t>& ids, uint32_t dtype);

// Metadata of a data directory (meta.json); zeros / -1 for a raw .bin file.
struct TokenDataMeta {
  std::string tokenizer;
  int64_t vocab_size = 0;
  int32_t eos_id = -1, bos_id = -1;
  int64_t train_tokens = 0, val_tokens = 0;
};

// The tokens of one split as one sequence indexed across shards. `path` is
//  - a data directory from `strata tokenize` (split "train" or "val"; its shards are
//    listed in meta.json, which is written last, so a half-written directory is rejected),
//  - a single STRATOK1 shard file (split ignored), or
//  - a raw file of little-endian uint16 ids (no STRATOK1 magic; split ignored).
// Every shard header is validated on open. A split may be empty (size() == 0).
// Copies share the mappings.
class TokenData {
 public:
  explicit TokenData(const std::string& path, const std::string& split = "train");

  int64_t size() const { return total_; }
  int32_t token(int64_t i) const;
  // Copies tokens [start, start + n) (must lie within [0, size())) into out.
  void read(int64_t start, int64_t n, int32_t* out) const;
  // Fails naming the file and the position (within the file and global) of the
  // first id < 0 or >= vocab: a corrupt shard must never be trained on.
  void check_vocab(int64_t vocab) const;

  const std::string& path() const { return path_; }
  bool is_raw() const { return raw_; }
  const TokenDataMeta& meta() const { return meta_; }
  int64_t num_shards() const { return static_cast<int64_t>(shards_.size()); }

 private:
  struct Shard {
    std::shared_ptr<MappedFile> file;
    const uint8_t* data = nullptr;  // first token
    uint32_t dtype = 2;
    int64_t count = 0;
    int64_t begin = 0;  // global index of the first token
  };
  void add_shard(const std::string& file, bool raw, int64_t expected_count);
  size_t shard_of(int64_t i) const;

  std::string path_;
  bool raw_ = false;
  TokenDataMeta meta_;
  std::vector<Shard> shards_;
  int64_t total_ = 0;
};

// Seed of epoch `epoch`'s shuffle: two SplitMix64 rounds over (seed, epoch).
uint64_t epoch_seed(uint64_t seed, uint64_t epoch);
// A permutation of [0, n): Fisher-Yates from the top with j = rng.next() % (i + 1),
// rng = Rng(epoch_seed(seed, epoch)). Identical on every machine.
std::vector<uint32_t> epoch_permutation(int64_t n, uint64_t seed, uint64_t epoch);

// Item order over epochs: g -> g mod n without shuffle, otherwise
// epoch_permutation(n, seed, g / n)[g mod n]. Permutations are computed lazily
// and the two latest epochs cached (a batch may straddle an epoch boundary);
// thread-safe, and a pure function of g.
class EpochOrder {
 public:
  EpochOrder(int64_t n, bool shuffle, uint64_t seed);
  int64_t item(int64_t g) const;
  int64_t size() const { return n_; }

 private:
  int64_t n_;
  bool shuffle_;
  uint64_t seed_;
  mutable std::mutex mu_;
  mutable int64_t cached_epoch_[2] = {-1, -1};
  mutable std::shared_ptr<const std::vector<uint32_t>> cached_[2];
};

// Micro-batches of B rows of T inputs and T targets, a pure function of the
// micro-batch index m (so resuming from m is exact). Row r reads window
// g = m*B + r:
//  - shuffle off: the T+1 tokens starting at token g*T of the data repeated
//    without end (indices taken modulo size(), so windows wrap to the start);
//  - shuffle on: n_windows = (size()-1) / T windows start at w*T; epoch
//    e = g / n_windows visits them in the order epoch_permutation(n_windows, seed, e).
// Inputs are the first T tokens of the window, targets the last T.
class BatchLoader {
 public:
  BatchLoader(const TokenData& data, int64_t B, int64_t T, bool shuffle, uint64_t seed);

  void micro_batch(int64_t m, int32_t* inputs /*B*T*/, int32_t* targets /*B*T*/) const;
  // Token index where window g starts (for shuffle off: g*T mod size()).
  int64_t window_start(int64_t g) const;
  int64_t n_windows() const { return order_.size(); }
  int64_t batch() const { return B_; }
  int64_t seq() const { return T_; }

 private:
  TokenData data_;
  int64_t B_, T_;
  bool shuffle_;
  EpochOrder order_;
};

}  // namespace strata
