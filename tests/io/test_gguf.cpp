// GGUF reading and writing (src/io/gguf.*): round trips of every metadata and
// tensor type, malformed files (every truncation, bad counts, lengths, types,
// offsets) giving one error that names the file and the key or tensor, and
// the real llama.cpp file of ../shared/data with its embedded Llama 2 vocabulary.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "kernels/quant.h"
#include "strata/error.h"
#include "strata/model.h"
#include "strata/tokenizer.h"
#include "test_util.h"

namespace strata {
namespace {

Tensor filled(DType dtype, Shape shape, uint32_t seed) {
  Tensor f = Tensor::alloc(DType::F32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = g(rng);
  return f.to(dtype);
}

std::string small_file(const std::string& dir) {
  GgufWriter w;
  w.set("general.architecture", GgufValue::str("test"));
  w.set("a.u32", GgufValue::u32(7));
  w.set("a.i32", GgufValue::i32(-3));
  w.set("a.u64", GgufValue::u64(uint64_t{1} << 40));
  w.set("a.f32", GgufValue::f32(0.25f));
  w.set("a.bool", GgufValue::boolean(true));
  w.set("a.str", GgufValue::str("héllo"));
  w.set("a.strs", GgufValue::array(GgufType::String, {GgufValue::str("x"), GgufValue::str("")}));
  w.set("a.ints", GgufValue::array(GgufType::I32, {GgufValue::i32(1), GgufValue::i32(-2)}));
  static const Tensor ts[] = {filled(DType::F32, {3, 5}, 1),  filled(DType::F16, {2, 7}, 2),
                              filled(DType::BF16, {4}, 3),    filled(DType::Q8_0, {3, 64}, 4),
                              filled(DType::Q4_K, {2, 256}, 5), filled(DType::Q6_K, {1, 512}, 6)};
  const char* names[] = {"t.f32", "t.f16", "t.bf16", "t.q8", "t.q4k", "t.q6k"};
  for (int i = 0; i < 6; ++i) w.add_tensor(names[i], ts[i]);
  const std::string path = dir + "/small.gguf";
  w.write(path);
  return path;
}

TEST(Gguf, WriteReadRoundTrip) {
  const std::string path = small_file(test::make_temp_dir("gguf"));
  const GgufFile g = GgufFile::open(path);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.get_uint("a.u32"), 7u);
  EXPECT_EQ(g.find("a.i32")->i, -3);
  EXPECT_EQ(g.get_uint("a.u64"), uint64_t{1} << 40);
  EXPECT_EQ(g.get_float("a.f32"), 0.25);
  EXPECT_TRUE(g.get_bool("a.bool", false));
  EXPECT_EQ(g.get_string("a.str"), "héllo");
  ASSERT_EQ(g.get_array("a.strs", GgufType::String).size(), 2u);
  EXPECT_EQ(g.get_array("a.strs", GgufType::String)[1].s, "");
  EXPECT_EQ(g.get_array("a.ints", GgufType::I32)[1].i, -2);
  EXPECT_EQ(g.get_uint("missing", 5), 5u);
  EXPECT_NE(test::error_of([&] { g.get_string("a.u32"); }).find("key 'a.u32': expected a string"), std::string::npos);
  ASSERT_EQ(g.tensors().size(), 6u);
  const Tensor again[] = {filled(DType::F32, {3, 5}, 1),  filled(DType::F16, {2, 7}, 2),
                          filled(DType::BF16, {4}, 3),    filled(DType::Q8_0, {3, 64}, 4),
                          filled(DType::Q4_K, {2, 256}, 5), filled(DType::Q6_K, {1, 512}, 6)};
  for (size_t i = 0; i < 6; ++i) {
    const GgufTensorInfo& ti = g.tensors()[i];
    EXPECT_EQ(ti.shape, again[i].shape) << ti.name;
    EXPECT_EQ(ti.dtype, again[i].dtype) << ti.name;
    const Tensor t = g.tensor(ti);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u) << ti.name << ": data aligned to general.alignment";
    ASSERT_EQ(t.nbytes(), again[i].nbytes());
    EXPECT_EQ(0, std::memcmp(t.data, again[i].data, t.nbytes())) << ti.name;
  }
}

// Every prefix of a valid file is refused with an error naming the file (never a crash or a read past the end).
TEST(Gguf, EveryTruncationIsAnError) {
  const std::string dir = test::make_temp_dir("gguf-trunc");
  const std::string whole = test::read_file(small_file(dir));
  const std::string path = dir + "/cut.gguf";
  for (size_t n = 0; n < whole.size(); n += (n < 600 ? 1 : 97)) {
    test::write_file(path, whole.substr(0, n));
    const std::string e = test::error_of([&] { GgufFile::open(path); });
    EXPECT_NE(e.find(path), std::string::npos) << "prefix of " << n << " bytes: " << e;
  }
}

// Byte surgery on a valid file: each case gives one error naming what is wrong.
TEST(Gguf, MalformedFieldsAreNamed) {
  const std::string dir = test::make_temp_dir("gguf-bad");
  const std::string good = test::read_file(small_file(dir));
  const std::string path = dir + "/bad.gguf";
  auto put64 = [](std::string& s, size_t at, uint64_t v) { std::memcpy(s.data() + at, &v, 8); };
  auto put32 = [](std::string& s, size_t at, uint32_t v) { std::memcpy(s.data() + at, &v, 4); };
  auto expect = [&](std::string bytes, const std::string& needle) {
    test::write_file(path, bytes);
    const std::string e = test::error_of([&] { GgufFile::open(path); });
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_NE(e.find(needle), std::string::npos) << "expected '" << needle << "' in: " << e;
  };
  std::string s = good;
  s[0] = 'X';
  expect(s, "not a GGUF file");
  s = good, put32(s, 4, 1);
  expect(s, "GGUF version 1 is not supported");
  s = good, put64(s, 16, uint64_t{1} << 60);
  expect(s, "metadata count");
  s = good, put64(s, 8, uint64_t{1} << 60);
  expect(s, "tensor count");
  s = good, put64(s, 24, uint64_t{1} << 50);  // the first key's length
  expect(s, "runs past the end of the file");
  // The first key is general.architecture (a string value): make its value type unknown.
  const size_t type_at = 24 + 8 + std::strlen("general.architecture");
  s = good, put32(s, type_at, 77);
  expect(s, "key 'general.architecture': unknown value type 77");
  // Tensor infos: find the first one ("t.f32") and break its type, dims and offset.
  const size_t t0 = good.find("t.f32") + 5;  // after the name: n_dims, 2 dims, type, offset
  s = good, put32(s, t0, 5);
  expect(s, "tensor 't.f32': 5 dimensions (at most 4 supported)");
  s = good, put64(s, t0 + 4, uint64_t{1} << 45);
  expect(s, "tensor 't.f32': dimension 0");
  s = good, put32(s, t0 + 20, 6);  // Q5_0 rows of 5 values
  expect(s, "tensor 't.f32': rows of 5 values are not whole Q5_0 blocks");
  s = good, put32(s, t0 + 20, 16);
  expect(s, "tensor 't.f32': tensor type IQ2_XXS (16) is not supported");
  s = good, put32(s, t0 + 20, 1234);
  expect(s, "tensor 't.f32': tensor type unknown (1234)");
  s = good, put64(s, t0 + 24, 8);
  expect(s, "tensor 't.f32': data offset 8 is not a multiple of the alignment 32");
  s = good, put64(s, t0 + 24, uint64_t{1} << 40);
  expect(s, "tensor 't.f32': data [");
  s = good.substr(0, good.size() - 100);
  expect(s, "tensor 't.q6k': data [");
}

// Random byte changes anywhere in the header, metadata and tensor infos: the
// file opens or is refused with an error naming it; nothing reads past the
// end (the sanitizer build runs this too).
TEST(Gguf, RandomCorruptionsAreRefusedOrRead) {
  const std::string dir = test::make_temp_dir("gguf-mut");
  const std::string good = test::read_file(small_file(dir));
  const size_t header = good.find("t.q6k") + 64;  // past the last tensor info
  const std::string path = dir + "/mut.gguf";
  std::mt19937 rng(7);
  int opened = 0, refused = 0;
  for (int trial = 0; trial < 1500; ++trial) {
    std::string s = good;
    const int changes = 1 + static_cast<int>(rng() % 4);
    for (int c = 0; c < changes; ++c) {
      const size_t at = rng() % header;
      switch (rng() % 3) {
        case 0: s[at] = static_cast<char>(rng()); break;                // any byte
        case 1: s[at] = static_cast<char>(s[at] ^ (1 << (rng() % 8))); break;  // one bit
        default: s[at] = static_cast<char>(0xff); break;                // large counts and lengths
      }
    }
    test::write_file(path, s);
    try {
      const GgufFile g = GgufFile::open(path);
      for (const GgufTensorInfo& ti : g.tensors()) {
        const Tensor t = g.tensor(ti);
        volatile uint8_t last = static_cast<const uint8_t*>(t.data)[t.nbytes() - 1];  // the data is inside the file
        (void)last;
      }
      ++opened;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(opened, 0);
}

TEST(Gguf, LlamaCppFileLoadsWithItsVocabulary) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string path = data + "/llama-2-tiny-random.gguf";
  const GgufFile g = GgufFile::open(path);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.tensors().size(), 12u);
  EXPECT_EQ(g.metadata().size(), 18u);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  auto model = Model::load(path);
  EXPECT_EQ(model->config().hidden_size, 8);
  EXPECT_EQ(model->config().vocab_size, 32000);
  // The vocabulary rebuilt from tokenizer.ggml.* tokenizes as Meta's tokenizer.model does.
  auto from_gguf = Tokenizer::load(path);
  auto reference = Tokenizer::load(data + "/tokenizer.model");
  EXPECT_EQ(from_gguf->vocab_size(), 32000);
  EXPECT_EQ(from_gguf->bos_id(), 1);
  EXPECT_EQ(from_gguf->eos_id(), 2);
  for (const char* text : {"Hello world", "  two  spaces and\ttabs\n", "Ünïcödé 日本語 🙂 bytes \x01",
                           "Once upon a time, there was a little girl named Lily."}) {
    const auto ids = reference->encode(text, true);
    EXPECT_EQ(from_gguf->encode(text, true), ids) << text;
    EXPECT_EQ(from_gguf->decode(ids), reference->decode(ids)) << text;
  }
}

}  // namespace
}  // namespace strata
