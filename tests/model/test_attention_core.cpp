// The shared attention core: blocked forward and backward against the plain
// per-row references on every ISA, for the standard and the differential
// (strided, interleaved) layouts, continuing sequences and ragged batches;
// prefill == one row at a time bitwise; the same bits for any thread count.
#include <gtest/gtest.h>

#include <cmath>

#include "core/cpu.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/exec.h"
#include "model/modules/attention_core.h"
#include "test_util.h"

namespace strata {
namespace {

using test_error_fn = std::function<void()>;
std::string test_error(const test_error_fn& f) { return test::error_of(f); }

std::vector<float> randn(size_t n, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.normal());
  return v;
}

// Q, K, V, dO buffers for a batch of sequences laid out by `L`, with each
// sequence's keys starting `first` positions before its queries.
struct Problem {
  AttnLayout L;
  std::vector<int64_t> n_q, first;
  std::vector<float> q, k, v, d_out;
  std::vector<size_t> q_at, k_at, o_at;  // where each sequence starts

  Problem(const AttnLayout& layout, std::vector<int64_t> nq, std::vector<int64_t> fst, uint64_t seed)
      : L(layout), n_q(std::move(nq)), first(std::move(fst)) {
    size_t qr = 0, kr = 0;
    for (size_t s = 0; s < n_q.size(); ++s) {
      q_at.push_back(qr * L.q_ld);
      o_at.push_back(qr * L.o_ld);
      k_at.push_back(kr);
      qr += n_q[s];
      kr += first[s] + n_q[s];
    }
    q = randn(qr * L.q_ld, seed);
    d_out = randn(qr * L.o_ld, seed + 1);
    k = randn(kr * L.k_ld, seed + 2);
    v = randn(kr * std::max(L.v_ld, int64_t{1}), seed + 3);
  }
  size_t q_rows() const { return q.size() / L.q_ld; }
  size_t k_rows() const { return k.size() / L.k_ld; }

  std::vector<AttnSeq> seqs(float* out) const {
    std::vector<AttnSeq> r;
    for (size_t s = 0; s < n_q.size(); ++s) {
      AttnSeq a;
      a.q = q.data() + q_at[s];
      a.n_q = n_q[s];
      a.first = first[s];
      a.runs[0] = {0, first[s] + n_q[s], k.data() + k_at[s] * L.k_ld, v.data() + k_at[s] * L.v_ld};
      a.n_runs = 1;
      a.out = out + o_at[s];
      r.push_back(a);
    }
    return r;
  }
  std::vector<AttnSeqGrad> grads(float* dq, float* dk, float* dv) const {
    std::vector<AttnSeqGrad> r;
    for (size_t s = 0; s < n_q.size(); ++s)
      r.push_back({d_out.data() + o_at[s], dq + q_at[s], dk + k_at[s] * L.k_ld, dv + k_at[s] * L.v_ld});
    return r;
  }
};

// Standard GQA: 4 query heads over 2 KV heads of `hd`, heads side by side.
AttnLayout standard(int64_t hd) {
  return {4, 2, hd, hd, 4 * hd, hd, 2 * hd, hd, 2 * hd, hd, 4 * hd, hd};
}
// Differential-like: component 1 of 4 diff heads over 2 groups (q/k sub-heads
// interleaved at stride 2·hd, offset hd), values twice as wide.
AttnLayout interleaved(int64_t hd) {
  return {4, 2, hd, 2 * hd, 8 * hd, 2 * hd, 4 * hd, 2 * hd, 4 * hd, 2 * hd, 8 * hd, 2 * hd};
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float tol, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  float scale = 0;
  for (float x : b) scale = std::max(scale, std::fabs(x));
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol * (1 + scale)) << what << " at " << i;
}

class AttentionCore : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam())) GTEST_SKIP() << "ISA " << isa_name(GetParam()) << " not supported on this CPU: skipping";
    ex_ = std::make_unique<Exec>(GetParam());
  }
  const Exec& ex() const { return *ex_; }
  std::unique_ptr<Exec> ex_;
};

