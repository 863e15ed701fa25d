#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "model/checkpoint.h"
#include "strata/error.h"
#include "test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using test::error_of;

Tensor random_tensor(Shape shape, uint32_t seed, DType dt = DType::F32) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Tensor t = Tensor::alloc(DType::F32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = nd(rng);
  return t.to(dt);
}

// All tensors of a (tiny) Llama model in HF naming.
NamedTensors model_tensors(const Config& c) {
  NamedTensors ts;
  uint32_t seed = 1;
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  ts.emplace_back("model.embed_tokens.weight", random_tensor({c.vocab_size, D}, seed++, DType::BF16));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ts.emplace_back(p + "input_layernorm.weight", random_tensor({D}, seed++));
    ts.emplace_back(p + "self_attn.q_proj.weight", random_tensor({c.q_dim(), D}, seed++));
    ts.emplace_back(p + "self_attn.k_proj.weight", random_tensor({c.kv_dim(), D}, seed++));
    ts.emplace_back(p + "self_attn.v_proj.weight", random_tensor({c.kv_dim(), D}, seed++));
    ts.emplace_back(p + "self_attn.o_proj.weight", random_tensor({D, c.q_dim()}, seed++));
    ts.emplace_back(p + "post_attention_layernorm.weight", random_tensor({D}, seed++));
    ts.emplace_back(p + "mlp.gate_proj.weight", random_tensor({F, D}, seed++, DType::F16));
    ts.emplace_back(p + "mlp.up_proj.weight", random_tensor({F, D}, seed++));
    ts.emplace_back(p + "mlp.down_proj.weight", random_tensor({D, F}, seed++));
  }
  ts.emplace_back("model.norm.weight", random_tensor({D}, seed++));
  if (!c.tie_word_embeddings) ts.emplace_back("lm_head.weight", random_tensor({c.vocab_size, D}, seed++));
  return ts;
}

void expect_weights_equal(const WeightSet& ws, const NamedTensors& ts) {
  ASSERT_EQ(ws.tensors.size(), ts.size());
  for (const auto& [name, t] : ts) {
    const Tensor* r = ws.find(name);
    ASSERT_NE(r, nullptr) << name;
    EXPECT_EQ(r->dtype, t.dtype) << name;
    EXPECT_EQ(r->shape, t.shape) << name;
    EXPECT_EQ(std::memcmp(r->data, t.data, t.nbytes()), 0) << name;
  }
}

TEST(Checkpoint, SaveLoadSingleFile) {
  const std::string dir = test::make_temp_dir("ck-single") + "/model";
  Config c = preset_config("tiny");
  NamedTensors ts = model_tensors(c);
  save_hf_checkpoint(dir, c, ts);
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));

  Checkpoint ck = load_checkpoint(dir);
  EXPECT_EQ(ck.format, "hf");
  EXPECT_EQ(ck.config.to_json_text(), c.to_json_text());
  EXPECT_EQ(ck.tokenizer_path, "");
  EXPECT_TRUE(ck.add_bos);
  expect_weights_equal(ck.weights, ts);

  // The .safetensors file itself also loads, with config.json beside it.
  Checkpoint ck2 = load_checkpoint(dir + "/model.safetensors");
  expect_weights_equal(ck2.weights, ts);
}

TEST(Checkpoint, SaveLoadSharded) {
  const std::string dir = test::make_temp_dir("ck-shard");
  Config c = preset_config("tiny");
  NamedTensors ts = model_tensors(c);
  save_hf_checkpoint(dir, c, ts, 40000);  // embeddings alone are 64 KiB: at least one oversized shard
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  json idx = json::parse(test::read_file(dir + "/model.safetensors.index.json"));
  int64_t total = 0;
  for (const auto& [n, t] : ts) total += static_cast<int64_t>(t.nbytes());
  EXPECT_EQ(idx["metadata"]["total_size"], total);
  std::set<std::string> files;
  for (auto& [name, f] : idx["weight_map"].items()) files.insert(f.get<std::string>());
  ASSERT_GT(files.size(), 2u);
  const std::string last = "-of-" + std::string(5 - std::to_string(files.size()).size(), '0') +
                           std::to_string(files.size()) + ".safetensors";
  EXPECT_EQ(*files.begin(), "model-00001" + last);
  for (const std::string& f : files) EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;

  Checkpoint ck = load_checkpoint(dir);
  expect_weights_equal(ck.weights, ts);
  EXPECT_EQ(ck.weights.source_of("model.embed_tokens.weight"), dir + "/model-00001" + last);

  // Saving unsharded into the same directory removes the index and the old shards.
  save_hf_checkpoint(dir, c, ts);
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));
  for (const std::string& f : files) EXPECT_FALSE(fs::exists(dir + "/" + f)) << f;
  expect_weights_equal(load_checkpoint(dir).weights, ts);
}

