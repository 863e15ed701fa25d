// Importing lit-gpt (microsoft/Samba) state dicts and Hugging Face Mamba
// directories: a random tiny model is written under the foreign names (the
// renaming and the grouped QKV fusion are done here, independently of the
// importer), read back, and must give the original's logits bit for bit.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/import_samba.h"
#include "strata/error.h"
#include "strata/model.h"
#include "test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using test::error_of;
using test::run_cli;

const char* const kTinyPresets[] = {"tiny-samba", "tiny-mamba", "tiny-mamba-swa-mlp", "tiny-llama-swa",
                                    "tiny-mlp2-swa-mlp", "tiny-sliding-gla", "tiny-sliding-retnet"};

std::vector<int32_t> probe_ids() {
  std::vector<int32_t> ids;  // longer than the tiny presets' window of 16
  for (int i = 0; i < 40; ++i) ids.push_back(static_cast<int32_t>((i * 37 + 11) % 512));
  return ids;
}

std::vector<float> logits_of(Model& m) {
  const std::vector<int32_t> ids = probe_ids();
  std::vector<SeqInput> seqs{SeqInput(ids)};
  std::vector<float> out;
  m.forward(seqs, Logits::All, out);
  return out;
}

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what << ": logits differ";
}

std::map<std::string, Tensor> tensors_of(const Model& m) {
  std::map<std::string, Tensor> t;
  for (const auto& [n, x] : m.named_tensors()) t[n] = x;
  return t;
}

// q, k, v [rows, d] fused as lit-gpt's attn.weight: per KV group g, the r query
// heads of the group, then k_g, then v_g (h_d rows each).
Tensor fuse_qkv(const Tensor& q, const Tensor& k, const Tensor& v, const Config& c) {
  const int64_t G = c.num_key_value_heads, hd = c.head_dim, r = c.num_attention_heads / G, d = q.dim(1);
  Tensor out = Tensor::alloc(q.dtype, {(c.num_attention_heads + 2 * G) * hd, d});
  const size_t row = static_cast<size_t>(d) * dtype_size(q.dtype);
  char* dst = static_cast<char*>(out.data);
  auto put = [&](const Tensor& t, int64_t first_row, int64_t n) {
    std::memcpy(dst, static_cast<const char*>(t.data) + first_row * row, n * row);
    dst += n * row;
  };
  for (int64_t g = 0; g < G; ++g) {
    put(q, g * r * hd, r * hd);
    put(k, g * hd, hd);
    put(v, g * hd, hd);
  }
  return out;
}

