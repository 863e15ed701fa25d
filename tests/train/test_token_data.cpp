// Token shards, raw .bin files and the deterministic batch loader.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <set>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "test_util.h"
#include "train/token_data.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

using test::error_of;

std::vector<int32_t> iota_ids(int64_t n, int32_t first = 0) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

// A data directory with the given train shards (and no val tokens).
std::string make_data_dir(const std::vector<std::vector<int32_t>>& shards, uint32_t dtype, int64_t vocab = 70000) {
  const std::string dir = test::make_temp_dir("tokdata");
  nlohmann::json list = nlohmann::json::array();
  int64_t total = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = "train-0000" + std::to_string(i) + ".bin";
    write_token_shard(dir + "/" + name, shards[i], dtype);
    list.push_back({{"file", name}, {"split", "train"}, {"tokens", shards[i].size()}});
    total += static_cast<int64_t>(shards[i].size());
  }
  nlohmann::json meta{{"tokenizer", "tok.model"}, {"vocab_size", vocab}, {"eos_id", 2},    {"bos_id", 1},
                      {"train_tokens", total},    {"val_tokens", 0},     {"shards", list}};
  test::write_file(dir + "/meta.json", meta.dump());
  return dir;
}

std::string shard_bytes(const std::vector<int32_t>& ids, uint32_t dtype) {
  const std::string f = test::make_temp_dir("shard") + "/s.bin";
  write_token_shard(f, ids, dtype);
  return test::read_file(f);
}

void expect_contains(const std::string& msg, std::initializer_list<std::string> needles) {
  for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
}

TEST(TokenData, ShardRoundTripAcrossShards) {
  for (uint32_t dtype : {2u, 4u}) {
    const auto a = iota_ids(10, 100), b = iota_ids(7, 60000), c = iota_ids(5, 3);
    const std::string dir = make_data_dir({a, b, c}, dtype);
    TokenData d(dir, "train");
    ASSERT_EQ(d.size(), 22);
    EXPECT_EQ(d.num_shards(), 3);
    EXPECT_FALSE(d.is_raw());
    EXPECT_EQ(d.meta().vocab_size, 70000);
    EXPECT_EQ(d.meta().eos_id, 2);
    std::vector<int32_t> all = a;
    all.insert(all.end(), b.begin(), b.end());
    all.insert(all.end(), c.begin(), c.end());
    for (int64_t i = 0; i < d.size(); ++i) EXPECT_EQ(d.token(i), all[i]) << i;
    std::vector<int32_t> got(14);
    d.read(5, 14, got.data());  // spans all three shards
    EXPECT_EQ(got, std::vector<int32_t>(all.begin() + 5, all.begin() + 19));
    EXPECT_EQ(TokenData(dir, "val").size(), 0);
    // A shard file can be opened on its own.
    TokenData one(dir + "/train-00001.bin");
    EXPECT_EQ(one.size(), 7);
    EXPECT_EQ(one.token(6), 60006);
  }
  // Header layout: magic, version, dtype, count, reserved, then little-endian ids.
  const std::string s = shard_bytes({1, 258}, 2);
  ASSERT_EQ(s.size(), 36u);
  EXPECT_EQ(s.substr(0, 8), "STRATOK1");
  EXPECT_EQ(s[8], 1);
  EXPECT_EQ(s[12], 2);
  EXPECT_EQ(s[16], 2);
  EXPECT_EQ(s.substr(32), std::string("\x01\x00\x02\x01", 4));
}