TEST_P(AttentionCore, BlockedForwardAndBackwardMatchReference) {
  for (int64_t hd : {8, 20, 64}) {
    for (bool inter : {false, true}) {
      // Ragged lengths across the query blocks; two sequences continue after earlier positions.
      AttnLayout L = inter ? interleaved(hd) : standard(hd);
      Problem P(L, {37, 1, 70}, {0, 5, 11}, 100 + hd);
      // Component 1 of the interleaved layout: offset the sub-head columns.
      const size_t q_off = inter ? hd : 0, k_off = inter ? hd : 0;
      auto shift = [&](std::vector<AttnSeq> seqs) {
        for (auto& s : seqs) {
          s.q += q_off;
          s.runs[0].k += k_off;
        }
        return seqs;
      };
      std::vector<float> out(P.q_rows() * L.o_ld), ref(out.size());
      attention_forward(ex(), L, shift(P.seqs(out.data())));
      attention_forward_reference(L, shift(P.seqs(ref.data())));
      expect_close(out, ref, 2e-6f, "forward");

      // dk, dv start non-zero: the core adds to them. dq columns are written.
      const auto base_k = randn(P.k_rows() * L.k_ld, 7), base_v = randn(P.k_rows() * L.v_ld, 8);
      std::vector<float> dq(P.q_rows() * L.q_ld, 0.0f), dk = base_k, dv = base_v;
      std::vector<float> dq_ref = dq, dk_ref = dk, dv_ref = dv;
      auto grads = P.grads(dq.data(), dk.data(), dv.data());
      auto grads_ref = P.grads(dq_ref.data(), dk_ref.data(), dv_ref.data());
      for (auto* g : {&grads, &grads_ref})
        for (auto& s : *g) {
          s.dq += q_off;
          s.dk += k_off;
        }
      attention_backward(ex(), L, shift(P.seqs(nullptr)), grads);
      attention_backward_reference(L, shift(P.seqs(nullptr)), grads_ref);
      expect_close(dq, dq_ref, 1e-5f, "dq");
      expect_close(dk, dk_ref, 1e-5f, "dk");
      expect_close(dv, dv_ref, 1e-5f, "dv");
      // Columns of the other component were left alone.
      if (inter) {
        for (size_t r = 0; r < P.k_rows(); ++r)
          for (int64_t i = 0; i < hd; ++i) ASSERT_EQ(dk[r * L.k_ld + i], base_k[r * L.k_ld + i]);
      }
    }
  }
}

TEST_P(AttentionCore, PrefillEqualsOneRowAtATimeBitwise) {
  AttnLayout L = standard(20);
  Problem P(L, {45}, {0}, 9);
  std::vector<float> whole(P.q_rows() * L.o_ld), rows(whole.size());
  attention_forward(ex(), L, P.seqs(whole.data()));
  for (int64_t i = 0; i < 45; ++i) {
    AttnSeq s = P.seqs(rows.data())[0];
    s.q += i * L.q_ld;
    s.out += i * L.o_ld;
    s.n_q = 1;
    s.first = i;
    attention_forward(ex(), L, {&s, 1});
  }
  for (size_t i = 0; i < whole.size(); ++i) ASSERT_EQ(whole[i], rows[i]) << i;
}

TEST_P(AttentionCore, SlidingWindowMatchesReferenceForwardAndBackward) {
  for (int64_t w : {1, 2, 5, 17, 200}) {
    AttnLayout L = standard(20);
    L.window = w;
    Problem P(L, {37, 1, 70}, {0, 5, 11}, 300 + w);
    std::vector<float> out(P.q_rows() * L.o_ld), ref(out.size());
    attention_forward(ex(), L, P.seqs(out.data()));
    attention_forward_reference(L, P.seqs(ref.data()));
    expect_close(out, ref, 2e-6f, "windowed forward");
    std::vector<float> dq(P.q_rows() * L.q_ld), dk(P.k_rows() * L.k_ld, 0.0f), dv(P.k_rows() * L.v_ld, 0.0f);
    std::vector<float> dq_ref = dq, dk_ref = dk, dv_ref = dv;
    attention_backward(ex(), L, P.seqs(nullptr), P.grads(dq.data(), dk.data(), dv.data()));
    attention_backward_reference(L, P.seqs(nullptr), P.grads(dq_ref.data(), dk_ref.data(), dv_ref.data()));
    expect_close(dq, dq_ref, 1e-5f, "windowed dq");
    expect_close(dk, dk_ref, 1e-5f, "windowed dk");
    expect_close(dv, dv_ref, 1e-5f, "windowed dv");
  }
}