TEST(Checkpoint, MissingFilesAreNamed) {
  const std::string dir = test::make_temp_dir("ck-missing");
  EXPECT_EQ(error_of([&] { load_checkpoint(dir); }), dir + ": no config.json");
  test::write_file(dir + "/config.json", preset_config("tiny").to_json_text());
  EXPECT_EQ(error_of([&] { load_checkpoint(dir); }), dir + ": no model.safetensors or model.safetensors.index.json");
  EXPECT_NE(error_of([&] { load_checkpoint(dir + "/nope"); }).find(dir + "/nope"), std::string::npos);
  // A bad config.json is reported with its path and field.
  json bad = json::parse(preset_config("tiny").to_json_text());
  bad["vocab_size"] = -1;
  test::write_file(dir + "/config.json", bad.dump());
  EXPECT_NE(error_of([&] { load_checkpoint(dir); }).find(dir + "/config.json: field 'vocab_size'"), std::string::npos);
}

TEST(Checkpoint, IndexErrors) {
  const std::string dir = test::make_temp_dir("ck-index");
  Config c = preset_config("tiny");
  NamedTensors ts = model_tensors(c);
  save_hf_checkpoint(dir, c, ts, 40000);
  const std::string index_path = dir + "/model.safetensors.index.json";
  const json good = json::parse(test::read_file(index_path));
  auto with = [&](const std::function<void(json&)>& edit) {
    json j = good;
    edit(j);
    test::write_file(index_path, j.dump());
    return error_of([&] { load_checkpoint(dir); });
  };
  std::string msg = with([](json& j) { j["weight_map"]["model.norm.weight"] = "model-00099-of-00099.safetensors"; });
  EXPECT_NE(msg.find("tensor 'model.norm.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  msg = with([](json& j) { j["weight_map"]["model.norm.weight"] = "../escape.safetensors"; });
  EXPECT_NE(msg.find("escapes"), std::string::npos) << msg;
  msg = with([](json& j) { j["weight_map"]["model.norm.weight"] = "/etc/passwd"; });
  EXPECT_NE(msg.find("escapes"), std::string::npos) << msg;
  // Listed in the wrong (existing) shard.
  msg = with([](json& j) {
    j["weight_map"]["model.norm.weight"] =
        "model-00001" + j["weight_map"]["model.norm.weight"].get<std::string>().substr(11);
  });
  EXPECT_NE(msg.find("tensor 'model.norm.weight' not found in shard 'model-00001"), std::string::npos) << msg;
  msg = with([](json& j) { j["weight_map"]["not.a.tensor"] = j["weight_map"]["model.norm.weight"]; });
  EXPECT_NE(msg.find("tensor 'not.a.tensor' not found"), std::string::npos) << msg;
  msg = with([](json& j) { j.erase("weight_map"); });
  EXPECT_NE(msg.find("weight_map"), std::string::npos) << msg;
  test::write_file(index_path, "{not json");
  msg = error_of([&] { load_checkpoint(dir); });
  EXPECT_EQ(msg.rfind(index_path + ": invalid JSON", 0), 0u) << msg;
}

TEST(Checkpoint, TokenizerFilesBeside) {
  const std::string dir = test::make_temp_dir("ck-tok");
  Config c = preset_config("tiny");
  save_hf_checkpoint(dir, c, model_tensors(c));
  test::write_file(dir + "/tokenizer.model", "x");
  test::write_file(dir + "/tokenizer_config.json", R"({"add_bos_token": false, "add_eos_token": false})");
  Checkpoint ck = load_checkpoint(dir);
  EXPECT_EQ(ck.tokenizer_path, dir + "/tokenizer.model");
  EXPECT_FALSE(ck.add_bos);
  test::write_file(dir + "/tokenizer_config.json", R"({"add_bos_token": true})");
  EXPECT_TRUE(load_checkpoint(dir).add_bos);
  test::write_file(dir + "/tokenizer_config.json", "{oops");
  std::string msg = error_of([&] { load_checkpoint(dir); });
  EXPECT_EQ(msg.rfind(dir + "/tokenizer_config.json: invalid JSON", 0), 0u) << msg;
  test::write_file(dir + "/tokenizer_config.json", R"({"add_bos_token": "yes"})");
  msg = error_of([&] { load_checkpoint(dir); });
  EXPECT_NE(msg.find("field 'add_bos_token'"), std::string::npos) << msg;
}

TEST(Checkpoint, PermutationRoundTripAndFormula) {
  const int64_t H = 4, d = 8, in = 5;
  Tensor w = random_tensor({H * d, in}, 7);
  Tensor half = permute_interleaved_to_half(w, H);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < d / 2; ++i)
        for (int64_t c = 0; c < in; ++c)
          EXPECT_EQ(half.f32()[(h * d + j * (d / 2) + i) * in + c], w.f32()[(h * d + 2 * i + j) * in + c]);
  Tensor back = permute_half_to_interleaved(half, H);
  EXPECT_EQ(std::memcmp(back.data, w.data, w.nbytes()), 0);
  // Any input dtype; the output is F32.
  Tensor wb = w.to(DType::BF16);
  Tensor hb = permute_interleaved_to_half(wb, H);
  EXPECT_EQ(hb.dtype, DType::F32);
  Tensor hb_ref = permute_interleaved_to_half(wb.to(DType::F32), H);
  EXPECT_EQ(std::memcmp(hb.data, hb_ref.data, hb.nbytes()), 0);
  EXPECT_THROW(permute_interleaved_to_half(random_tensor({30, 2}, 1), 4), Error);  // 4 does not divide 30
  EXPECT_THROW(permute_interleaved_to_half(random_tensor({12, 2}, 1), 4), Error);  // odd head size 3
}

TEST(Checkpoint, PermutationPreservesQKDotProducts) {
  const int64_t H = 4, Hkv = 2, d = 8, D = 16;
  Tensor wq = random_tensor({H * d, D}, 11), wk = random_tensor({Hkv * d, D}, 12), x = random_tensor({D}, 13);
  Tensor pq = permute_interleaved_to_half(wq, H), pk = permute_interleaved_to_half(wk, Hkv);
  auto matvec = [&](const Tensor& w) {
    std::vector<double> y(static_cast<size_t>(w.shape[0]));
    for (int64_t r = 0; r < w.shape[0]; ++r)
      for (int64_t c = 0; c < D; ++c) y[static_cast<size_t>(r)] += double(w.f32()[r * D + c]) * x.f32()[c];
    return y;
  };
  auto q = matvec(wq), k = matvec(wk), q2 = matvec(pq), k2 = matvec(pk);
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / Hkv);  // GQA: query head h reads kv head g
    double a = 0, b = 0;
    for (int64_t i = 0; i < d; ++i) {
      a += q[static_cast<size_t>(h * d + i)] * k[static_cast<size_t>(g * d + i)];
      b += q2[static_cast<size_t>(h * d + i)] * k2[static_cast<size_t>(g * d + i)];
    }
    EXPECT_NEAR(a, b, 1e-9 * (1 + std::abs(a))) << "head " << h;
  }
}