// The model's tensors under lit-gpt's names (spec §1.2, §1.4).
NamedTensors litgpt_tensors(const Config& c, const Model& m) {
  std::map<std::string, Tensor> t = tensors_of(m);
  NamedTensors out;
  auto put = [&](const std::string& to, const std::string& from) { out.emplace_back(to, t.at(from)); };
  auto mamba = [&](const std::string& to, const std::string& from) {
    for (const char* s : {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                          "dt_proj.bias", "A_log", "D", "out_proj.weight"})
      put(to + "." + s, from + "." + s);
  };
  auto mlp = [&](const std::string& to, const std::string& from) {
    put(to + ".swiglu.w1.weight", from + ".gate_proj.weight");
    put(to + ".swiglu.w2.weight", from + ".up_proj.weight");
    put(to + ".swiglu.w3.weight", from + ".down_proj.weight");
  };
  auto attn = [&](const std::string& to, const std::string& from) {
    out.emplace_back(to + ".attn.weight", fuse_qkv(t.at(from + ".q_proj.weight"), t.at(from + ".k_proj.weight"),
                                                   t.at(from + ".v_proj.weight"), c));
    put(to + ".proj.weight", from + ".o_proj.weight");
  };
  // GLA / RetNet keep flash-linear-attention's names in both layouts.
  auto linear_attention = [&](const std::string& kind, const std::string& to, const std::string& from) {
    std::vector<std::string> names = {"q_proj.weight", "k_proj.weight", "v_proj.weight", "g_proj.weight",
                                      "o_proj.weight", "g_norm_swish_gate.weight"};
    if (kind == "gla")
      for (const char* n : {"gk_proj.0.weight", "gk_proj.1.weight", "gk_proj.1.bias"}) names.push_back(n);
    for (const std::string& n : names) put(to + "." + n, from + "." + n);
  };
  auto mixer = [&](const SublayerConf& s, const std::string& to, const std::string& from_layer) {
    if (s.mixer.kind == "mamba") mamba(to, from_layer + "mamba");
    else if (s.mixer.kind == "gla" || s.mixer.kind == "retnet") linear_attention(s.mixer.kind, to, from_layer + s.mixer.kind);
    else if (s.mixer.kind == "attention") attn(to, from_layer + "self_attn");
    else mlp(to, from_layer + "mlp");
  };
  put("transformer.wte.weight", "model.embed_tokens.weight");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerConf& L = c.layers.layer(l);
    const std::string p = "transformer.h." + std::to_string(l) + ".", s = "model.layers." + std::to_string(l) + ".";
    if (L.size() == 1) {  // MBlock
      put(p + "norm.weight", s + "input_layernorm.weight");
      mamba(p + "mixer", s + "mamba");
    } else if (L.size() == 3) {  // Mamba-SWA-MLP
      put(p + "norm_m.weight", s + "input_layernorm.weight");
      mamba(p + "mb", s + "mamba");
      put(p + "norm_attn.weight", s + "post_attention_layernorm.weight");
      attn(p + "attn", s + "self_attn");
      put(p + "norm_2.weight", s + "norm_2.weight");
      mlp(p + "mlp", s + "mlp");
    } else {
      put(p + "norm_1.weight", s + "input_layernorm.weight");
      mixer(L[0], p + "attn", s);
      put(p + "norm_2.weight", s + "post_attention_layernorm.weight");
      mlp(p + "mlp", s + (L[0].mixer.kind == "mlp" ? "mlp_1" : "mlp"));
    }
  }
  put("transformer.ln_f.weight", "model.norm.weight");
  // lit-gpt's state dict keeps the tied head as its own key.
  put("lm_head.weight", c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  return out;
}

std::string write_litgpt(const std::string& dir, const NamedTensors& ts) {
  const std::string path = dir + "/lit_model.safetensors";
  write_safetensors(path, ts);
  return path;
}

NamedTensors without(NamedTensors ts, const std::string& name) {
  std::erase_if(ts, [&](const auto& nt) { return nt.first == name; });
  return ts;
}

TEST(ImportLitGpt, TinyPresetsGiveTheSameLogits) {
  for (const char* preset : kTinyPresets) {
    for (DType dt : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(std::string(preset) + (dt == DType::BF16 ? " bf16" : " f32"));
      const Config cfg = preset_config(preset);
      auto orig = Model::random(cfg, 7, dt);
      const std::string path = write_litgpt(test::make_temp_dir("litgpt"), litgpt_tensors(cfg, *orig));
      Imported im = import_litgpt(path, preset);
      EXPECT_EQ(im.config.layers, cfg.layers);
      EXPECT_EQ(im.config.tie_word_embeddings, cfg.tie_word_embeddings);
      auto back = Model::from_weights(im.config, im.weights);
      expect_same_bits(logits_of(*orig), logits_of(*back), preset);
    }
  }
}

TEST(ImportLitGpt, GroupedQkvNeedsItsGrouping) {
  // With H = 4, H_kv = 2, reading the fused rows as [all q, all k, all v] would
  // give other weights: the split must follow the groups.
  const Config cfg = preset_config("tiny-llama-swa");
  ASSERT_EQ(cfg.num_attention_heads, 4);
  ASSERT_EQ(cfg.num_key_value_heads, 2);
  auto orig = Model::random(cfg, 3, DType::F32);
  Imported im = import_litgpt(write_litgpt(test::make_temp_dir("qkv"), litgpt_tensors(cfg, *orig)), "tiny-llama-swa");
  std::map<std::string, Tensor> want = tensors_of(*orig);
  for (const char* n : {"q_proj", "k_proj", "v_proj"}) {
    const std::string name = std::string("model.layers.1.self_attn.") + n + ".weight";
    const Tensor* got = im.weights.find(name);
    ASSERT_NE(got, nullptr) << name;
    ASSERT_EQ(got->shape, want.at(name).shape) << name;
    EXPECT_EQ(std::memcmp(got->data, want.at(name).data, got->nbytes()), 0) << name;
  }
}

