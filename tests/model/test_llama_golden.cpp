// stories260K against the llama2.c reference outputs in ../shared/data/expected,
// loaded from the .bin and from HF directories written from the same weights,
// on every ISA path.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/cpu.h"
#include "model/checkpoint.h"
#include "strata/generate.h"
#include "strata/model.h"
#include "strata/tokenizer.h"
#include "test_util.h"

namespace strata {
namespace {

std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream f(path);
  std::vector<int32_t> ids;
  int32_t v;
  while (f >> v) ids.push_back(v);
  return ids;
}

struct ExpectedLogits {
  int pos, tok, argmax;
  float head[8], max;
};

std::vector<ExpectedLogits> read_logits(const std::string& path) {
  std::ifstream f(path);
  std::vector<ExpectedLogits> r;
  std::string line;
  while (std::getline(f, line)) {
    ExpectedLogits e{};
    if (std::sscanf(line.c_str(), "LOGITS pos=%d tok=%d: %f %f %f %f %f %f %f %f argmax=%d max=%f", &e.pos, &e.tok,
                    &e.head[0], &e.head[1], &e.head[2], &e.head[3], &e.head[4], &e.head[5], &e.head[6], &e.head[7],
                    &e.argmax, &e.max) == 12)
      r.push_back(e);
  }
  return r;
}

// Writes the stories260K weights as HF directories once per test binary run.
std::string hf_dir(const std::string& data, int64_t shard_bytes) {
  static std::map<int64_t, std::string> made;
  auto it = made.find(shard_bytes);
  if (it != made.end()) return it->second;
  Checkpoint ck = load_checkpoint(data + "/stories260K.bin");
  auto m = Model::from_weights(ck.config, ck.weights);
  std::string dir = test::make_temp_dir(shard_bytes ? "hf-sharded" : "hf-single");
  save_hf_checkpoint(dir, ck.config, m->named_tensors(), shard_bytes);
  return made[shard_bytes] = dir;
}

struct IsaGuard {
  Isa saved = active_isa();
  ~IsaGuard() { set_active_isa(saved); }
};

class Stories260K : public ::testing::TestWithParam<std::tuple<std::string, Isa>> {
 protected:
  void SetUp() override {
    data_ = test::shared_data_dir();
    if (data_.empty()) GTEST_SKIP() << "shared test data not found (../shared/data): skipping";
    if (!isa_supported(std::get<1>(GetParam()))) GTEST_SKIP() << "ISA not supported on this CPU";
    set_active_isa(std::get<1>(GetParam()));
    const std::string& src = std::get<0>(GetParam());
    std::string path = src == "bin" ? data_ + "/stories260K.bin" : hf_dir(data_, src == "sharded" ? 60000 : 0);
    if (src == "sharded") {
      ASSERT_TRUE(std::ifstream(path + "/model.safetensors.index.json").good());
    }
    model_ = Model::load(path);
    tok_ = Tokenizer::load(data_ + "/tok512.model");
  }
  IsaGuard guard_;
  std::string data_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
};

TEST_P(Stories260K, GreedyIdsMatchReference) {
  const auto expected = read_ids(data_ + "/expected/stories260K_t0_n200_once_upon_a_time.ids.txt");
  ASSERT_EQ(expected.size(), 201u);
  std::vector<int32_t> prompt = tok_->encode("Once upon a time", true);
  ASSERT_EQ(prompt, std::vector<int32_t>(expected.begin(), expected.begin() + 5));
  GenerateOptions opts;
  opts.sampler.temperature = 0;
  opts.max_new_tokens = 196;  // llama2.c's -n 200 counts prompt positions
  auto r = generate(*model_, prompt, opts, [](int32_t) { return true; });
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), r.tokens.begin(), r.tokens.end());
  EXPECT_EQ(all, expected);
}

TEST_P(Stories260K, LogitsMatchReference) {
  const auto expected = read_logits(data_ + "/expected/stories260K_once_upon_a_time.logits_head.txt");
  ASSERT_EQ(expected.size(), 3u);
  std::vector<int32_t> ids = tok_->encode("Once upon a time", true);
  std::vector<float> logits;
  SeqInput in{ids};
  model_->forward({&in, 1}, Logits::All, logits);
  const int64_t V = model_->config().vocab_size;
  for (const auto& e : expected) {
    ASSERT_EQ(ids[e.pos], e.tok);
    const float* row = &logits[e.pos * V];
    for (int i = 0; i < 8; ++i) EXPECT_NEAR(row[i], e.head[i], 1e-4f) << "pos " << e.pos << " logit " << i;
    const int64_t am = std::max_element(row, row + V) - row;
    EXPECT_EQ(am, e.argmax);
    EXPECT_NEAR(row[am], e.max, 1e-4f);
  }
}