// A synthetic llama2.c legacy file whose float k holds the value k (so offsets can be checked).
std::string llama2c_bytes(std::vector<int32_t> hdr, size_t n_floats) {
  std::string out(reinterpret_cast<const char*>(hdr.data()), hdr.size() * 4);
  for (size_t k = 0; k < n_floats; ++k) {
    const float v = static_cast<float>(k);
    out.append(reinterpret_cast<const char*>(&v), 4);
  }
  return out;
}

TEST(Llama2c, ReadsStories260K) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string path = data + "/stories260K.bin";
  Checkpoint ck = load_checkpoint(path);
  const Config& c = ck.config;
  EXPECT_EQ(ck.format, "llama2c");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.stop_at_bos);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{2});
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(ck.weights.tensors.size(), 1u + 9u * 5u + 1u);  // no lm_head: tied
  EXPECT_EQ(ck.weights.find("lm_head.weight"), nullptr);
  EXPECT_EQ(ck.weights.find("model.embed_tokens.weight")->shape, (Shape{512, 64}));
  EXPECT_EQ(ck.weights.find("model.layers.4.self_attn.q_proj.weight")->shape, (Shape{64, 64}));
  EXPECT_EQ(ck.weights.find("model.layers.4.self_attn.k_proj.weight")->shape, (Shape{32, 64}));
  EXPECT_EQ(ck.weights.find("model.layers.4.self_attn.v_proj.weight")->shape, (Shape{32, 64}));
  EXPECT_EQ(ck.weights.find("model.layers.4.mlp.gate_proj.weight")->shape, (Shape{172, 64}));
  EXPECT_EQ(ck.weights.find("model.layers.4.mlp.down_proj.weight")->shape, (Shape{64, 172}));
  EXPECT_EQ(ck.weights.find("model.norm.weight")->shape, (Shape{64}));
  for (const auto& [name, t] : ck.weights.tensors) EXPECT_EQ(t.dtype, DType::F32) << name;

  // Layer 1 wq in the file, permuted per head, is q_proj; wv is stored as is.
  const std::string bytes = test::read_file(path);
  auto raw = [&](size_t float_offset, Shape shape) {
    Tensor t = Tensor::alloc(DType::F32, shape);
    std::memcpy(t.data, bytes.data() + 28 + 4 * float_offset, t.nbytes());
    return t;
  };
  const size_t emb = 512 * 64, rms = 5 * 64, wq = 5 * 64 * 64, wk = 5 * 64 * 32;
  Tensor q1 = permute_interleaved_to_half(raw(emb + rms + 64 * 64, {64, 64}), 8);
  EXPECT_EQ(std::memcmp(q1.data, ck.weights.find("model.layers.1.self_attn.q_proj.weight")->data, q1.nbytes()), 0);
  Tensor k1 = permute_interleaved_to_half(raw(emb + rms + wq + 32 * 64, {32, 64}), 4);
  EXPECT_EQ(std::memcmp(k1.data, ck.weights.find("model.layers.1.self_attn.k_proj.weight")->data, k1.nbytes()), 0);
  Tensor v1 = raw(emb + rms + wq + wk + 32 * 64, {32, 64});
  EXPECT_EQ(std::memcmp(v1.data, ck.weights.find("model.layers.1.self_attn.v_proj.weight")->data, v1.nbytes()), 0);

  // load_checkpoint routes a .bin here.
  Checkpoint ck2 = load_checkpoint(path);
  EXPECT_EQ(ck2.format, "llama2c");
  EXPECT_FALSE(ck2.tokenizer_path.empty());
}