TEST(ImportLitGpt, ConfigNames) {
  for (const auto& [lit, preset] : litgpt_configs()) {
    const Config c = litgpt_config(lit);
    EXPECT_EQ(c.vocab_size % 64, 0) << lit;
    EXPECT_EQ(c.layers, preset_config(preset).layers) << lit;
  }
  for (const char* lit : {"Samba_421M", "Samba_1.3B", "LLaMA_438M", "LLaMA_438M_SWA", "Mamba_430M", "Mamba_1.3B",
                          "Mamba_SWA_MLP_400M", "Samba_421M_abl_mamba", "Samba_421M_nope", "LLaMA_438M_SWA_gla",
                          "LLaMA_1.2B_SWA_gla", "LLaMA_446M_SWA_ret", "LLaMA_1.4B_SWA_ret"})
    EXPECT_EQ(error_of([&] { litgpt_config(lit); }), "<no error>") << lit;
  EXPECT_FALSE(litgpt_config("LLaMA_438M").tie_word_embeddings);
  EXPECT_TRUE(litgpt_config("Mamba_430M").tie_word_embeddings);
  EXPECT_FALSE(litgpt_config("LLaMA_438M_SWA_gla").tie_word_embeddings);  // NeoX init at 438M (spec §1.6)
  EXPECT_TRUE(litgpt_config("LLaMA_1.2B_SWA_gla").tie_word_embeddings);
  const std::string e = error_of([] { litgpt_config("Samba_9B"); });
  EXPECT_NE(e.find("unknown lit-gpt config 'Samba_9B'"), std::string::npos) << e;
  EXPECT_NE(e.find("Samba_421M"), std::string::npos) << e;
}

TEST(ImportLitGpt, Errors) {
  const Config cfg = preset_config("tiny-samba");
  auto m = Model::random(cfg, 5, DType::F32);
  const NamedTensors good = litgpt_tensors(cfg, *m);
  const std::string dir = test::make_temp_dir("litgpt-err");
  auto error_with = [&](const NamedTensors& ts) {
    const std::string path = write_litgpt(dir, ts);
    return error_of([&] { import_litgpt(path, "tiny-samba"); });
  };
  const std::string file = dir + "/lit_model.safetensors";

  std::string e = error_with(without(good, "transformer.h.1.norm_2.weight"));
  EXPECT_NE(e.find(file), std::string::npos) << e;
  EXPECT_NE(e.find("missing tensor 'transformer.h.1.norm_2.weight'"), std::string::npos) << e;

  NamedTensors bad = good;
  for (auto& [n, t] : bad)
    if (n == "transformer.h.1.attn.attn.weight") t = Tensor::alloc(DType::F32, {64, 64});
  e = error_with(bad);
  EXPECT_NE(e.find(file + ": tensor 'transformer.h.1.attn.attn.weight' has shape [64, 64], expected [128, 64]"),
            std::string::npos)
      << e;

  bad = good;
  bad.emplace_back("transformer.h.0.attn.extra", Tensor::alloc(DType::F32, {4}));
  e = error_with(bad);
  EXPECT_NE(e.find(file + ": unexpected tensor 'transformer.h.0.attn.extra'"), std::string::npos) << e;

  bad = without(good, "lm_head.weight");
  EXPECT_EQ(error_with(bad), "<no error>");  // a tied head may be left out
  bad.emplace_back("lm_head.weight", Tensor::alloc(DType::F32, {512, 64}));
  e = error_with(bad);
  EXPECT_NE(e.find("'lm_head.weight' differs from 'transformer.wte.weight'"), std::string::npos) << e;

  // PyTorch pickles are refused, pointing at the converter.
  test::write_file(dir + "/model.pth", std::string("PK\x03\x04", 4) + "rest of a zip");
  e = error_of([&] { import_litgpt(dir + "/model.pth", "tiny-samba"); });
  EXPECT_NE(e.find("scripts/pth_to_safetensors.py"), std::string::npos) << e;
  test::write_file(dir + "/lit_model.bin", std::string("\x80\x02\x8a\x0a", 4) + "legacy pickle");
  e = error_of([&] { import_litgpt(dir + "/lit_model.bin", "tiny-samba"); });
  EXPECT_NE(e.find("PyTorch pickle"), std::string::npos) << e;
  e = error_of([&] { Model::load(dir + "/lit_model.bin"); });
  EXPECT_NE(e.find("scripts/pth_to_safetensors.py"), std::string::npos) << e;
}