TEST_P(Stories260K, CachedDecodeEqualsNoCache) {
  std::vector<int32_t> prompt = tok_->encode("Once upon a time", true);
  for (float temp : {0.0f, 0.9f}) {
    GenerateOptions opts;
    opts.sampler.temperature = temp;
    opts.sampler.seed = 7;
    opts.max_new_tokens = 60;
    auto cached = generate(*model_, prompt, opts, [](int32_t) { return true; });
    opts.use_cache = false;
    auto fresh = generate(*model_, prompt, opts, [](int32_t) { return true; });
    EXPECT_EQ(cached.tokens, fresh.tokens) << "temperature " << temp;
  }
}

INSTANTIATE_TEST_SUITE_P(All, Stories260K,
                         ::testing::Combine(::testing::Values("bin", "single", "sharded"),
                                            ::testing::ValuesIn(kAllIsas)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::string(isa_name(std::get<1>(info.param)));
                         });

TEST(Stories260KText, GreedyTextMatchesReferenceThroughTheCli) {
  STRATA_REQUIRE_SHARED_DATA(data);
  auto r = test::run_cli("generate -m '" + data + "/stories260K.bin' --tokenizer '" + data +
                         "/tok512.model' -n 256 --temp 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, test::read_file(data + "/expected/stories260K_t0_n256_noprompt.txt"));
  r = test::run_cli("generate -m '" + hf_dir(data, 60000) + "' --tokenizer '" + data +
                    "/tok512.model' -p 'Once upon a time' -n 196 --temp 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, test::read_file(data + "/expected/stories260K_t0_n200_once_upon_a_time.txt"));
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// BF16 and F16 checkpoints of the same weights load (F16 is widened at load,
// BF16 used in place) and give logits close to the F32 ones.
TEST(Stories260KDtypes, HalfPrecisionDirectoriesAgreeWithF32) {
  STRATA_REQUIRE_SHARED_DATA(data);
  Checkpoint ck = load_checkpoint(data + "/stories260K.bin");
  auto ref_model = Model::from_weights(ck.config, ck.weights);
  auto tok = Tokenizer::load(data + "/tok512.model");
  std::vector<int32_t> ids = tok->encode("Once upon a time, there was a little girl", true);
  std::vector<float> ref, got;
  SeqInput in{ids};
  ref_model->forward({&in, 1}, Logits::All, ref);
  for (DType dt : {DType::F16, DType::BF16}) {
    NamedTensors t;
    for (auto& [name, w] : ref_model->named_tensors()) t.emplace_back(name, w.to(dt));
    std::string dir = test::make_temp_dir(std::string(dtype_name(dt)));
    save_hf_checkpoint(dir, ck.config, t);
    auto m = Model::load(dir);
    for (const auto& p : m->param_info())
      EXPECT_EQ(p.dtype, dt == DType::F16 || p.shape.size() == 1 ? DType::F32 : DType::BF16) << p.name;
    m->forward({&in, 1}, Logits::All, got);
    float worst = 0;
    for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(got[i] - ref[i]));
    EXPECT_LT(worst, dt == DType::F16 ? 0.02f : 0.3f) << dtype_name(dt);
  }
}

TEST(Stories260KText, TokenizerConfigAddBosFalseIsHonoured) {
  STRATA_REQUIRE_SHARED_DATA(data);
  std::string dir = test::make_temp_dir("nobos");
  for (const auto& e : std::filesystem::directory_iterator(hf_dir(data, 0)))
    std::filesystem::copy(e.path(), std::filesystem::path(dir) / e.path().filename());
  std::filesystem::copy(data + "/tok512.model", dir + "/tokenizer.model");
  auto r = test::run_cli("logits -m '" + dir + "' -p 'Once upon a time' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"tokens\":[1,403,407,261,378]"), std::string::npos) << r.out;
  test::write_file(dir + "/tokenizer_config.json", "{\"add_bos_token\": false}");
  r = test::run_cli("logits -m '" + dir + "' -p 'Once upon a time' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"tokens\":[403,407,261,378]"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace strata
