#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "strata/error.h"
#include "test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// 8-byte little-endian length + header + data, as a safetensors file is laid out.
std::string st_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

using test::error_of;

Tensor filled(DType dt, Shape shape, float seed) {
  Tensor f = Tensor::alloc(DType::F32, shape);
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = seed + 0.25f * static_cast<float>(i) - 3.0f;
  return f.to(dt);
}

TEST(Safetensors, RoundTripDtypesAndMetadata) {
  const std::string dir = test::make_temp_dir("st-rt");
  const std::string path = dir + "/m.safetensors";
  NamedTensors ts = {{"b.weight", filled(DType::BF16, {3, 5}, 1.0f)},
                     {"a.weight", filled(DType::F32, {7}, 2.0f)},
                     {"c.half", filled(DType::F16, {2, 3, 1}, 3.0f)},
                     {"empty", Tensor::alloc(DType::F32, {0, 4})}};
  write_safetensors(path, ts, {{"producer", "strata"}});

  const std::string bytes = test::read_file(path);
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes.data(), 8);
  EXPECT_EQ(hlen % 8, 0u);
  json h = json::parse(bytes.substr(8, hlen));
  EXPECT_EQ(h["__metadata__"]["format"], "pt");
  EXPECT_EQ(h["__metadata__"]["producer"], "strata");
  EXPECT_EQ(h["b.weight"]["dtype"], "BF16");
  EXPECT_EQ(h["b.weight"]["data_offsets"], json::array({0, 30}));  // given order, not sorted
  EXPECT_EQ(h["a.weight"]["data_offsets"], json::array({30, 58}));
  EXPECT_EQ(bytes.size(), 8 + hlen + 30 + 28 + 12);

  WeightSet ws;
  read_safetensors(path, ws);
  ASSERT_EQ(ws.tensors.size(), 4u);
  for (const auto& [name, t] : ts) {
    const Tensor* r = ws.find(name);
    ASSERT_NE(r, nullptr) << name;
    EXPECT_EQ(r->dtype, t.dtype) << name;
    EXPECT_EQ(r->shape, t.shape) << name;
    EXPECT_EQ(std::memcmp(r->data, t.data, t.nbytes()), 0) << name;
    EXPECT_EQ(ws.source_of(name), path);
  }
  // Views keep the mapping alive after the set is gone.
  Tensor keep = *ws.find("a.weight");
  ws = WeightSet();
  EXPECT_EQ(keep.f32()[1], 2.0f + 0.25f - 3.0f);
}

TEST(Safetensors, UnalignedTensorIsCopied) {
  // A 2-byte pad before an F32 tensor makes its offset not a multiple of 4.
  std::string header = R"({"pad":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},)"
                       R"("x":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  float v[2] = {1.5f, -2.25f};
  std::string data(2, '\0');
  data.append(reinterpret_cast<const char*>(v), 8);
  const std::string path = test::make_temp_dir("st-align") + "/u.safetensors";
  test::write_file(path, st_bytes(header, data));
  WeightSet ws;
  read_safetensors(path, ws);
  const Tensor* x = ws.find("x");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x->data) % 4, 0u);
  EXPECT_EQ(x->f32()[0], 1.5f);
  EXPECT_EQ(x->f32()[1], -2.25f);
}

struct Malformed {
  const char* what;
  std::string bytes;
  std::vector<std::string> expect;  // substrings of the message besides the path
};