// Spec invariant 5: w >= L is full causal attention (bitwise), and w = 1
// gives every query its own value.
TEST_P(AttentionCore, WindowCoveringTheSequenceIsFullAttentionAndWindowOneCopiesValues) {
  AttnLayout L = standard(16);
  Problem P(L, {40}, {0}, 77);
  std::vector<float> full(P.q_rows() * L.o_ld), wide(full.size()), one(full.size());
  attention_forward(ex(), L, P.seqs(full.data()));
  L.window = 40;
  attention_forward(ex(), L, P.seqs(wide.data()));
  EXPECT_EQ(full, wide);
  L.window = 1;
  attention_forward(ex(), L, P.seqs(one.data()));
  for (int64_t i = 0; i < 40; ++i)
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t d = 0; d < 16; ++d)
        ASSERT_FLOAT_EQ(one[i * L.o_ld + h * 16 + d], P.v[i * L.v_ld + (h / 2) * 16 + d]);
}

// Keys split into runs (a ring buffer's wrap, then the call's new rows) give
// the bits of one contiguous run.
TEST_P(AttentionCore, KeysInRunsGiveTheBitsOfOneRun) {
  for (int64_t w : {0, 7}) {
    AttnLayout L = standard(20);
    L.window = w;
    Problem P(L, {30}, {25}, 91);
    std::vector<float> one(P.q_rows() * L.o_ld), split(one.size());
    attention_forward(ex(), L, P.seqs(one.data()));
    AttnSeq s = P.seqs(split.data())[0];
    const KvRun all = s.runs[0];
    const int64_t cut1 = 19, cut2 = 25;  // [0, 19), [19, 25), [25, 55)
    s.runs[0] = {0, cut1, all.k, all.v};
    s.runs[1] = {cut1, cut2 - cut1, all.k + cut1 * L.k_ld, all.v + cut1 * L.v_ld};
    s.runs[2] = {cut2, all.n - cut2, all.k + cut2 * L.k_ld, all.v + cut2 * L.v_ld};
    s.n_runs = 3;
    attention_forward(ex(), L, {&s, 1});
    EXPECT_EQ(one, split) << "window " << w;
  }
}

// A BF16 cache's runs (widened block by block, past one widening block of
// 128 rows here) give the bits of F32 runs holding the same rounded values,
// in the blocked kernel and in the reference, for both head layouts.
TEST_P(AttentionCore, Bf16RunsGiveTheBitsOfTheirF32Values) {
  for (const AttnLayout& base : {standard(16), interleaved(8)})
    for (int64_t w : {0, 150}) {
      AttnLayout L = base;
      L.window = w;
      Problem P(L, {5}, {300}, 17);
      for (float& x : P.k) x = bf16_to_f32(f32_to_bf16(x));
      for (float& x : P.v) x = bf16_to_f32(f32_to_bf16(x));
      std::vector<uint16_t> kb(P.k.size()), vb(P.v.size());
      for (size_t i = 0; i < kb.size(); ++i) kb[i] = f32_to_bf16(P.k[i]);
      for (size_t i = 0; i < vb.size(); ++i) vb[i] = f32_to_bf16(P.v[i]);
      std::vector<float> want(P.q_rows() * L.o_ld), got(want.size()), ref(want.size()), ref_half(want.size());
      attention_forward(ex(), L, P.seqs(want.data()));
      attention_forward_reference(L, P.seqs(ref.data()));
      // Cached rows [0, 300) in BF16, the call's own rows [300, 305) in F32.
      for (std::vector<float>* out : {&got, &ref_half}) {
        AttnSeq s = P.seqs(out->data())[0];
        const KvRun all = s.runs[0];
        s.runs[0] = {0, 300, nullptr, nullptr, kb.data(), vb.data()};
        s.runs[1] = {300, 5, all.k + 300 * L.k_ld, all.v + 300 * L.v_ld};
        s.n_runs = 2;
        if (out == &got) attention_forward(ex(), L, {&s, 1});
        else attention_forward_reference(L, {&s, 1});
      }
      EXPECT_EQ(want, got) << "window " << w;
      EXPECT_EQ(ref, ref_half) << "window " << w;
    }
}