// ---- Hugging Face Mamba ----

nlohmann::json hf_mamba_json(const Config& c) {
  return {{"architectures", {"MambaForCausalLM"}},
          {"model_type", "mamba"},
          {"hidden_size", c.hidden_size},
          {"num_hidden_layers", c.num_hidden_layers},
          {"vocab_size", c.vocab_size - 3},  // padded back up to a multiple of 8
          {"pad_vocab_size_multiple", 8},
          {"state_size", 16},
          {"conv_kernel", 4},
          {"expand", 2},
          {"intermediate_size", 2 * c.hidden_size},
          {"time_step_rank", "auto"},
          {"use_conv_bias", true},
          {"use_bias", false},
          {"hidden_act", "silu"},
          {"layer_norm_epsilon", c.rms_norm_eps},
          {"residual_in_fp32", true},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"pad_token_id", 0},
          {"torch_dtype", "float32"}};  // tie_word_embeddings absent: HF ties by default
}

NamedTensors hf_mamba_tensors(const Config& c, const Model& m) {
  std::map<std::string, Tensor> t = tensors_of(m);
  NamedTensors out;
  out.emplace_back("backbone.embeddings.weight", t.at("model.embed_tokens.weight"));
  for (const auto& [name, x] : t) {
    const std::string pre = "model.layers.";
    if (name.rfind(pre, 0) != 0) continue;
    const size_t dot = name.find('.', pre.size());
    const std::string layer = name.substr(pre.size(), dot - pre.size()), rest = name.substr(dot + 1);
    const std::string to = rest == "input_layernorm.weight" ? "norm.weight" : "mixer." + rest.substr(rest.find('.') + 1);
    out.emplace_back("backbone.layers." + layer + "." + to, x);
  }
  out.emplace_back("backbone.norm_f.weight", t.at("model.norm.weight"));
  return out;
}

TEST(ImportHfMamba, DirectoryLoadsAsItIs) {
  const Config cfg = preset_config("tiny-mamba");
  auto orig = Model::random(cfg, 11, DType::F32);
  const std::vector<float> want = logits_of(*orig);
  for (int64_t shard : {int64_t{0}, int64_t{60000}}) {  // one file, then shards with an index
    SCOPED_TRACE(shard ? "sharded" : "single file");
    const std::string dir = test::make_temp_dir("hf-mamba");
    write_hf_files(dir, hf_mamba_json(cfg).dump(2), hf_mamba_tensors(cfg, *orig), shard);
    ASSERT_EQ(fs::exists(dir + "/model.safetensors.index.json"), shard > 0);
    auto back = Model::load(dir);
    EXPECT_EQ(back->config().layers, cfg.layers);
    EXPECT_EQ(back->config().vocab_size, 512);
    EXPECT_TRUE(back->config().tie_word_embeddings);
    EXPECT_EQ(back->config().hidden_size % back->config().num_attention_heads, 0);
    expect_same_bits(want, logits_of(*back), "hf mamba");
  }
}

