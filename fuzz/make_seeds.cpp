// Writes the seed corpus of every fuzz target into DIR/<target>/: small valid
// inputs written by strata's own writers, and truncations of them
// (scripts/fuzz.sh runs it before fuzzing).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "io/checkpoint.h"
#include "train/token_data.h"
#include "text/spm_proto.h"
#include "train/trainer_state.h"

namespace fs = std::filesystem;
using namespace strata;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// `bytes` as seed `name`, and its truncations at a few lengths.
void seed(const fs::path& dir, const std::string& name, const std::string& bytes, bool truncations = true) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
  if (!truncations) return;
  for (size_t n : {bytes.size() / 2, bytes.size() * 3 / 4, bytes.size() - 1})
    if (n > 0 && n < bytes.size()) std::ofstream(dir / (name + ".cut" + std::to_string(n)), std::ios::binary) << bytes.substr(0, n);
}

Tensor filled(DType dtype, Shape shape) {
  Tensor f = Tensor::alloc(DType::F32, shape);
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
  return dtype == DType::F32 ? f : f.to(dtype);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds DIR\n";
    return 2;
  }
  const fs::path out = argv[1], tmp = out / "tmp";
  fs::create_directories(tmp);
  {  // GGUF: metadata of every kind, tensors of a few types.
    GgufWriter w;
    w.set("general.architecture", GgufValue::str("llama"));
    w.set("llama.block_count", GgufValue::u32(1));
    w.set("llama.rope.freq_base", GgufValue::f32(10000.0f));
    w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
    w.set("tokenizer.ggml.tokens", GgufValue::array(GgufType::String, {GgufValue::str("<s>"), GgufValue::str("a")}));
    w.set("tokenizer.ggml.scores", GgufValue::array(GgufType::F32, {GgufValue::f32(0), GgufValue::f32(-1)}));
    const Tensor a = filled(DType::F32, {2, 8}), b = filled(DType::Q8_0, {2, 32}), c = filled(DType::Q4_K, {1, 256});
    w.add_tensor("a.weight", a);
    w.add_tensor("b.weight", b);
    w.add_tensor("c.weight", c);
    w.write((tmp / "s.gguf").string());
    seed(out / "gguf", "small.gguf", slurp(tmp / "s.gguf"));
  }
  {  // safetensors: F32, BF16 and metadata.
    const Tensor a = filled(DType::F32, {3, 4}), b = filled(DType::BF16, {5});
    write_safetensors((tmp / "s.safetensors").string(), {{"a", a}, {"b", b}}, {{"format", "pt"}});
    seed(out / "safetensors", "small.safetensors", slurp(tmp / "s.safetensors"));
  }
  const char* chat[] = {
      R"({"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})",
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}], "stream": true,
          "stream_options": {"include_usage": true}, "stop": ["x", "y"], "logprobs": true, "top_logprobs": 2})",
      R"({"messages": [{"role": "user", "content": "x"}], "temperature": 0.5, "top_p": 0.9, "seed": 3, "max_tokens": 9,
          "frequency_penalty": 0.1, "presence_penalty": -0.2, "logit_bias": {"5": -100}, "top_k": 4, "min_p": 0.1,
          "repeat_penalty": 1.1, "decoding": "humaneval", "n": 1})"};
  for (int i = 0; i < 3; ++i) seed(out / "chat_request", "chat" + std::to_string(i) + ".json", chat[i], false);
  const char* completion[] = {R"({"prompt": "once", "max_tokens": 4, "logprobs": 2})", R"({"prompt": [1, 2, 3]})",
                              R"({"prompt": ["one"], "stop": "\n", "stream": true})"};
  for (int i = 0; i < 3; ++i) seed(out / "completion_request", "completion" + std::to_string(i) + ".json", completion[i], false);
  seed(out / "sft_record", "messages.json",
       R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})", false);
  seed(out / "sft_record", "prompt.json", R"({"prompt": "q", "completion": "a"})", false);
  {
    TrainerState s;
    s.step = 12;
    s.updates = 11;
    s.total_steps = 100;
    s.recent_losses = {2.5, 2.4};
    RunSettings r;
    r.seed = 1;
    r.seq = 64;
    r.micro_batch = 4;
    r.lr = 1e-3;
    s.run = r;
    seed(out / "trainer_state", "trainer_state.json", s.to_json());
  }
  {  // llama2.c: dim 8, hidden 16, 1 layer, 2 heads, 2 KV heads, vocab 4 (shared head), seq 4.
    const int32_t h[7] = {8, 16, 1, 2, 2, 4, 4};
    const size_t floats = 4 * 8 + 8 + 64 + 64 + 64 + 64 + 8 + 128 + 128 + 128 + 8 + 2 * (4 * 4 / 2);
    std::string bin(reinterpret_cast<const char*>(h), sizeof h);
    for (size_t i = 0; i < floats; ++i) {
      const float v = 0.01f * static_cast<float>(i % 13);
      bin.append(reinterpret_cast<const char*>(&v), 4);
    }
    seed(out / "llama2c", "tiny.bin", bin);
  }
  {  // An HF directory: config.json NUL model.safetensors.index.json.
    const std::string config = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 3, "vocab_size": 2})";
    const std::string index = R"({"metadata": {"total_size": 40}, "weight_map": {"model.embed_tokens.weight":)"
                              R"( "model-00001-of-00002.safetensors", "model.norm.weight": "model-00002-of-00002.safetensors"}})";
    seed(out / "hf_dir", "index", config + std::string(1, '\0') + index, false);
  }
  {  // Token data: meta.json NUL a shard of 5 uint16 tokens.
    write_token_shard((tmp / "train-00000.bin").string(), {1, 7, 9, 2, 3}, 2);
    const std::string meta = R"({"vocab_size": 16, "eos_id": 2, "bos_id": 1, "train_tokens": 5, "val_tokens": 0,)"
                             R"( "shards": [{"file": "train-00000.bin", "split": "train", "tokens": 5}]})";
    seed(out / "token_data", "shard", meta + std::string(1, '\0') + slurp(tmp / "train-00000.bin"));
  }
  {  // tokenizer.json: byte-level BPE over GPT-2's byte symbols, two merges, an added token.
    nlohmann::json vocab = nlohmann::json::object();
    auto symbol = [](int b) {  // GPT-2's printable stand-in for byte b, as UTF-8
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      int cp = b;
      if (!printable) {
        int n = 0;
        for (int x = 0; x < b; ++x)
          if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
        cp = 256 + n;
      }
      std::string u;
      if (cp < 0x80) u += static_cast<char>(cp);
      else {
        u += static_cast<char>(0xC0 | (cp >> 6));
        u += static_cast<char>(0x80 | (cp & 0x3F));
      }
      return u;
    };
    for (int b = 0; b < 256; ++b) vocab[symbol(b)] = b;
    vocab["he"] = 256;
    vocab[symbol(' ') + "w"] = 257;
    const nlohmann::json j = {
        {"version", "1.0"},
        {"added_tokens", {{{"id", 258}, {"content", "<|endoftext|>"}, {"special", true}, {"single_word", false},
                           {"lstrip", false}, {"rstrip", false}, {"normalized", false}}}},
        {"normalizer", nullptr},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
        {"post_processor", nullptr},
        {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
        {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"vocab", vocab},
                   {"merges", {"h e", symbol(' ') + " w"}}}}};
    seed(out / "tokenizer", "tokenizer.json", j.dump(), false);
  }
  {  // tokenizer.model: a SentencePiece BPE model with byte fallback (Llama's kind),
     // written by strata's own ModelProto writer, and its truncations.
    text::SpmVocab v;
    v.byte_fallback = true;
    v.pieces = {{"<unk>", 0, text::PieceType::kUnknown}, {"<s>", 0, text::PieceType::kControl},
                {"</s>", 0, text::PieceType::kControl}};
    char hex[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(hex, sizeof hex, "<0x%02X>", b);
      v.pieces.push_back({hex, 0, text::PieceType::kByte});
    }
    float score = 0;
    for (const char* piece : {"\xe2\x96\x81", "e", "h", "l", "o", "w", "r", "d", "\xe2\x96\x81h", "he", "ll", "\xe2\x96\x81he", "llo"})
      v.pieces.push_back({piece, score -= 1, text::PieceType::kNormal});
    v.pieces.push_back({"<|user|>", 0, text::PieceType::kUserDefined});
    seed(out / "tokenizer", "tokenizer.model", text::serialize_spm(v));
    v.model_type = 1;  // the same pieces as a unigram model
    seed(out / "tokenizer", "unigram.model", text::serialize_spm(v), false);
  }
  fs::remove_all(tmp);
  return 0;
}
