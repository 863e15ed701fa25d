#include "train/hypernet_sft.h"

#include <algorithm>

#include "kernels/exec.h"
#include "model/hypernet.h"
#include "strata/error.h"

namespace strata {
namespace {

// One example's pieces: its chunk count, embedded tokens and soft prompts.
struct Track {
  const HyperExample* ex = nullptr;
  int64_t chunks = 0;
  std::vector<float> query_rows, answer_rows;  // [|q|, D], [|a|, D]
  std::vector<float> soft;                     // S(0) .. S(chunks): [chunks + 1, P, D]
  std::vector<float> d_soft;                   // the model's gradient of each S(c) (backward)
  std::vector<float> grad;                     // the running gradient of the current S
};

// The tokens of call c (0-based) of the recursion: the query, then chunk c.
std::span<const int32_t> call_tokens(const Track& t, int64_t c, int64_t K) {
  if (c == 0) return t.ex->query;
  const int64_t begin = (c - 1) * K, end = std::min<int64_t>(c * K, t.ex->answer.size());
  return std::span<const int32_t>(t.ex->answer).subspan(begin, end - begin);
}

const float* call_rows(const Track& t, int64_t c, int64_t K, int64_t D) {
  return c == 0 ? t.query_rows.data() : t.answer_rows.data() + (c - 1) * K * D;
}

}  // namespace

std::vector<HyperExample> hyper_examples(const std::vector<SftExample>& examples, int32_t bos, int64_t max_query,
                                         int64_t max_answer, int64_t* truncated) {
  std::vector<HyperExample> r;
  int64_t cut = 0;
  for (const SftExample& e : examples) {
    const auto n = static_cast<int64_t>(e.ids.size());
    int64_t end = n;
    while (end > 0 && !e.mask[end - 1]) --end;
    int64_t begin = end;
    while (begin > 0 && e.mask[begin - 1]) --begin;
    if (begin == end) fail(e.source, ": no assistant answer to train on");
    const int64_t q0 = !e.ids.empty() && e.ids[0] == bos ? 1 : 0;
    HyperExample h;
    h.source = e.source;
    h.query.assign(e.ids.begin() + q0, e.ids.begin() + begin);
    h.answer.assign(e.ids.begin() + begin, e.ids.begin() + end);
    if (static_cast<int64_t>(h.query.size()) > max_query)
      fail(e.source, ": the query has ", h.query.size(), " tokens, more than --max-query ", max_query);
    if (static_cast<int64_t>(h.answer.size()) > max_answer) {
      h.answer.resize(static_cast<size_t>(max_answer));
      ++cut;
    }
    r.push_back(std::move(h));
  }
  if (truncated) *truncated = cut;
  return r;
}

Model::LossSum hypernet_sft(Model& model, std::span<const HyperExample> batch, const HyperSftOptions& o,
                            double norm_tokens, bool backward) {
  Hypernet* hyper = o.soft_prompt ? model.hypernet() : nullptr;
  if (o.soft_prompt && !hyper) fail("hypernetwork SFT: the model has no hypernetwork (strata_hypernet in its config)");
  if (o.chunk < 1) fail("hypernetwork SFT: chunk must be at least 1");
  if (backward && !model.training_enabled()) fail("hypernetwork SFT: training is not enabled");
  if (backward && !(norm_tokens > 0)) fail("hypernetwork SFT: the batch has no answer token to normalise by");
  const Exec& ex = model.exec();
  const int64_t P = hyper ? hyper->soft_tokens() : 0, D = model.config().hidden_size, K = o.chunk, PD = P * D;
  const int32_t bos = model.config().bos_token_id;

  std::vector<Track> tracks(batch.size());
  int64_t max_chunks = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    Track& t = tracks[b];
    t.ex = &batch[b];
    if (t.ex->answer.empty())
      fail(t.ex->source.empty() ? cat("hypernetwork SFT: example ", b) : t.ex->source, ": empty answer");
    t.chunks = (static_cast<int64_t>(t.ex->answer.size()) + K - 1) / K;
    max_chunks = std::max(max_chunks, t.chunks);
    t.query_rows.resize(t.ex->query.size() * D);
    t.answer_rows.resize(t.ex->answer.size() * D);
    model.embed_rows(t.ex->query, t.query_rows.data());
    model.embed_rows(t.ex->answer, t.answer_rows.data());
    t.soft.resize(static_cast<size_t>((t.chunks + 1) * PD));
    if (hyper) std::copy(hyper->sp0(), hyper->sp0() + PD, t.soft.begin());
    if (backward) t.d_soft.assign(static_cast<size_t>((t.chunks + 1) * PD), 0.0f);
  }

