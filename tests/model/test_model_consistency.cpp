// Paths that must agree exactly: batched vs alone, one prefill vs several,
// decode steps vs full forward, cloned states, input embeddings vs ids, thread
// counts. Random tiny models, so these run without any data files.
#include <gtest/gtest.h>

#include "core/cpu.h"
#include "core/parallel.h"
#include "core/rng.h"
#include <cmath>
#include <cstring>
#include "strata/error.h"
#include "strata/model.h"
#include "test_util.h"

namespace strata {
namespace {

std::vector<int32_t> random_ids(int64_t n, uint64_t seed, int64_t vocab) {
  Rng r(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<int32_t>(r.next() % static_cast<uint64_t>(vocab));
  return v;
}

class Consistency : public ::testing::TestWithParam<std::tuple<DType, Isa>> {
 protected:
  void SetUp() override {
    if (!isa_supported(std::get<1>(GetParam()))) GTEST_SKIP() << "ISA not supported on this CPU";
    saved_ = active_isa();
    set_active_isa(std::get<1>(GetParam()));
    Config c = preset_config("tiny");
    c.initializer_range = 0.2;  // larger weights: differences would show
    model_ = Model::random(c, 3, std::get<0>(GetParam()));
    V_ = c.vocab_size;
  }
  void TearDown() override { set_active_isa(saved_); }
  // The BF16 products (AVX512-BF16, AMX) round prefill activations to BF16
  // (BF16 weights only), so there the paths agree to BF16 precision;
  // everywhere else they agree bit for bit.
  bool approximate() const {
    return isa_has_bf16_products(std::get<1>(GetParam())) && std::get<0>(GetParam()) == DType::BF16;
  }
  void expect_same(const float* a, const float* b, int64_t n, const std::string& what) {
    if (approximate()) {
      STRATA_EXPECT_BF16_CLOSE(a, b, n, what);
      return;
    }
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a[i], b[i]) << what << " at " << i;
  }
  std::vector<float> last_logits(const std::vector<int32_t>& ids) {
    std::vector<float> l;
    SeqInput in{ids};
    model_->forward({&in, 1}, Logits::Last, l);
    return l;
  }
  Isa saved_ = Isa::Scalar;
  std::unique_ptr<Model> model_;
  int64_t V_ = 0;
};

TEST_P(Consistency, BatchOfThreeEqualsEachAlone) {
  std::vector<std::vector<int32_t>> seqs = {random_ids(7, 1, V_), random_ids(1, 2, V_), random_ids(12, 3, V_)};
  std::vector<std::unique_ptr<State>> st;
  std::vector<SeqInput> in;
  for (auto& s : seqs) {
    st.push_back(model_->new_state());
    in.emplace_back(s, st.back().get());
  }
  std::vector<float> batched;
  model_->forward(in, Logits::Last, batched);
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto alone = last_logits(seqs[i]);
    expect_same(batched.data() + i * V_, alone.data(), V_, "sequence " + std::to_string(i));
  }
  // Then decode all three together for a few steps and compare with each alone.
  std::vector<State*> sp = {st[0].get(), st[1].get(), st[2].get()};
  for (int step = 0; step < 4; ++step) {
    std::vector<int32_t> next = {int32_t(step + 5), int32_t(step + 9), int32_t(step + 11)};
    model_->step(next, sp, batched);
    for (size_t i = 0; i < seqs.size(); ++i) {
      seqs[i].push_back(next[i]);
      auto alone = last_logits(seqs[i]);
      expect_same(batched.data() + i * V_, alone.data(), V_, "step " + std::to_string(step));
    }
  }
}

TEST_P(Consistency, SeveralPrefillsEqualOne) {
  auto ids = random_ids(20, 4, V_);
  auto whole = last_logits(ids);
  auto st = model_->new_state();
  std::vector<float> l;
  for (auto [b, e] : {std::pair{0, 3}, std::pair{3, 4}, std::pair{4, 13}, std::pair{13, 20}}) {
    SeqInput in{std::span<const int32_t>(ids.data() + b, e - b), st.get()};
    model_->forward({&in, 1}, Logits::Last, l);
  }
  EXPECT_EQ(st->n_past(), 20);
  expect_same(l.data(), whole.data(), V_, "chunked prefill");
}

TEST_P(Consistency, DecodeStepsEqualFullForwardAtEveryPosition) {
  auto ids = random_ids(16, 5, V_);
  std::vector<float> all;
  SeqInput in{ids};
  model_->forward({&in, 1}, Logits::All, all);
  auto st = model_->new_state();
  State* sp = st.get();
  std::vector<float> l;
  for (size_t t = 0; t < ids.size(); ++t) {
    model_->step({&ids[t], 1}, {&sp, 1}, l);
    expect_same(l.data(), all.data() + t * V_, V_, "position " + std::to_string(t));
  }
}

TEST_P(Consistency, ClonedStateContinuesIdentically) {
  auto ids = random_ids(9, 6, V_);
  auto st = model_->new_state();
  std::vector<float> a, b;
  SeqInput in{ids, st.get()};
  model_->forward({&in, 1}, Logits::Last, a);
  auto copy = st->clone();
  State* s1 = st.get();
  State* s2 = copy.get();
  const int32_t tok = 17;
  model_->step({&tok, 1}, {&s1, 1}, a);
  model_->step({&tok, 1}, {&s2, 1}, b);
  EXPECT_EQ(a, b);
  EXPECT_EQ(copy->n_past(), 10);
}

TEST_P(Consistency, ThreadCountDoesNotChangeResults) {
  auto ids = random_ids(33, 7, V_);
  set_num_threads(1);
  auto one = last_logits(ids);
  set_num_threads(2);
  auto two = last_logits(ids);
  set_num_threads(0);
  EXPECT_EQ(one, two);  // bitwise on every path, AMX included
}

TEST_P(Consistency, InputEmbeddingsEqualTokenIds) {
  auto ids = random_ids(6, 8, V_);
  const int64_t D = model_->config().hidden_size;
  const Tensor table = model_->named_tensors().front().second;
  std::vector<float> emb(ids.size() * D);
  for (size_t i = 0; i < ids.size(); ++i) to_f32(table.dtype, static_cast<const char*>(table.data) + ids[i] * D * dtype_size(table.dtype), &emb[i * D], D);
  std::vector<float> l;
  SeqInput in{{Segment::of_embeds(emb.data(), static_cast<int64_t>(ids.size()))}};
  model_->forward({&in, 1}, Logits::Last, l);
  EXPECT_EQ(l, last_logits(ids));
}

// max_position_embeddings is the training length, not a cap: running past
// it works (RoPE positions are computed beyond the table) and equals the
// same rows decoded step by step; a bad token id is still an error.
TEST_P(Consistency, RunsPastTheTrainingLength) {
  const int64_t ctx = model_->config().max_position_embeddings;
  auto ids = random_ids(ctx + 5, 9, V_);
  std::vector<float> full, step;
  SeqInput in{ids};
  model_->forward({&in, 1}, Logits::All, full);
  auto st = model_->new_state();
  SeqInput prefix{std::span<const int32_t>(ids).first(static_cast<size_t>(ctx - 2)), st.get()};
  model_->forward({&prefix, 1}, Logits::None, step);
  for (int64_t p = ctx - 2; p < ctx + 5; ++p) {
    State* s = st.get();
    model_->step({&ids[p], 1}, {&s, 1}, step);
    if (approximate()) {
      STRATA_EXPECT_BF16_CLOSE(step.data(), full.data() + p * V_, V_, "position " + std::to_string(p));
      continue;
    }
    for (int64_t v = 0; v < V_; ++v)
      ASSERT_NEAR(step[v], full[p * V_ + v], 1e-4f * (1 + std::fabs(full[p * V_ + v]))) << "position " << p;
  }
  const int32_t bad = static_cast<int32_t>(V_);
  SeqInput in2{{&bad, 1}};
  EXPECT_THROW(model_->forward({&in2, 1}, Logits::Last, full), Error);
}

INSTANTIATE_TEST_SUITE_P(All, Consistency,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                                            ::testing::ValuesIn(kAllIsas)),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_" +
                                  std::string(isa_name(std::get<1>(info.param)));
                         });

TEST(ModelInfo, TinyLlamaParameterCount) {
  // Building the full model would allocate 4 GB; count from the declarations instead.
  Config c = preset_config("tinyllama-1.1b");
  const int64_t per_layer = 2 * c.hidden_size + c.hidden_size * (c.q_dim() + 2 * c.kv_dim()) +
                            c.q_dim() * c.hidden_size + 3 * c.hidden_size * c.intermediate_size;
  EXPECT_EQ(per_layer, 44044288);
  EXPECT_EQ(2 * c.vocab_size * c.hidden_size + c.num_hidden_layers * per_layer + c.hidden_size, 1100048384);
}

TEST(ModelInfo, RandomModelCountsMatchDeclarations) {
  Config c = preset_config("tiny");
  auto m = Model::random(c, 1, DType::F32);
  int64_t total = 0;
  for (const auto& [g, n] : m->param_counts().by_group) total += n;
  EXPECT_EQ(total, m->num_params());
  auto a = Model::random(c, 1, DType::F32), b = Model::random(c, 2, DType::F32);
  EXPECT_NE(0, std::memcmp(a->named_tensors()[0].second.data, b->named_tensors()[0].second.data, 16));
}

}  // namespace
}  // namespace strata