INSTANTIATE_TEST_SUITE_P(Isa, AttentionCore, ::testing::ValuesIn(kAllIsas),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

TEST(AttentionCoreThreads, BackwardGivesTheSameBitsForAnyThreadCount) {
  AttnLayout L = standard(48);
  Problem P(L, {64, 33, 100}, {0, 0, 0}, 21);
  std::vector<float> dq[2], dk[2], dv[2];
  const int saved = num_threads();
  for (int t = 0; t < 2; ++t) {
    set_num_threads(t + 1);
    dq[t].assign(P.q_rows() * L.q_ld, 0.0f);
    dk[t].assign(P.k_rows() * L.k_ld, 0.0f);
    dv[t].assign(P.k_rows() * L.v_ld, 0.0f);
    attention_backward(Exec::defaults(), L, P.seqs(nullptr), P.grads(dq[t].data(), dk[t].data(), dv[t].data()));
  }
  set_num_threads(saved);
  EXPECT_EQ(dq[0], dq[1]);
  EXPECT_EQ(dk[0], dk[1]);
  EXPECT_EQ(dv[0], dv[1]);
}

TEST(AttentionCoreRope, InverseRotationUndoesTheRotation) {
  Config c = llama_config(64, 32, 64, 1, 4, 2, 64, false);
  auto rope = RopeTable::get(c);
  auto x = randn(5 * 40, 3), y = x;
  std::vector<int64_t> pos = {0, 3, 17, 40, 63};
  const kernels::Table& kt = Exec::defaults().kernels();
  rope->rotate(kt, y.data(), 5, 40, 5, pos.data());  // 5 heads of 8 per row
  EXPECT_NE(x, y);
  for (int64_t i = 0; i < 40; ++i) EXPECT_EQ(x[i], y[i]);  // position 0 is the identity
  rope->rotate(kt, y.data(), 5, 40, 5, pos.data(), /*inverse=*/true);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], y[i], 1e-5f);
}

TEST(AttentionCoreCache, AppendGrowsAndClonesKeepTheRows) {
  KvCache c;
  c.k_width = 3;
  c.v_width = 5;
  for (int i = 0; i < 200; ++i) {
    std::vector<float> k(3, static_cast<float>(i)), v(5, static_cast<float>(-i));
    c.append(k.data(), v.data(), 1);
  }
  auto copy = c.clone();
  const auto& d = state_cast<KvCache>(copy.get(), "test");
  ASSERT_EQ(d.len, 200);
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(d.k[i * 3 + 2], static_cast<float>(i));
    EXPECT_EQ(d.v[i * 5 + 4], static_cast<float>(-i));
  }
}

TEST(AttentionCoreCache, RingKeepsTheLastWindowPositionsAndRefusesOtherShapes) {
  KvCache c;
  c.k_width = 2;
  c.v_width = 1;
  c.window = 4;
  std::vector<float> k, v;
  for (int i = 0; i < 11; ++i) k.insert(k.end(), {float(i), float(i) + 0.5f}), v.push_back(float(-i));
  c.append(k.data(), v.data(), 3);      // positions 0..2
  c.append(k.data() + 6, v.data() + 3, 8);  // positions 3..10: only 7..10 stay
  EXPECT_EQ(c.len, 11);
  EXPECT_EQ(c.k.size(), 8u);  // window x k_width, whatever the length
  for (int p = 7; p < 11; ++p) {
    EXPECT_EQ(c.k[(p % 4) * 2], float(p));
    EXPECT_EQ(c.v[p % 4], float(-p));
  }
  KvCache other = c;
  other.window = 5;
  EXPECT_NE(test_error([&] { c.copy_from(other); }).find("window 5"), std::string::npos);
  // A BF16 ring: the same positions in half the bytes, exported as F32.
  KvCache h;
  h.k_width = 2, h.v_width = 1, h.window = 4, h.dtype = DType::BF16;
  h.append(k.data(), v.data(), 3);
  h.append(k.data() + 6, v.data() + 3, 8);
  EXPECT_TRUE(h.k.empty());
  EXPECT_EQ(h.kb.size(), 8u);
  EXPECT_LT(h.bytes(), c.bytes());
  const auto ex = h.export_tensors();
  for (int p = 7; p < 11; ++p) {
    EXPECT_EQ(ex[0].second.f32()[(p - 7) * 2 + 1], bf16_to_f32(f32_to_bf16(float(p) + 0.5f)));
    EXPECT_EQ(ex[1].second.f32()[p - 7], float(-p));
  }
  EXPECT_NE(test_error([&] { c.copy_from(h); }).find("BF16"), std::string::npos);
}

}  // namespace
}  // namespace strata