TEST(Llama2c, TruncatedFileReportsSize) {
  STRATA_REQUIRE_SHARED_DATA(data);
  const std::string bytes = test::read_file(data + "/stories260K.bin");
  const std::string dir = test::make_temp_dir("l2c-trunc");
  for (size_t n : {size_t{10}, size_t{28}, size_t{1000}, bytes.size() - 4}) {
    const std::string path = dir + "/t" + std::to_string(n) + ".bin";
    test::write_file(path, bytes.substr(0, n));
    const std::string msg = error_of([&] { read_llama2c(path); });
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find("size"), std::string::npos) << msg;
  }
  const std::string path = dir + "/long.bin";
  test::write_file(path, bytes + "xxxx");
  EXPECT_NE(error_of([&] { read_llama2c(path); }).find("1056544 bytes"), std::string::npos);
}

TEST(Llama2c, VersionedFileNotSupported) {
  const std::string path = test::make_temp_dir("l2c-ak42") + "/v1.bin";
  test::write_file(path, llama2c_bytes({0x616b3432, 1, 64, 172, 5, 8, 4, 512, 512}, 100));
  const std::string msg = error_of([&] { read_llama2c(path); });
  EXPECT_EQ(msg,
            path + ": llama2.c version-1/2 file (magic 'ak42') is not supported; export it with the legacy format");
}