  // Call c of the recursion for the examples that have a chunk c + 1:
  // S(c + 1) = H(S(c), tokens of call c), packed over those examples.
  std::vector<float> out;
  auto run_call = [&](int64_t c, std::vector<Track*>& members, bool training) {
    members.clear();
    std::vector<Hypernet::Input> in;
    for (Track& t : tracks)
      if (t.chunks >= c + 1) {
        members.push_back(&t);
        in.push_back({t.soft.data() + c * PD, call_rows(t, c, K, D), static_cast<int64_t>(call_tokens(t, c, K).size())});
      }
    out.resize(members.size() * PD);
    hyper->forward(in, out.data(), ex, training);
  };
  std::vector<Track*> members;
  for (int64_t c = 0; hyper && c < max_chunks; ++c) {
    run_call(c, members, backward);
    for (size_t i = 0; i < members.size(); ++i)
      std::copy(out.begin() + i * PD, out.begin() + (i + 1) * PD, members[i]->soft.begin() + (c + 1) * PD);
  }
  // (Training keeps the last call's activations: its backward comes first.)
  if (hyper && !backward) hyper->free_saved();

  // The model on every chunk c, the examples that have one side by side.
  Model::LossSum total;
  std::vector<std::vector<int32_t>> tokens(batch.size());
  for (int64_t c = 1; c <= max_chunks; ++c) {
    std::vector<SeqInput> seqs;
    std::vector<int32_t> targets;
    for (size_t b = 0; b < tracks.size(); ++b) {
      Track& t = tracks[b];
      if (t.chunks < c) continue;
      const auto& a = t.ex->answer;
      const int64_t begin = (c - 1) * K, end = std::min<int64_t>(c * K, a.size());
      std::vector<int32_t>& toks = tokens[b];
      toks.clear();
      if (o.context == ChunkContext::Full) {
        toks.assign(t.ex->query.begin(), t.ex->query.end());
        toks.insert(toks.end(), a.begin(), a.begin() + begin);
      } else if (begin > 0) {
        toks.push_back(a[begin - 1]);
      } else if (!t.ex->query.empty()) {
        toks.push_back(t.ex->query.back());
      }
      toks.insert(toks.end(), a.begin() + begin, a.begin() + end - 1);  // (the chunk's last token predicts nothing)
      SeqInput s;
      s.segments.push_back(Segment::of_tokens({&bos, 1}));
      if (hyper)
        s.segments.push_back(Segment::of_embeds(t.soft.data() + c * PD, P, backward ? t.d_soft.data() + c * PD : nullptr));
      if (!toks.empty()) s.segments.push_back(Segment::of_tokens(toks));
      const int64_t rows = s.size(), n = end - begin;
      for (int64_t r = 0; r < rows; ++r) targets.push_back(r >= rows - n ? a[begin + r - (rows - n)] : -1);
      seqs.push_back(std::move(s));
    }
    int64_t count = 0;
    for (int32_t tg : targets) count += tg >= 0;
    const Model::LossSum r = backward
                                 ? model.train(seqs, targets, static_cast<float>(static_cast<double>(count) / norm_tokens))
                                 : model.evaluate(seqs, targets);
    total.sum += r.sum;
    total.count += r.count;
  }
  if (!backward || !hyper) return total;

  // Backward through the recursion, last call first: the gradient of S(c) is
  // the model's for chunk c plus what flows back from S(c + 1). Each call's
  // forward is run again (the same bits) just before its backward, but the
  // last call's, whose activations the hypernetwork still holds.
  for (Track& t : tracks) t.grad.assign(static_cast<size_t>(PD), 0.0f);
  std::vector<float> g_in, g_out;
  std::vector<std::vector<float>> dx;
  for (int64_t c = max_chunks - 1; c >= 0; --c) {
    if (c < max_chunks - 1) run_call(c, members, true);
    g_out.resize(members.size() * PD);
    g_in.resize(members.size() * PD);
    dx.resize(members.size());
    std::vector<float*> dx_ptrs(members.size(), nullptr);
    for (size_t i = 0; i < members.size(); ++i) {
      Track& t = *members[i];
      const float* d = t.d_soft.data() + (c + 1) * PD;
      for (int64_t j = 0; j < PD; ++j) g_out[i * PD + j] = t.grad[j] + d[j];
      if (o.embed_grads) {
        dx[i].resize(call_tokens(t, c, K).size() * D);
        dx_ptrs[i] = dx[i].data();
      }
    }
    hyper->backward(g_out.data(), g_in.data(), dx_ptrs, ex);
    for (size_t i = 0; i < members.size(); ++i) {
      Track& t = *members[i];
      const bool cut = o.detach_between_chunks && c > 0;
      if (cut) std::fill(t.grad.begin(), t.grad.end(), 0.0f);
      else std::copy(g_in.begin() + i * PD, g_in.begin() + (i + 1) * PD, t.grad.begin());
      if (o.embed_grads) model.add_embed_grad(call_tokens(t, c, K), dx[i].data());
    }
  }
  hyper->free_saved();
  float* dsp0 = hyper->sp0_grad();
  for (const Track& t : tracks)  // every example's S(0) is sp0 (in example order: the same bits for any split)
    for (int64_t j = 0; j < PD; ++j) dsp0[j] += t.grad[j];
  return total;
}

}  // namespace strata
