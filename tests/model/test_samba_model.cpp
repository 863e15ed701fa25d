// Samba-family models (docs/samba.md; spec §10 invariants 9-11): parameter
// counts of the presets, decode-state sizes, decode with Mamba states and SWA
// rings == full forward for L of several windows, chunked prefill == one
// forward, snapshot/restore, batch == alone, and the mamba_init statistics.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>

#include "core/cpu.h"
#include "core/rng.h"
#include "model/stack.h"
#include "strata/model.h"
#include "test_util.h"

namespace strata {
namespace {

std::vector<int32_t> ids_of(int64_t n, uint64_t seed, int64_t vocab) {
  Rng r(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<int32_t>(r.next() % static_cast<uint64_t>(vocab));
  return v;
}

TEST(SambaPresets, ParameterCountsMatchTheSpec) {
  EXPECT_EQ(count_params(preset_config("samba-421m")).total, 421793280);  // tied
  EXPECT_EQ(count_params(preset_config("llama-438m")).total, 438081024);  // untied
  EXPECT_EQ(count_params(preset_config("llama-438m-swa")).total, 438081024);
  // §1.5 formulas: Mamba 2dE + E k + E + E(R+2N) + RE + E + EN + E + Ed, MLP 3 d d_p,
  // attention d (H + 2 H_kv) h_d + d², a norm d per sub-layer, the embedding once when tied.
  auto mamba = [](int64_t d) {
    const int64_t E = 2 * d, N = 16, R = (d + 15) / 16, k = 4;
    return 2 * d * E + E * k + E + E * (R + 2 * N) + R * E + E + E * N + E + E * d;
  };
  const int64_t d = 1536;
  EXPECT_EQ(mamba(d), 14914560);
  EXPECT_EQ(count_params(preset_config("mamba-432m")).total, 60 * (mamba(1024) + 1024) + 32000 * 1024 + 1024);
  EXPECT_EQ(count_params(preset_config("mamba-swa-mlp-400m")).total,
            8 * (mamba(d) + (d * 36 * 128 + d * d) + 3 * d * 4096 + 3 * d) + 32000 * d + d);
  EXPECT_EQ(count_params(preset_config("mlp2-swa-mlp-417m")).total, 421793280 - 6 * (mamba(d) - 6 * d * d));
  EXPECT_EQ(count_params(preset_config("samba-421m-nope")).total, 421793280);
  const int64_t samba13 = count_params(preset_config("samba-1.3b")).total;
  EXPECT_NEAR(samba13 / 1e9, 1.330, 0.005);
  EXPECT_NEAR(count_params(preset_config("samba-1.7b")).total / 1e9, 1.74, 0.01);
  EXPECT_NEAR(count_params(preset_config("samba-3.8b")).total / 1e9, 3.86, 0.01);
  // GQA ablations raise d_p to 4608 (Table 6).
  for (const char* p : {"samba-421m-gqa2", "samba-421m-mqa6", "samba-421m-mqa", "samba-421m-gqa4"})
    EXPECT_EQ(preset_config(p).intermediate_size, 4608) << p;
}

TEST(SambaPresets, LayerLayoutAndDecodeStateSizes) {
  const Config c = preset_config("samba-421m");
  EXPECT_EQ(c.num_hidden_layers, 12);  // 24 paper layers = 12 blocks of (mixer + MLP)
  Stack s = build_stack(c);
  ASSERT_EQ(s.blocks.size(), 24u);
  for (size_t i = 0; i < 12; ++i)  // block i's mixer: Mamba for even i
    EXPECT_EQ(s.blocks[2 * i]->mixer->kind(), i % 2 == 0 ? "mamba" : "attention") << i;
  int64_t mamba_bytes = 0, swa_bytes = 0;
  for (const StateUse& u : state_use(s)) {
    if (u.kind == "mamba") mamba_bytes = u.each.at(1 << 20);
    if (u.kind == "attention") swa_bytes = u.each.at(1 << 20);
    EXPECT_GT(u.each.max_tokens + (u.each.bytes_per_token == 0 ? 1 : 0), 0) << u.kind << " grows without bound";
  }
  EXPECT_EQ(mamba_bytes, 58368 * 4 + 8);     // 19 E values (spec §2.4)
  EXPECT_EQ(swa_bytes, 6291456 * 4);         // 2 w H_kv h_d values (spec §3.4)
  // A BF16 model keeps its rings in BF16; the scan state stays F32.
  Config half = c;
  half.torch_dtype = "bfloat16";
  for (const StateUse& u : state_use(build_stack(half))) {
    if (u.kind == "mamba") EXPECT_EQ(u.each.at(1 << 20), 58368 * 4 + 8);
    if (u.kind == "attention") EXPECT_EQ(u.each.at(1 << 20), 6291456 * 2);
  }
}

// Every recipe in F32 and in BF16 (BF16 matrices, BF16 KV rings).
class TinyHybrid : public ::testing::TestWithParam<std::tuple<std::string, DType>> {
 protected:
  void SetUp() override {
    Config c = preset_config(std::get<0>(GetParam()));
    c.torch_dtype = std::get<1>(GetParam()) == DType::BF16 ? "bfloat16" : "float32";
    model_ = Model::random(c, 5, std::get<1>(GetParam()));
    V_ = c.vocab_size;
  }
  // The BF16 products round prefill activations to BF16 (BF16 weights, 16
  // rows or more), so there rows agree to BF16 precision; elsewhere bit for bit.
  // decode: rows of a decode step against the full forward; mixers with a
  // chunked form (GLA, RetNet) prefill in it and decode in the recurrent
  // form, so there they agree to F32 rounding.
  void expect_rows(const float* a, const float* b, int64_t n, const std::string& what, bool decode = false) {
    if (std::get<1>(GetParam()) == DType::BF16 && isa_has_bf16_products(model_->exec().isa())) {
      STRATA_EXPECT_BF16_CLOSE(a, b, n, what);
      return;
    }
    if (decode && std::get<0>(GetParam()).find("sliding-") != std::string::npos) {
      EXPECT_LE(test::relative_error(a, b, n), 1e-5) << what;
      return;
    }
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a[i], b[i]) << what << " at " << i;
  }
  std::unique_ptr<Model> model_;
  int64_t V_ = 0;
};

// L = 3w + 5 with w = 16: the rings wrap several times.
TEST_P(TinyHybrid, DecodeWithStatesEqualsFullForward) {
  const auto ids = ids_of(53, 1, V_);
  std::vector<float> full, l;
  SeqInput in{ids};
  model_->forward({&in, 1}, Logits::All, full);
  for (int64_t prefill : {1, 2, 17, 40}) {
    auto st = model_->new_state();
    SeqInput p{std::span<const int32_t>(ids).first(static_cast<size_t>(prefill)), st.get()};
    model_->forward({&p, 1}, Logits::All, l);
    expect_rows(l.data(), full.data(), prefill * V_, "prefill " + std::to_string(prefill), true);
    for (int64_t t = prefill; t < 53; ++t) {
      State* s = st.get();
      model_->step({&ids[t], 1}, {&s, 1}, l);
      expect_rows(l.data(), full.data() + t * V_, V_, "prefill " + std::to_string(prefill) + " step " + std::to_string(t),
                  true);
    }
    EXPECT_FALSE(model_->length_limited());
  }
}

// A prompt longer than a prefill round runs in rounds with the same bits.
TEST_P(TinyHybrid, ChunkedPrefillEqualsOneForward) {
  const int64_t n = Model::kPrefillChunk + 77;
  const auto ids = ids_of(n, 2, V_);
  std::vector<float> full, chunked;
  SeqInput in{ids};
  model_->forward({&in, 1}, Logits::All, full);
  auto st = model_->new_state();
  SeqInput p{ids, st.get()};
  model_->forward({&p, 1}, Logits::All, chunked);
  ASSERT_EQ(chunked.size(), full.size());
  for (size_t i = 0; i < full.size(); ++i) ASSERT_EQ(chunked[i], full[i]) << "row " << i / V_;
  EXPECT_EQ(st->n_past(), n);
}

TEST_P(TinyHybrid, SnapshotThenRestoreEqualsContinuing) {
  const auto ids = ids_of(40, 3, V_);
  auto st = model_->new_state();
  std::vector<float> a, b;
  SeqInput p{std::span<const int32_t>(ids).first(20), st.get()};
  model_->forward({&p, 1}, Logits::None, a);
  auto snap = st->clone();
  SeqInput rest{std::span<const int32_t>(ids).subspan(20), st.get()};
  model_->forward({&rest, 1}, Logits::All, a);
  st->restore(*snap);
  model_->forward({&rest, 1}, Logits::All, b);
  ASSERT_EQ(a, b);
  const int64_t before = st->bytes();
  SeqInput more{ids, st.get()};
  model_->forward({&more, 1}, Logits::None, b);
  EXPECT_EQ(st->bytes(), before) << "the state grew with the sequence";
}

TEST_P(TinyHybrid, BatchEqualsEachAlone) {
  const std::vector<std::vector<int32_t>> seqs = {ids_of(30, 4, V_), ids_of(3, 5, V_), ids_of(21, 6, V_)};
  std::vector<SeqInput> ins;
  for (const auto& s : seqs) ins.emplace_back(s);
  std::vector<float> all, one;
  model_->forward(ins, Logits::Last, all);
  for (size_t s = 0; s < seqs.size(); ++s) {
    model_->forward({&ins[s], 1}, Logits::Last, one);
    expect_rows(all.data() + s * V_, one.data(), V_, "sequence " + std::to_string(s));
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, TinyHybrid,
                         ::testing::Combine(::testing::Values("tiny-samba", "tiny-mamba", "tiny-mamba-mlp",
                                                              "tiny-mamba-swa-mlp", "tiny-llama-swa", "tiny-mlp2-swa-mlp",
                                                              "tiny-sliding-gla", "tiny-sliding-retnet"),
                                            ::testing::Values(DType::F32, DType::BF16)),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param);
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n + (std::get<1>(info.param) == DType::BF16 ? "_bf16" : "_f32");
                         });

// Invariant 11 on a model the size of the 421M (12 blocks) but narrow:
// residual outputs U(±1/sqrt(fan_in)) / sqrt(2 · 12), embedding N(0, 0.02²), tied.
TEST(SambaInit, MambaInitStatistics) {
  Config c = preset_config("samba-421m");
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_attention_heads = c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.vocab_size = 1000;
  c.bos_token_id = 1;
  auto m = Model::random(c, 7, DType::F32);
  EXPECT_TRUE(c.tie_word_embeddings);
  auto std_of = [](const Tensor& t) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < t.numel(); ++i) s += t.f32()[i], s2 += double(t.f32()[i]) * t.f32()[i];
    const double n = static_cast<double>(t.numel());
    return std::sqrt(s2 / n - (s / n) * (s / n));
  };
  int checked = 0;
  for (const auto& [name, t] : m->named_tensors()) {
    const bool residual = name.ends_with("out_proj.weight") || name.ends_with("down_proj.weight") ||
                          name.ends_with("o_proj.weight");
    if (name == "model.embed_tokens.weight") {
      EXPECT_NEAR(std_of(t), 0.02, 0.001);
      ++checked;
    } else if (residual) {
      const double want = (1.0 / std::sqrt(3.0 * static_cast<double>(t.shape[1]))) / std::sqrt(2.0 * 12);
      EXPECT_NEAR(std_of(t), want, 0.05 * want) << name;
      ++checked;
    } else if (name.ends_with("in_proj.weight") || name.ends_with("q_proj.weight")) {
      const double want = 1.0 / std::sqrt(3.0 * static_cast<double>(t.shape[1]));
      EXPECT_NEAR(std_of(t), want, 0.05 * want) << name;
    }
  }
  EXPECT_EQ(checked, 1 + 24);
}

}  // namespace
}  // namespace strata