TEST(Llama2c, CorruptHeaderNamesField) {
  const std::string dir = test::make_temp_dir("l2c-hdr");
  struct Case {
    std::vector<int32_t> hdr;
    const char* field;
  };
  const std::vector<Case> cases = {
      {{0, 16, 1, 2, 1, 10, 4}, "dim"},        {{8, -16, 1, 2, 1, 10, 4}, "hidden_dim"},
      {{8, 16, -5, 2, 1, 10, 4}, "n_layers"},  {{8, 16, 5000, 2, 1, 10, 4}, "n_layers"},
      {{8, 16, 1, 3, 1, 10, 4}, "n_heads"},    {{8, 16, 1, 8, 1, 10, 4}, "n_heads"},  // head size 1 is odd
      {{8, 16, 1, 2, 0, 10, 4}, "n_kv_heads"}, {{8, 16, 1, 4, 3, 10, 4}, "n_kv_heads"},
      {{8, 16, 1, 2, 1, 0, 4}, "vocab_size"},  {{8, 16, 1, 2, 1, 10, 0}, "seq_len"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = dir + "/c" + std::to_string(i) + ".bin";
    test::write_file(path, llama2c_bytes(cases[i].hdr, 1000));
    const std::string msg = error_of([&] { read_llama2c(path); });
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(std::string("'") + cases[i].field + "'"), std::string::npos) << cases[i].field << ": " << msg;
  }
}

TEST(Llama2c, UntiedClassifierComesLast) {
  // dim 8, hidden 16, 2 layers, 2 heads (head size 4), 1 kv head, vocab -10 (separate wcls), seq 4.
  const size_t D = 8, F = 16, L = 2, KV = 4, V = 10, S = 4;
  const size_t weights = V * D + L * D + L * D * D + 2 * L * D * KV + L * D * D + L * D + 3 * L * F * D + D;
  const size_t total = weights + 2 * S * 2 + V * D;
  const std::string path = test::make_temp_dir("l2c-untied") + "/m.bin";
  test::write_file(path, llama2c_bytes({8, 16, 2, 2, 1, -10, 4}, total));
  Checkpoint ck = load_checkpoint(path);
  EXPECT_FALSE(ck.config.tie_word_embeddings);
  EXPECT_EQ(ck.config.vocab_size, 10);
  EXPECT_EQ(ck.config.max_position_embeddings, 4);
  EXPECT_EQ(ck.weights.tensors.size(), 1u + 9u * 2u + 2u);
  const Tensor* lm = ck.weights.find("lm_head.weight");
  ASSERT_NE(lm, nullptr);
  EXPECT_EQ(lm->shape, (Shape{10, 8}));
  EXPECT_EQ(lm->f32()[0], static_cast<float>(weights + 2 * S * 2));  // after both freq_cis tables
  EXPECT_EQ(ck.weights.find("model.norm.weight")->f32()[0], static_cast<float>(weights - D));
  // k_proj of layer 1 (1 kv head of size 4): rows 0,2,1,3 of the interleaved block.
  const float k0 = static_cast<float>(V * D + L * D + L * D * D + D * KV);
  const float* k = ck.weights.find("model.layers.1.self_attn.k_proj.weight")->f32();
  EXPECT_EQ(k[0 * D], k0 + 0 * D);
  EXPECT_EQ(k[1 * D], k0 + 2 * D);
  EXPECT_EQ(k[2 * D], k0 + 1 * D);
  EXPECT_EQ(k[3 * D], k0 + 3 * D);
  EXPECT_EQ(ck.tokenizer_path, "");
}

}  // namespace
}  // namespace strata
