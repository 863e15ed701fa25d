// The state contract at model level (snapshot, restore, refusal across
// configurations, sizes by kind) and inputs as segments (token ids and
// caller-given rows in one sequence: equal to the tokens bitwise, decode after
// a mixed prefill, steps of embedding rows, gradients of embedding segments).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/rng.h"
#include "model/layers.h"
#include "model/recipes.h"
#include "model/reference_model.h"
#include "strata/model.h"
#include "test_util.h"

namespace strata {
namespace {

using test::error_of;

std::vector<int32_t> ids_of(int64_t n, uint64_t seed, int64_t vocab) {
  Rng r(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<int32_t>(r.next() % static_cast<uint64_t>(vocab));
  return v;
}

// The embedding rows of `ids` (an F32 model's table).
std::vector<float> rows_of(const Model& m, const std::vector<int32_t>& ids) {
  const int64_t D = m.config().hidden_size;
  const Tensor e = m.named_tensors().front().second;
  std::vector<float> r;
  for (int32_t id : ids) r.insert(r.end(), e.f32() + id * D, e.f32() + (id + 1) * D);
  return r;
}

// Configs with every kind of decode state: KV caches, rings, conv windows,
// running sums, and a global (recomputing) one.
std::vector<std::pair<std::string, Config>> stateful_configs() {
  std::vector<std::pair<std::string, Config>> r;
  r.emplace_back("llama", preset_config("tiny"));
  Config swa = preset_config("tiny");
  set_layers(swa, "custom", {{sublayer("attention", {{"window", 5}}), sublayer("mlp")}});
  r.emplace_back("swa", swa);
  r.emplace_back("modified", preset_config("tiny-modified"));
  ModifiedRecipe g;
  g.ctx_mode = "global";
  g.ada_rank = 8;
  g.se_reduction = 4;
  r.emplace_back("global", with_modified_layers(preset_config("tiny"), g));
  return r;
}

// Five greedy steps from a state.
std::vector<float> continue_from(Model& m, State& st, int32_t first) {
  std::vector<float> all, logits;
  State* sp = &st;
  int32_t next = first;
  for (int i = 0; i < 5; ++i) {
    m.step({&next, 1}, {&sp, 1}, logits);
    all.insert(all.end(), logits.begin(), logits.end());
    next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  return all;
}

TEST(StateContract, SnapshotAndRestoreRollASequenceBackForEveryStateKind) {
  for (auto& [name, c] : stateful_configs()) {
    c.initializer_range = 0.2;
    auto m = Model::random(c, 5, DType::F32);
    const auto prompt = ids_of(9, 6, c.vocab_size);
    auto st = m->new_state();
    SeqInput in{prompt, st.get()};
    std::vector<float> logits;
    m->forward({&in, 1}, Logits::Last, logits);
    auto snap = st->clone();
    const auto a = continue_from(*m, *st, 3);
    EXPECT_EQ(st->n_past(), 14) << name;
    st->restore(*snap);  // back to the prompt
    EXPECT_EQ(st->n_past(), 9) << name;
    EXPECT_EQ(continue_from(*m, *st, 3), a) << name;
    // The snapshot itself is untouched and can continue too.
    EXPECT_EQ(continue_from(*m, *snap, 3), a) << name;
    EXPECT_GT(st->bytes(), 0) << name;
  }
}

TEST(StateContract, SizesByKindFollowTheModules) {
  auto m = Model::random(preset_config("tiny-modified"), 1, DType::F32);
  auto st = m->new_state();
  const auto prompt = ids_of(20, 2, 512);
  SeqInput in{prompt, st.get()};
  std::vector<float> logits;
  m->forward({&in, 1}, Logits::Last, logits);
  const auto kinds = st->bytes_by_kind();
  for (const char* k : {"kv-cache", "conv-window", "running-sum"}) EXPECT_TRUE(kinds.count(k)) << k;
  int64_t sum = 0;
  for (const auto& [k, n] : kinds) sum += n;
  EXPECT_EQ(sum, st->bytes());
  // Running sums and conv windows do not grow with the sequence; caches do.
  SeqInput more{prompt, st.get()};
  m->forward({&more, 1}, Logits::Last, logits);
  EXPECT_EQ(st->bytes_by_kind().at("running-sum"), kinds.at("running-sum"));
  EXPECT_EQ(st->bytes_by_kind().at("conv-window"), kinds.at("conv-window"));
}

TEST(StateContract, AStateOfAnotherConfigurationIsRefused) {
  auto llama = Model::random(preset_config("tiny"), 1, DType::F32);
  Config other_cfg = preset_config("tiny");
  set_module_option(other_cfg.layers, "attention", "window", int64_t{8});
  auto other = Model::random(other_cfg, 1, DType::F32);
  auto a = llama->new_state(), b = other->new_state();
  const std::string msg = error_of([&] { a->restore(*b); });
  EXPECT_NE(msg.find("another configuration"), std::string::npos) << msg;
  EXPECT_NE(msg.find("window=8"), std::string::npos) << msg;  // both configurations are named
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  // Handing a model the state of another is refused before anything runs.
  const auto ids = ids_of(4, 3, 512);
  SeqInput in{ids, b.get()};
  std::vector<float> logits;
  EXPECT_NE(error_of([&] { llama->forward({&in, 1}, Logits::Last, logits); }).find("another configuration"),
            std::string::npos);
  // The same configuration with other weights shares states; a BF16 model
  // keeps its KV cache in BF16, so its states are another shape.
  auto other_weights = Model::random(preset_config("tiny"), 2, DType::F32);
  EXPECT_EQ(error_of([&] { a->restore(*other_weights->new_state()); }), "<no error>");
  auto bf16 = Model::random(preset_config("tiny"), 2, DType::BF16);
  const std::string half = error_of([&] { a->restore(*bf16->new_state()); });
  EXPECT_NE(half.find("window 0, BF16) into one of shape (k 32, v 32, window 0, F32)"), std::string::npos) << half;
}

// A segment of the embeddings of some tokens equals those tokens, bitwise,
// wherever it sits: [BOS] [rows of a] [tokens b] == [BOS a b].
TEST(Segments, EmbeddingRowsOfTokensEqualTheTokensBitwise) {
  for (const char* preset : {"tiny", "tiny-modified"}) {
    auto m = Model::random(preset_config(preset), 7, DType::F32);
    const int64_t V = m->config().vocab_size;
    const auto a = ids_of(6, 8, V), b = ids_of(5, 9, V);
    std::vector<int32_t> all = {1};
    all.insert(all.end(), a.begin(), a.end());
    all.insert(all.end(), b.begin(), b.end());
    const int32_t bos = 1;
    const auto emb = rows_of(*m, a);
    SeqInput mixed{{Segment::of_tokens({&bos, 1}), Segment::of_embeds(emb.data(), 6), Segment::of_tokens(b)}};
    SeqInput plain{all};
    std::vector<float> lm, lp;
    m->forward({&mixed, 1}, Logits::All, lm);
    m->forward({&plain, 1}, Logits::All, lp);
    ASSERT_EQ(lm.size(), lp.size());
    EXPECT_EQ(0, std::memcmp(lm.data(), lp.data(), lm.size() * sizeof(float))) << preset;
  }
}

// Decoding after a mixed prefill (in two chunks, with a state) equals one full
// forward of the same segments; a step may itself be an embedding row.
TEST(Segments, DecodeAfterAMixedPrefillEqualsTheFullForward) {
  for (const char* preset : {"tiny", "tiny-modified"}) {
    Config c = preset_config(preset);
    c.initializer_range = 0.2;
    auto m = Model::random(c, 10, DType::F32);
    const int64_t V = c.vocab_size, D = c.hidden_size;
    Rng rng(11);
    std::vector<float> soft(8 * D), last_row(D);  // rows no token has
    for (float& v : soft) v = static_cast<float>(rng.normal() * 0.5);
    for (float& v : last_row) v = static_cast<float>(rng.normal() * 0.5);
    const int32_t bos = 1;
    const auto q = ids_of(5, 12, V), tail = ids_of(4, 13, V);
    std::vector<Segment> segs = {Segment::of_tokens({&bos, 1}), Segment::of_embeds(soft.data(), 8),
                                 Segment::of_tokens(q), Segment::of_tokens(tail), Segment::of_embeds(last_row.data(), 1)};
    SeqInput whole{segs};
    std::vector<float> full;
    m->forward({&whole, 1}, Logits::All, full);
    // Prefill [BOS, soft[0:3]] then [soft[3:8], q], then step through tail and the last row.
    auto st = m->new_state();
    std::vector<float> l;
    SeqInput p1{{Segment::of_tokens({&bos, 1}), Segment::of_embeds(soft.data(), 3)}, st.get()};
    SeqInput p2{{Segment::of_embeds(soft.data() + 3 * D, 5), Segment::of_tokens(q)}, st.get()};
    m->forward({&p1, 1}, Logits::Last, l);
    m->forward({&p2, 1}, Logits::Last, l);
    int64_t pos = 1 + 8 + 5 - 1;
    ASSERT_EQ(l, std::vector<float>(full.begin() + pos * V, full.begin() + (pos + 1) * V)) << preset;
    State* sp = st.get();
    for (int32_t t : tail) {
      m->step({&t, 1}, {&sp, 1}, l);
      ++pos;
      ASSERT_EQ(l, std::vector<float>(full.begin() + pos * V, full.begin() + (pos + 1) * V)) << preset;
    }
    SeqInput row{{Segment::of_embeds(last_row.data(), 1)}, st.get()};
    m->step({&row, 1}, l);
    ++pos;
    EXPECT_EQ(l, std::vector<float>(full.begin() + pos * V, full.begin() + (pos + 1) * V)) << preset;
  }
}

TEST(Segments, BadSegmentsAreClearErrors) {
  auto m = Model::random(preset_config("tiny"), 1, DType::F32);
  std::vector<float> logits;
  SeqInput empty{std::vector<Segment>{}};
  EXPECT_NE(error_of([&] { m->forward({&empty, 1}, Logits::Last, logits); }).find("no input"), std::string::npos);
  float row[64] = {};
  SeqInput zero{{Segment::of_embeds(row, 0)}};
  EXPECT_NE(error_of([&] { m->forward({&zero, 1}, Logits::Last, logits); }).find("no rows"), std::string::npos);
  auto st = m->new_state();
  SeqInput two{{Segment::of_embeds(row, 1), Segment::of_embeds(row, 1)}, st.get()};
  EXPECT_NE(error_of([&] { m->step({&two, 1}, logits); }).find("one per step"), std::string::npos);
}

// The gradient of an embedding segment against central differences of the
// double-precision reference, for sequences [tokens][rows][tokens]; the token
// rows' gradient goes into the embedding table as before.
TEST(Segments, EmbeddingSegmentGradientMatchesFiniteDifferences) {
  ModifiedRecipe standard;  // the reference models the modified recipe with standard attention
  standard.attention = "standard";
  standard.ada_rank = 4;
  standard.se_reduction = 4;
  for (const char* preset : {"tiny", "modified"}) {
    const Config c = test::reference_shape(std::string(preset) == "tiny" ? preset_config("tiny")
                                                                         : with_modified_layers(preset_config("tiny"), standard));
    auto m = Model::random(c, 13, DType::F32);
    m->enable_training();
    const int64_t B = 2, T = 7, D = c.hidden_size;
    const auto ids = ids_of(B * T, 14, c.vocab_size), tg = ids_of(B * T, 15, c.vocab_size);
    Rng rng(16);
    std::vector<float> soft(B * 3 * D), d_soft(soft.size(), -7.0f);
    for (float& v : soft) v = static_cast<float>(rng.normal() * 0.5);
    // Sequence b: ids[b*T .. b*T+2), soft rows 3, ids[b*T+5 .. b*T+7).
    std::vector<SeqInput> seqs;
    for (int64_t b = 0; b < B; ++b)
      seqs.push_back({{Segment::of_tokens({ids.data() + b * T, 2}),
                       Segment::of_embeds(soft.data() + b * 3 * D, 3, d_soft.data() + b * 3 * D),
                       Segment::of_tokens({ids.data() + b * T + 5, 2})}});
    m->zero_grads();
    const auto loss = m->train(seqs, tg, 1.0f);
    test::DoubleParams p;
    for (const auto& [name, t] : m->named_tensors()) p[name] = std::vector<double>(t.f32(), t.f32() + t.numel());
    auto rows = [&](const std::vector<double>& s) {
      test::Rows x(B * T * D);
      const std::vector<double>& e = p.at("model.embed_tokens.weight");
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t j = 0; j < D; ++j)
            x[(b * T + t) * D + j] = t >= 2 && t < 5 ? s[(b * 3 + t - 2) * D + j] : e[ids[b * T + t] * D + j];
      return x;
    };
    std::vector<double> sd(soft.begin(), soft.end());
    EXPECT_NEAR(loss.sum / loss.count, test::reference_loss_rows(c, p, rows(sd), tg, B, T), 1e-5) << preset;
    double scale = 1e-3;
    std::vector<double> fd(sd.size());
    for (size_t i = 0; i < sd.size(); ++i) {
      const double h = 1e-5, saved = sd[i];
      sd[i] = saved + h;
      const double up = test::reference_loss_rows(c, p, rows(sd), tg, B, T);
      sd[i] = saved - h;
      const double down = test::reference_loss_rows(c, p, rows(sd), tg, B, T);
      sd[i] = saved;
      fd[i] = (up - down) / (2 * h);
      scale = std::max(scale, std::fabs(fd[i]));
    }
    for (size_t i = 0; i < sd.size(); ++i) EXPECT_NEAR(d_soft[i], fd[i], 2e-4 * scale) << preset << " d_soft[" << i << "]";
  }
}

}  // namespace
}  // namespace strata