TEST(ImportHfMamba, Errors) {
  const Config cfg = preset_config("tiny-mamba");
  auto m = Model::random(cfg, 2, DType::F32);
  const std::string dir = test::make_temp_dir("hf-mamba-err");
  auto load_error = [&](const nlohmann::json& config, const NamedTensors& ts) {
    write_hf_files(dir, config.dump(), ts);
    return error_of([&] { Model::load(dir); });
  };
  const NamedTensors good = hf_mamba_tensors(cfg, *m);
  nlohmann::json j = hf_mamba_json(cfg);
  j["use_bias"] = true;
  std::string e = load_error(j, good);
  EXPECT_NE(e.find(dir + "/config.json: field 'use_bias'"), std::string::npos) << e;
  j = hf_mamba_json(cfg);
  j["state_size"] = 100000;
  e = load_error(j, good);
  EXPECT_NE(e.find("field 'state_size'"), std::string::npos) << e;
  j = hf_mamba_json(cfg);
  j["time_step_rank"] = "big";
  EXPECT_NE(load_error(j, good).find("field 'time_step_rank'"), std::string::npos);
  e = load_error(hf_mamba_json(cfg), without(good, "backbone.layers.2.mixer.A_log"));
  EXPECT_NE(e.find("missing tensor 'backbone.layers.2.mixer.A_log'"), std::string::npos) << e;
  j = hf_mamba_json(cfg);
  j["tie_word_embeddings"] = false;  // then lm_head.weight is required
  e = load_error(j, good);
  EXPECT_NE(e.find("missing tensor 'lm_head.weight'"), std::string::npos) << e;

  // Only PyTorch pickles beside the config: refused with the way out.
  const std::string pt = test::make_temp_dir("hf-mamba-bin");
  test::write_file(pt + "/config.json", hf_mamba_json(cfg).dump());
  test::write_file(pt + "/pytorch_model.bin", std::string("PK\x03\x04", 4));
  e = error_of([&] { Model::load(pt); });
  EXPECT_NE(e.find("pytorch_model.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("scripts/pth_to_safetensors.py"), std::string::npos) << e;
}

// ---- the command line ----

TEST(ImportCli, ConvertFromLitGptRoundTrips) {
  const Config cfg = preset_config("tiny-mamba-swa-mlp");
  auto orig = Model::random(cfg, 9, DType::BF16);
  const std::string dir = test::make_temp_dir("cli-litgpt");
  const std::string src = write_litgpt(dir, litgpt_tensors(cfg, *orig));
  auto r = run_cli("convert --from litgpt --samba-config tiny-mamba-swa-mlp -m '" + src + "' -o '" + dir + "/a'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("convert -m '" + dir + "/a' -o '" + dir + "/b' --to hf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto back = Model::load(dir + "/b");
  EXPECT_EQ(back->config().torch_dtype, "bfloat16");
  expect_same_bits(logits_of(*orig), logits_of(*back), "litgpt -> hf -> hf");

  r = run_cli("convert --from litgpt --samba-config Samba_9B -m '" + src + "' -o '" + dir + "/c'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown lit-gpt config 'Samba_9B'"), std::string::npos) << r.err;
  r = run_cli("convert --from litgpt -m '" + src + "' -o '" + dir + "/c'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--from litgpt needs --samba-config"), std::string::npos) << r.err;
  r = run_cli("convert --samba-config Samba_421M -m '" + dir + "/a' -o '" + dir + "/c'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--samba-config applies to --from litgpt only"), std::string::npos) << r.err;
  // A wrong config for the file: the first tensor it lacks, by its lit-gpt name.
  r = run_cli("convert --from litgpt --samba-config tiny-samba -m '" + src + "' -o '" + dir + "/c'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("missing tensor 'transformer.h.0.norm_1.weight'"), std::string::npos) << r.err;
}

TEST(ImportCli, HfMambaDirectoryWorksWithTheCommands) {
  const Config cfg = preset_config("tiny-mamba");
  auto orig = Model::random(cfg, 4, DType::F32);
  const std::string dir = test::make_temp_dir("cli-hf-mamba");
  write_hf_files(dir + "/hf", hf_mamba_json(cfg).dump(2), hf_mamba_tensors(cfg, *orig));
  auto r = run_cli("info -m '" + dir + "/hf' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("hf-mamba"), std::string::npos) << r.out;
  r = run_cli("convert -m '" + dir + "/hf' -o '" + dir + "/out' --to hf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto back = Model::load(dir + "/out");
  expect_same_bits(logits_of(*orig), logits_of(*back), "hf mamba -> strata hf");
}

}  // namespace
}  // namespace strata