TEST(TokenData, CorruptShardErrorsNameFileAndField) {
  const std::string dir = make_data_dir({iota_ids(8)}, 2);
  const std::string shard = dir + "/train-00000.bin";
  const std::string good = test::read_file(shard);
  auto with = [&](size_t off, const std::string& bytes) {
    std::string s = good;
    s.replace(off, bytes.size(), bytes);
    test::write_file(shard, s);
    return error_of([&] { TokenData d(dir); });
  };
  expect_contains(with(0, "STRATOK2"), {shard, "magic"});
  expect_contains(with(8, std::string("\x02\0\0\0", 4)), {shard, "version"});
  expect_contains(with(12, std::string("\x03\0\0\0", 4)), {shard, "dtype", "3"});
  expect_contains(with(12, std::string("\x04\0\0\0", 4)), {shard, "count"});  // 8 uint32 ids need 32 bytes
  expect_contains(with(16, std::string("\x09\0\0\0\0\0\0\0", 8)), {shard, "count", "9"});
  expect_contains(with(16, std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8)), {shard, "count"});
  expect_contains(with(24, std::string("\x01", 1)), {shard, "reserved"});
  test::write_file(shard, good.substr(0, good.size() - 1));  // truncated payload
  expect_contains(error_of([&] { TokenData d(dir); }), {shard, "count", "truncated"});
  test::write_file(shard, good.substr(0, 20));  // truncated header
  expect_contains(error_of([&] { TokenData d(dir); }), {shard, "header"});
  test::write_file(shard, good);
  EXPECT_EQ(error_of([&] { TokenData d(dir); }), "<no error>");
  // meta.json must agree with the shards, and its absence means an incomplete directory.
  const std::string meta = test::read_file(dir + "/meta.json");
  auto j = nlohmann::json::parse(meta);
  j["shards"][0]["tokens"] = 9;
  test::write_file(dir + "/meta.json", j.dump());
  expect_contains(error_of([&] { TokenData d(dir); }), {shard, "meta.json"});
  fs::remove(dir + "/meta.json");
  expect_contains(error_of([&] { TokenData d(dir); }), {"meta.json"});
  test::write_file(dir + "/meta.json", meta);
  expect_contains(error_of([&] { TokenData d(dir, "test"); }), {"split", "test"});
  fs::remove(shard);
  expect_contains(error_of([&] { TokenData d(dir); }), {shard});
}

TEST(TokenData, OutOfVocabTokenNamesFileAndPosition) {
  const std::string dir = make_data_dir({iota_ids(10), {5, 6, 300, 7}}, 4);
  TokenData d(dir);
  EXPECT_EQ(error_of([&] { d.check_vocab(301); }), "<no error>");
  const std::string e = error_of([&] { d.check_vocab(300); });
  expect_contains(e, {dir + "/train-00001.bin", "300", "position 2", "global index 12"});
  // uint16 raw files too.
  const std::string raw = test::make_temp_dir("raw") + "/data.bin";
  test::write_file(raw, std::string("\x01\x00\xff\xff", 4));
  expect_contains(error_of([&] { TokenData(raw).check_vocab(32000); }), {raw, "65535", "position 1"});
}

TEST(TokenData, RawUint16Bin) {
  const std::string raw = test::make_temp_dir("raw") + "/tok.bin";
  std::string bytes;
  for (int v : {1, 2, 513, 65535, 0}) {
    bytes.push_back(static_cast<char>(v & 0xff));
    bytes.push_back(static_cast<char>(v >> 8));
  }
  test::write_file(raw, bytes);
  TokenData d(raw);
  EXPECT_TRUE(d.is_raw());
  ASSERT_EQ(d.size(), 5);
  EXPECT_EQ(d.token(2), 513);
  EXPECT_EQ(d.token(3), 65535);
  EXPECT_EQ(d.meta().vocab_size, 0);
  test::write_file(raw, bytes + "x");
  expect_contains(error_of([&] { TokenData e(raw); }), {raw, "odd"});
  expect_contains(error_of([&] { TokenData e(raw + ".missing"); }), {raw + ".missing"});
}

