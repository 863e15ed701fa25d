// The hypernetwork of recursive soft prompting and its per-chunk SFT
// (docs/hypernet.md): parameter counts, the identity at init, equivalence
// with single-pass SFT and plain decoding, accumulation, batch invariance,
// finite-difference gradients through the recursion, truncated backprop.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/rng.h"
#include "kernels/exec.h"
#include "model/hypernet.h"
#include "model/stack.h"
#include "strata/generate.h"
#include "strata/model.h"
#include "test_util.h"
#include "train/hypernet_sft.h"

namespace strata {
namespace {

Tensor param(Model& m, const std::string& name) {
  for (auto& [n, t] : m.named_tensors())
    if (n == name) return t;
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

float* grad(Model& m, const std::string& name) {
  for (auto& [n, t] : m.named_grads())
    if (n == name) return t.f32();
  ADD_FAILURE() << "no gradient " << name;
  return nullptr;
}

void fill_random(Tensor t, uint64_t seed, float scale) {
  Rng r(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(r.normal()) * scale;
}

std::vector<int32_t> ids(int64_t n, uint64_t seed, int64_t vocab) {
  Rng r(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = 3 + static_cast<int32_t>(r.next() % static_cast<uint64_t>(vocab - 3));
  return v;
}

// A trainable tiny model with a hypernetwork (8 soft tokens, width 64).
std::unique_ptr<Model> tiny(bool live_out_proj, uint64_t seed = 7) {
  auto m = Model::random(preset_config("tiny-hypernet"), seed, DType::F32);
  m->enable_training();
  if (live_out_proj) fill_random(param(*m, "hypernet.out_proj.weight"), seed + 100, 0.05f);
  return m;
}

std::vector<HyperExample> examples(int64_t V) {
  return {{ids(5, 1, V), ids(7, 2, V)}, {ids(3, 3, V), ids(4, 4, V)}, {ids(6, 5, V), ids(11, 6, V)},
          {ids(2, 7, V), ids(9, 8, V)}};
}

double answer_tokens(const std::vector<HyperExample>& b) {
  double n = 0;
  for (const auto& e : b) n += static_cast<double>(e.answer.size());
  return n;
}

std::vector<double> all_grads(Model& m) {
  std::vector<double> g;
  for (const auto& [name, t] : m.named_grads())
    if (t.data)
      for (int64_t i = 0; i < t.numel(); ++i) g.push_back(t.f32()[i]);
  return g;
}

TEST(Hypernet, ParameterCountAtTinyLlamaWidth) {
  const ParamCounts c = count_params(preset_config("tinyllama-1.1b-hypernet"));
  int64_t hyper = 0;
  for (const auto& [group, n] : c.by_group)
    if (group == "hypernet") hyper = n;
  EXPECT_EQ(hyper, 75769856);
  EXPECT_EQ(c.total, 1100048384 + 75769856);
  // Shapes of one layer (16 heads of 128, SwiGLU 3072).
  for (const DeclaredParam& p : declared_params(preset_config("tinyllama-1.1b-hypernet"))) {
    if (p.decl.name == "hypernet.layers.1.self_attn.k_proj.weight") EXPECT_EQ(p.decl.shape, (Shape{2048, 2048}));
    if (p.decl.name == "hypernet.layers.0.mlp.down_proj.weight") EXPECT_EQ(p.decl.shape, (Shape{2048, 3072}));
    if (p.decl.name == kSoftPromptName) EXPECT_EQ(p.decl.shape, (Shape{128, 2048}));
  }
}

TEST(Hypernet, ZeroOutProjReturnsTheSoftPromptExactly) {
  auto m = tiny(false);
  Hypernet& h = *m->hypernet();
  const int64_t PD = h.soft_tokens() * h.width();
  std::vector<float> s(PD), x(5 * h.width()), out(PD);
  Rng r(3);
  for (auto& v : s) v = static_cast<float>(r.normal());
  for (auto& v : x) v = static_cast<float>(r.normal());
  const Hypernet::Input in{s.data(), x.data(), 5};
  for (bool training : {false, true}) {
    h.forward({&in, 1}, out.data(), m->exec(), training);
    EXPECT_EQ(out, s) << (training ? "training" : "inference");
  }
  // sp0 is drawn like the embeddings (spread initializer_range), not zero.
  double ss = 0;
  for (int64_t i = 0; i < PD; ++i) ss += h.sp0()[i] * h.sp0()[i];
  EXPECT_NEAR(std::sqrt(ss / PD), m->config().initializer_range, 0.2 * m->config().initializer_range);
}

// With out_proj = 0 every S(c) is sp0, so the chunks' losses add up to the
// loss of one pass over [BOS; sp0; q; a] (causality).
TEST(Hypernet, ZeroOutProjChunkLossesEqualSinglePassSft) {
  auto m = tiny(false);
  const int64_t V = m->config().vocab_size, P = m->hypernet()->soft_tokens();
  for (ChunkContext ctx : {ChunkContext::Full}) {
    HyperSftOptions o;
    o.chunk = 4;
    o.context = ctx;
    const auto batch = examples(V);
    const Model::LossSum chunked = hypernet_sft(*m, batch, o, answer_tokens(batch), false);
    double sum = 0;
    int64_t count = 0;
    for (const HyperExample& e : batch) {
      const int32_t bos = m->config().bos_token_id;
      std::vector<int32_t> toks = e.query;
      toks.insert(toks.end(), e.answer.begin(), e.answer.end() - 1);
      SeqInput s{{Segment::of_tokens({&bos, 1}), Segment::of_embeds(m->hypernet()->sp0(), P), Segment::of_tokens(toks)}};
      std::vector<int32_t> tg(static_cast<size_t>(s.size()), -1);
      std::copy(e.answer.begin(), e.answer.end(), tg.end() - static_cast<int64_t>(e.answer.size()));
      const auto r = m->evaluate({&s, 1}, tg);
      sum += r.sum;
      count += r.count;
    }
    EXPECT_EQ(chunked.count, count);
    EXPECT_NEAR(chunked.sum, sum, 1e-5 * sum);
  }
}

// Without a soft prompt (the baseline), full-context chunks add up to
// single-pass SFT on [BOS; q; a]; the recurrent context sees less, so its
// loss differs; no hypernetwork is needed.
TEST(Hypernet, ChunksWithoutSoftPromptAddUpToSinglePassSft) {
  auto m = Model::random(preset_config("tiny"), 4, DType::F32);
  m->enable_training();
  const auto batch = examples(m->config().vocab_size);
  HyperSftOptions o;
  o.chunk = 4;
  o.soft_prompt = false;
  const Model::LossSum chunked = hypernet_sft(*m, batch, o, answer_tokens(batch), true);
  double sum = 0;
  for (const HyperExample& e : batch) {
    const int32_t bos = m->config().bos_token_id;
    std::vector<int32_t> toks = e.query;
    toks.insert(toks.end(), e.answer.begin(), e.answer.end() - 1);
    SeqInput s{{Segment::of_tokens({&bos, 1}), Segment::of_tokens(toks)}};
    std::vector<int32_t> tg(static_cast<size_t>(s.size()), -1);
    std::copy(e.answer.begin(), e.answer.end(), tg.end() - static_cast<int64_t>(e.answer.size()));
    sum += m->evaluate({&s, 1}, tg).sum;
  }
  EXPECT_NEAR(chunked.sum, sum, 1e-5 * sum);
  o.context = ChunkContext::Recurrent;
  const Model::LossSum recurrent = hypernet_sft(*m, batch, o, answer_tokens(batch), false);
  EXPECT_EQ(recurrent.count, chunked.count);
  EXPECT_GT(std::fabs(recurrent.sum - sum), 1e-3 * sum);
  GenerateOptions g;
  g.max_new_tokens = 20;
  g.chunk = 4;
  g.sampler.temperature = 0;
  const auto r = generate_hypernet(*m, batch[0].query, g, ChunkContext::Recurrent, [](int32_t) { return true; }, false);
  EXPECT_EQ(r.prefills, static_cast<int64_t>(r.tokens.size()) / 4 + (r.stop_reason == "length" ? 0 : 1));
}

TEST(Hypernet, ZeroOutProjChunkedGenerationEqualsPlainGreedyDecoding) {
  auto m = Model::random(preset_config("tiny-hypernet"), 9, DType::F32);
  const int64_t P = m->hypernet()->soft_tokens();
  const int32_t bos = m->config().bos_token_id;
  const auto query = ids(6, 11, m->config().vocab_size);
  GenerateOptions opts;
  opts.max_new_tokens = 40;  // several chunks of 16
  opts.sampler.temperature = 0;
  const auto chunked = generate_hypernet(*m, query, opts, ChunkContext::Full, [](int32_t) { return true; });
  // Plain greedy decoding after the fixed prefix [BOS; sp0; q].
  auto st = m->new_state();
  SeqInput in{{Segment::of_tokens({&bos, 1}), Segment::of_embeds(m->hypernet()->sp0(), P), Segment::of_tokens(query)},
              st.get()};
  std::vector<float> logits;
  m->forward({&in, 1}, Logits::Last, logits);
  std::vector<int32_t> plain;
  for (int64_t i = 0; i < static_cast<int64_t>(chunked.tokens.size()); ++i) {
    const int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    plain.push_back(next);
    State* s = st.get();
    m->step({&next, 1}, {&s, 1}, logits);
  }
  EXPECT_EQ(chunked.tokens, plain);
  EXPECT_GE(chunked.prefills, 2);
}

TEST(Hypernet, AccumulatedMicroBatchesEqualOneBatch) {
  auto m = tiny(true);
  const auto batch = examples(m->config().vocab_size);
  const double norm = answer_tokens(batch);
  for (bool stage2 : {false, true}) {
    HyperSftOptions o;
    o.chunk = 4;
    o.embed_grads = stage2;
    m->zero_grads();
    const auto whole = hypernet_sft(*m, batch, o, norm, true);
    const auto g_whole = all_grads(*m);
    m->zero_grads();
    const std::vector<HyperExample> a(batch.begin(), batch.begin() + 1), b(batch.begin() + 1, batch.end());
    const auto la = hypernet_sft(*m, a, o, norm, true);
    const auto lb = hypernet_sft(*m, b, o, norm, true);
    const auto g_parts = all_grads(*m);
    EXPECT_NEAR(la.sum + lb.sum, whole.sum, 1e-5 * whole.sum);
    EXPECT_EQ(la.count + lb.count, whole.count);
    double scale = 0;
    for (double v : g_whole) scale = std::max(scale, std::fabs(v));
    ASSERT_GT(scale, 0);
    for (size_t i = 0; i < g_whole.size(); ++i) ASSERT_NEAR(g_parts[i], g_whole[i], 2e-5 * scale) << "gradient " << i;
  }
}

// An example's soft prompts do not depend on the other members of its call.
TEST(Hypernet, ExampleResultsDoNotDependOnBatchMembers) {
  auto m = tiny(true);
  Hypernet& h = *m->hypernet();
  const int64_t PD = h.soft_tokens() * h.width(), D = h.width();
  std::vector<float> s0(PD), s1(PD), x0(4 * D), x1(9 * D), x2(9 * D);
  Rng r(5);
  for (auto* v : {&s0, &s1, &x0, &x1, &x2})
    for (auto& f : *v) f = static_cast<float>(r.normal());
  std::vector<float> alone(PD), with_a(2 * PD), with_b(2 * PD);
  const Hypernet::Input a{s0.data(), x0.data(), 4};
  h.forward({&a, 1}, alone.data(), m->exec(), false);
  const Hypernet::Input pa[2] = {a, {s1.data(), x1.data(), 9}}, pb[2] = {a, {s1.data(), x2.data(), 9}};
  h.forward(pa, with_a.data(), m->exec(), false);
  h.forward(pb, with_b.data(), m->exec(), false);
  for (int64_t i = 0; i < PD; ++i) {
    ASSERT_NEAR(with_a[i], alone[i], 1e-6f * (1 + std::fabs(alone[i])));
    ASSERT_EQ(with_a[i], with_b[i]);  // the same call shape: only the neighbour's tokens differ
  }
}

// L as a function of one parameter element, in double for the difference quotient.
double loss_at(Model& m, const std::vector<HyperExample>& batch, const HyperSftOptions& o, double norm) {
  const auto r = hypernet_sft(m, batch, o, norm, false);
  return r.sum / norm;
}

// Finite differences through two recursion steps (answers of two chunks):
// the gradient of sp0 and of hypernetwork weights.
TEST(Hypernet, GradientsThroughTheRecursionMatchFiniteDifferences) {
  auto m = tiny(true);
  const int64_t V = m->config().vocab_size;
  const std::vector<HyperExample> batch = {{ids(4, 21, V), ids(7, 22, V)}, {ids(3, 23, V), ids(5, 24, V)}};
  HyperSftOptions o;
  o.chunk = 4;
  const double norm = answer_tokens(batch);
  m->zero_grads();
  hypernet_sft(*m, batch, o, norm, true);
  for (const char* name : {kSoftPromptName, "hypernet.layers.0.self_attn.q_proj.weight",
                           "hypernet.layers.1.mlp.up_proj.weight", "hypernet.out_proj.weight", "hypernet.norm.weight"}) {
    Tensor w = param(*m, name);
    const float* g = grad(*m, name);
    double max_g = 0;
    for (int64_t i = 0; i < w.numel(); ++i) max_g = std::max(max_g, std::fabs(static_cast<double>(g[i])));
    ASSERT_GT(max_g, 0) << name;
    // The 6 largest-gradient elements and 3 others.
    std::vector<int64_t> order(static_cast<size_t>(w.numel()));
    for (int64_t i = 0; i < w.numel(); ++i) order[i] = i;
    std::partial_sort(order.begin(), order.begin() + 6, order.end(),
                      [&](int64_t a, int64_t b) { return std::fabs(g[a]) > std::fabs(g[b]); });
    std::vector<int64_t> picks(order.begin(), order.begin() + 6);
    for (int64_t k = 1; k <= 3; ++k) picks.push_back(w.numel() * k / 4);
    for (int64_t i : picks) {
      const float keep = w.f32()[i], h = 2e-3f;
      w.f32()[i] = keep + h;
      const double up = loss_at(*m, batch, o, norm);
      w.f32()[i] = keep - h;
      const double down = loss_at(*m, batch, o, norm);
      w.f32()[i] = keep;
      const double fd = (up - down) / (2.0 * h);
      EXPECT_NEAR(fd, g[i], 2e-2 * max_g + 1e-5) << name << " element " << i;
    }
  }
}

// Truncated backprop: sp0's gradient is chunk 1's only, i.e. that of the same
// examples cut to their first chunk (with the same normaliser).
TEST(Hypernet, DetachingBetweenChunksLeavesOnlyChunkOnesGradientOnSp0) {
  auto m = tiny(true);
  const int64_t V = m->config().vocab_size, PD = m->hypernet()->soft_tokens() * m->config().hidden_size;
  const std::vector<HyperExample> batch = {{ids(4, 31, V), ids(10, 32, V)}, {ids(5, 33, V), ids(6, 34, V)}};
  std::vector<HyperExample> first = batch;
  for (auto& e : first) e.answer.resize(4);
  HyperSftOptions o;
  o.chunk = 4;
  o.detach_between_chunks = true;
  const double norm = answer_tokens(batch);
  m->zero_grads();
  hypernet_sft(*m, batch, o, norm, true);
  const std::vector<float> detached(grad(*m, kSoftPromptName), grad(*m, kSoftPromptName) + PD);
  m->zero_grads();
  o.detach_between_chunks = false;
  hypernet_sft(*m, first, o, norm, true);
  const std::vector<float> chunk1(grad(*m, kSoftPromptName), grad(*m, kSoftPromptName) + PD);
  m->zero_grads();
  hypernet_sft(*m, batch, o, norm, true);
  const std::vector<float> full(grad(*m, kSoftPromptName), grad(*m, kSoftPromptName) + PD);
  double scale = 0, diff_full = 0;
  for (int64_t i = 0; i < PD; ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(chunk1[i])));
    diff_full = std::max(diff_full, std::fabs(static_cast<double>(full[i] - chunk1[i])));
  }
  for (int64_t i = 0; i < PD; ++i) ASSERT_NEAR(detached[i], chunk1[i], 1e-5 * scale) << i;
  EXPECT_GT(diff_full, 1e-3 * scale) << "without detaching, later chunks reach sp0 too";
}

TEST(Hypernet, BadInputIsRefused) {
  auto m = tiny(false);
  HyperSftOptions o;
  std::vector<HyperExample> empty_answer = {{{5, 6}, {}}};
  EXPECT_NE(test::error_of([&] { hypernet_sft(*m, empty_answer, o, 1, true); }).find("empty answer"), std::string::npos);
  auto plain = Model::random(preset_config("tiny"), 1, DType::F32);
  std::vector<HyperExample> one = {{{5}, {6}}};
  EXPECT_NE(test::error_of([&] { hypernet_sft(*plain, one, o, 1, false); }).find("no hypernetwork"), std::string::npos);
  GenerateOptions g;
  EXPECT_NE(test::error_of([&] { generate_hypernet(*plain, {5}, g, ChunkContext::Full, [](int32_t) { return true; }); })
                .find("no hypernetwork"),
            std::string::npos);
}

}  // namespace
}  // namespace strata