TEST(Safetensors, MalformedInputNamesPathAndTensor) {
  const std::string ok_entry = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  const std::string eight(8, '\0');
  auto entry = [](const std::string& body) { return R"({"w":{)" + body + "}}"; };
  std::string big_len = st_bytes("{}", "");
  big_len[0] = static_cast<char>(0xff);  // header length 255 in a 10-byte file
  const std::vector<Malformed> cases = {
      {"empty file", "", {"header"}},
      {"short file", std::string(5, 'x'), {"header", "too short"}},
      {"header too long", big_len, {"header", "larger than the file"}},
      {"invalid json", st_bytes("{\"w\": ", eight), {"header", "invalid JSON"}},
      {"header not object", st_bytes("[1,2]", ""), {"header"}},
      {"entry not object", st_bytes(R"({"w": 3})", eight), {"tensor 'w'", "not an object"}},
      {"unknown dtype",
       st_bytes(entry(R"("dtype":"I64","shape":[1],"data_offsets":[0,8])"), eight),
       {"tensor 'w'", "I64"}},
      {"missing dtype", st_bytes(entry(R"("shape":[2],"data_offsets":[0,8])"), eight), {"tensor 'w'", "dtype"}},
      {"shape not list",
       st_bytes(entry(R"("dtype":"F32","shape":2,"data_offsets":[0,8])"), eight),
       {"tensor 'w'", "shape"}},
      {"negative shape",
       st_bytes(entry(R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])"), eight),
       {"tensor 'w'", "shape"}},
      {"non-int shape",
       st_bytes(entry(R"("dtype":"F32","shape":[2.5],"data_offsets":[0,8])"), eight),
       {"tensor 'w'", "shape"}},
      {"offsets one int",
       st_bytes(entry(R"("dtype":"F32","shape":[2],"data_offsets":[8])"), eight),
       {"tensor 'w'", "data_offsets"}},
      {"offsets not ints",
       st_bytes(entry(R"("dtype":"F32","shape":[2],"data_offsets":["0",8])"), eight),
       {"tensor 'w'", "data_offsets"}},
      {"offsets missing", st_bytes(entry(R"("dtype":"F32","shape":[2])"), eight), {"tensor 'w'", "data_offsets"}},
      {"begin after end",
       st_bytes(entry(R"("dtype":"F32","shape":[0],"data_offsets":[8,0])"), eight),
       {"tensor 'w'", "begin"}},
      {"end past data",
       st_bytes(entry(R"("dtype":"F32","shape":[4],"data_offsets":[0,16])"), eight),
       {"tensor 'w'", "past the data section"}},
      {"size mismatch",
       st_bytes(entry(R"("dtype":"F32","shape":[3],"data_offsets":[0,8])"), eight),
       {"tensor 'w'", "needs 12"}},
      {"numel overflow",
       st_bytes(entry(R"("dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8])"), eight),
       {"tensor 'w'", "overflows"}},
      {"bytes overflow",
       st_bytes(entry(R"("dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8])"), eight),
       {"tensor 'w'", "overflows"}},
      {"duplicate name",
       st_bytes("{\"w\":{" + ok_entry + "},\"w\":{" + ok_entry + "}}", eight),
       {"tensor 'w'", "duplicate"}},
      {"metadata not object", st_bytes(R"({"__metadata__": 5})", ""), {"header", "__metadata__"}},
  };
  const std::string dir = test::make_temp_dir("st-bad");
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = dir + "/case" + std::to_string(i) + ".safetensors";
    test::write_file(path, cases[i].bytes);
    WeightSet ws;
    const std::string msg = error_of([&] { read_safetensors(path, ws); });
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << cases[i].what << ": " << msg;
    for (const std::string& s : cases[i].expect)
      EXPECT_NE(msg.find(s), std::string::npos) << cases[i].what << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_TRUE(ws.tensors.empty()) << cases[i].what;  // nothing half-loaded
  }
}

TEST(Safetensors, DuplicateAcrossFiles) {
  const std::string dir = test::make_temp_dir("st-dup");
  write_safetensors(dir + "/a.safetensors", {{"w", filled(DType::F32, {2}, 0)}});
  write_safetensors(dir + "/b.safetensors", {{"w", filled(DType::F32, {2}, 1)}});
  WeightSet ws;
  read_safetensors(dir + "/a.safetensors", ws);
  const std::string msg = error_of([&] { read_safetensors(dir + "/b.safetensors", ws); });
  EXPECT_NE(msg.find(dir + "/b.safetensors: tensor 'w': duplicate"), std::string::npos) << msg;
  EXPECT_NE(msg.find("a.safetensors"), std::string::npos) << msg;
}

TEST(Safetensors, MissingFileNamesPath) {
  WeightSet ws;
  const std::string msg = error_of([&] { read_safetensors("/nonexistent/x.safetensors", ws); });
  EXPECT_NE(msg.find("/nonexistent/x.safetensors"), std::string::npos) << msg;
}

TEST(Safetensors, WriterRejectsDuplicateNames) {
  const std::string dir = test::make_temp_dir("st-wdup");
  const std::string msg = error_of([&] {
    write_safetensors(dir + "/d.safetensors", {{"w", filled(DType::F32, {2}, 0)}, {"w", filled(DType::F32, {2}, 0)}});
  });
  EXPECT_NE(msg.find("tensor 'w'"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir + "/d.safetensors"));
}

TEST(Safetensors, AtomicWriteLeavesNoTempFiles) {
  const std::string dir = test::make_temp_dir("st-atomic");
  write_file_atomic(dir + "/f.txt", "first");
  write_file_atomic(dir + "/f.txt", "second");
  EXPECT_EQ(test::read_file(dir + "/f.txt"), "second");
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++n;
  }
  EXPECT_EQ(n, 1u);
  EXPECT_THROW(write_file_atomic(dir + "/no/such/dir/f.txt", "x"), Error);
}

}  // namespace
}  // namespace strata