TEST(BatchLoader, ShuffleOffWindowsWrapAround) {
  const int64_t N = 23, B = 2, T = 5;
  const std::string dir = make_data_dir({iota_ids(9, 1000), iota_ids(14, 1009)}, 2);
  TokenData d(dir);
  BatchLoader bl(d, B, T, false, 7);
  std::vector<int32_t> in(B * T), tg(B * T);
  for (int64_t m = 0; m < 12; ++m) {
    bl.micro_batch(m, in.data(), tg.data());
    for (int64_t r = 0; r < B; ++r) {
      const int64_t start = ((m * B + r) * T) % N;
      for (int64_t t = 0; t < T; ++t) {
        EXPECT_EQ(in[r * T + t], 1000 + (start + t) % N) << m << " " << r << " " << t;
        EXPECT_EQ(tg[r * T + t], 1000 + (start + t + 1) % N) << m << " " << r << " " << t;
      }
    }
  }
  // Micro-batch 2, row 0 starts at 20: 20 21 22 | 0 1 2 (wrapped).
  bl.micro_batch(2, in.data(), tg.data());
  EXPECT_EQ(std::vector<int32_t>(in.begin(), in.begin() + T), (std::vector<int32_t>{1020, 1021, 1022, 1000, 1001}));
  EXPECT_EQ(std::vector<int32_t>(tg.begin(), tg.begin() + T), (std::vector<int32_t>{1021, 1022, 1000, 1001, 1002}));
}

TEST(BatchLoader, ShuffleOnIsSeededPermutationPerEpoch) {
  const int64_t B = 3, T = 4;
  TokenData d(make_data_dir({iota_ids(41)}, 2));  // (41-1)/4 = 10 windows
  BatchLoader a(d, B, T, true, 42), b(d, B, T, true, 42), c(d, B, T, true, 43);
  ASSERT_EQ(a.n_windows(), 10);
  std::vector<std::vector<int64_t>> orders;
  for (int64_t e = 0; e < 4; ++e) {
    std::vector<int64_t> starts;
    for (int64_t i = 0; i < 10; ++i) starts.push_back(a.window_start(e * 10 + i));
    std::vector<int64_t> sorted = starts;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(sorted[i], i * T);
    // Exactly Fisher-Yates with strata::Rng seeded from (seed, epoch).
    std::vector<int64_t> expect(10);
    std::iota(expect.begin(), expect.end(), 0);
    Rng rng(epoch_seed(42, static_cast<uint64_t>(e)));
    for (int64_t i = 9; i > 0; --i) std::swap(expect[i], expect[rng.next() % static_cast<uint64_t>(i + 1)]);
    for (auto& v : expect) v *= T;
    EXPECT_EQ(starts, expect);
    orders.push_back(starts);
  }
  EXPECT_NE(orders[0], orders[1]);
  // Deterministic per seed, different across seeds, stateless in m (any order of calls).
  std::vector<int32_t> in1(B * T), tg1(B * T), in2(B * T), tg2(B * T);
  bool differs = false;
  for (int64_t m : {9, 0, 5, 13, 1, 2, 8}) {
    a.micro_batch(m, in1.data(), tg1.data());
    for (int64_t k = 0; k < 3; ++k) b.micro_batch(k * 4, in2.data(), tg2.data());  // disturb b's cache
    b.micro_batch(m, in2.data(), tg2.data());
    EXPECT_EQ(in1, in2);
    EXPECT_EQ(tg1, tg2);
    for (int64_t r = 0; r < B; ++r) {
      const int64_t start = a.window_start(m * B + r);
      for (int64_t t = 0; t < T; ++t) {
        EXPECT_EQ(in1[r * T + t], start + t);
        EXPECT_EQ(tg1[r * T + t], start + t + 1);
      }
    }
    c.micro_batch(m, in2.data(), tg2.data());
    differs |= in1 != in2;
  }
  EXPECT_TRUE(differs);
}

TEST(BatchLoader, DataShorterThanOneWindowIsAnError) {
  const std::string dir = make_data_dir({iota_ids(8)}, 2);
  TokenData d(dir);
  EXPECT_EQ(error_of([&] { BatchLoader bl(d, 1, 7, false, 0); }), "<no error>");
  const std::string e = error_of([&] { BatchLoader bl(d, 1, 8, true, 0); });
  EXPECT_NE(e.find("shorter"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { BatchLoader bl(d, 0, 4, false, 0); }), "<no error>");
}

}  // namespace
}  // namespace strata
