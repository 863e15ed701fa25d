// Every optimised kernel against the scalar reference, on every ISA this CPU has.
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <vector>

#include "core/cpu.h"
#include "core/rng.h"
#include "kernels/kernels.h"
#include "strata/tensor.h"

namespace strata {
namespace {

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.normal()) * scale;
  return v;
}

std::vector<Isa> simd_isas() {
  std::vector<Isa> r;
  for (Isa i : {Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16, Isa::Amx})
    if (isa_supported(i)) r.push_back(i);
  return r;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float rtol, float atol, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_NEAR(a[i], b[i], atol + rtol * std::fabs(b[i])) << what << " at " << i;
}

class KernelTest : public ::testing::TestWithParam<Isa> {};

TEST_P(KernelTest, MatmulMatchesScalarForAllShapes) {
  const auto& ref = kernels::scalar_table();
  const auto& k = kernels::table(GetParam());
  for (int64_t M : {1, 2, 3, 4, 5, 9}) {
    for (int64_t N : {1, 3, 8, 13}) {
      for (int64_t K : {1, 7, 16, 33, 64, 100}) {
        auto x = randn(M * K, 1 + M), w = randn(N * K, 2 + N);
        std::vector<uint16_t> wb(w.size());
        for (size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
        std::vector<float> y0(M * N), y1(M * N);
        ref.matmul_f32(x.data(), K, M, K, w.data(), K, N, y0.data(), N);
        k.matmul_f32(x.data(), K, M, K, w.data(), K, N, y1.data(), N);
        expect_close(y1, y0, 1e-5f, 1e-5f, "matmul_f32");
        ref.matmul_bf16(x.data(), K, M, K, wb.data(), K, N, y0.data(), N);
        k.matmul_bf16(x.data(), K, M, K, wb.data(), K, N, y1.data(), N);
        expect_close(y1, y0, 1e-5f, 1e-5f, "matmul_bf16");
      }
    }
  }
}

// A row's result must not depend on how many rows are computed with it or
// where the weight rows start: batching and threading never change outputs.
TEST_P(KernelTest, MatmulRowsAreBitwiseIndependentOfBatching) {
  const auto& k = kernels::table(GetParam());
  const int64_t M = 11, N = 19, K = 70;
  auto x = randn(M * K, 5), w = randn(N * K, 6);
  std::vector<float> all(M * N), one(N), part(N);
  k.matmul_f32(x.data(), K, M, K, w.data(), K, N, all.data(), N);
  for (int64_t i = 0; i < M; ++i) {
    k.matmul_f32(x.data() + i * K, K, 1, K, w.data(), K, N, one.data(), N);
    // Weight rows split at an odd boundary, as a thread split might.
    k.matmul_f32(x.data() + i * K, K, 1, K, w.data(), K, 5, part.data(), N);
    k.matmul_f32(x.data() + i * K, K, 1, K, w.data() + 5 * K, K, N - 5, part.data() + 5, N);
    for (int64_t j = 0; j < N; ++j) {
      ASSERT_EQ(all[i * N + j], one[j]) << i << "," << j;
      ASSERT_EQ(part[j], one[j]) << i << "," << j;
    }
  }
}

TEST_P(KernelTest, ElementwiseKernelsMatchScalar) {
  const auto& ref = kernels::scalar_table();
  const auto& k = kernels::table(GetParam());
  for (int64_t n : {1, 5, 8, 16, 17, 64, 100, 2048}) {
    auto x = randn(n, 10 + n, 3.0f), w = randn(n, 20 + n), u = randn(n, 30 + n);
    std::vector<float> a(n), b(n);
    ref.rmsnorm(x.data(), w.data(), a.data(), n, 1e-5f);
    k.rmsnorm(x.data(), w.data(), b.data(), n, 1e-5f);
    expect_close(b, a, 1e-5f, 1e-6f, "rmsnorm");

    a = x, b = x;
    ref.softmax(a.data(), n);
    k.softmax(b.data(), n);
    expect_close(b, a, 1e-5f, 1e-7f, "softmax");

    ref.silu_mul(x.data(), u.data(), a.data(), n);
    k.silu_mul(x.data(), u.data(), b.data(), n);
    expect_close(b, a, 1e-5f, 1e-6f, "silu_mul");
    {
      std::vector<float> d1 = w, d2 = w, dg1(n), dg2(n);
      ref.silu_mul_backward(x.data(), u.data(), d1.data(), dg1.data(), n);
      k.silu_mul_backward(x.data(), u.data(), d2.data(), dg2.data(), n);
      expect_close(d2, d1, 1e-5f, 1e-6f, "silu_mul_backward d(up)");
      expect_close(dg2, dg1, 1e-5f, 1e-6f, "silu_mul_backward d(gate)");
    }

    EXPECT_NEAR(k.dot(x.data(), w.data(), n), ref.dot(x.data(), w.data(), n), 1e-4f * std::sqrt((float)n));

    a = u, b = u;
    ref.axpy(0.7f, x.data(), a.data(), n);
    k.axpy(0.7f, x.data(), b.data(), n);
    expect_close(b, a, 1e-6f, 1e-6f, "axpy");

    std::vector<uint16_t> h(n);
    for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(x[i]);
    ref.bf16_to_f32(h.data(), a.data(), n);
    k.bf16_to_f32(h.data(), b.data(), n);
    EXPECT_EQ(a, b);
  }
}

TEST_P(KernelTest, ReadStreamsSumsEveryValue) {
  const auto& k = kernels::table(GetParam());
  for (int64_t n : {0, 1, 7, 255, 256, 1000, 4099}) {
    std::vector<float> v(static_cast<size_t>(n));
    double exact = 0;
    for (int64_t i = 0; i < n; ++i) exact += (v[i] = static_cast<float>(i % 13) - 6.0f);
    for (int streams : {1, 2, 4, 8}) EXPECT_NEAR(k.read_streams(v.data(), n, streams), exact, 1e-3) << "n " << n;
  }
}

TEST_P(KernelTest, AttentionWeightedSumEqualsRepeatedAxpyBitwise) {
  const auto& k = kernels::table(GetParam());
  for (int64_t dim : {8, 20, 64, 100}) {
    const int64_t rows = 7, keys = 30, ldv = dim + 3;
    auto p = randn(rows * keys, 40 + dim), v = randn(keys * ldv, 50 + dim);
    // Rows of different key ranges: sliding windows start at different keys.
    std::vector<int64_t> b(rows), e(rows);
    for (int64_t r = 0; r < rows; ++r) b[r] = r % 3 * 2, e[r] = 20 + r % 4 * 3;
    std::vector<float> out(rows * dim), ref(rows * dim, 0.0f), sref(rows * dim);
    k.attn_pv(p.data(), keys, rows, b.data(), e.data(), v.data(), ldv, dim, out.data(), dim, false);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = b[r]; t < e[r]; ++t) k.axpy(p[r * keys + t], &v[t * ldv], &ref[r * dim], dim);
    EXPECT_EQ(out, ref) << "dim " << dim;
    kernels::scalar_table().attn_pv(p.data(), keys, rows, b.data(), e.data(), v.data(), ldv, dim, sref.data(), dim,
                                    false);
    expect_close(out, sref, 1e-5f, 1e-5f, "attn_pv");
    // The keys in two runs (e.g. a ring buffer's wrap), the second
    // continuing the first's sums: the same bits as one run.
    const int64_t cut = 11;
    std::vector<int64_t> b1(rows), e1(rows), b2(rows), e2(rows);
    for (int64_t r = 0; r < rows; ++r) {
      b1[r] = std::min(b[r], cut), e1[r] = std::min(e[r], cut);
      b2[r] = std::max(b[r], cut) - cut, e2[r] = std::max(e[r], cut) - cut;
    }
    std::vector<float> split(rows * dim, -1.0f);
    k.attn_pv(p.data(), keys, rows, b1.data(), e1.data(), v.data(), ldv, dim, split.data(), dim, false);
    k.attn_pv(p.data() + cut, keys, rows, b2.data(), e2.data(), v.data() + cut * ldv, ldv, dim, split.data(), dim, true);
    EXPECT_EQ(split, out) << "two runs, dim " << dim;
  }
}

// The BF16 products round activations to BF16: compare with the scalar
// reference fed the same rounded activations.
TEST_P(KernelTest, Bf16MatmulMatchesScalarOnBf16Activations) {
  const auto& k = kernels::table(GetParam());
  if (!k.bf16_matmul) GTEST_SKIP() << "no BF16 products on the " << isa_name(GetParam()) << " path";
  for (int64_t M : {16, 17, 40, 100}) {
    for (int64_t N : {16, 48, 64, 96, 200}) {
      const int64_t K = 96;
      auto x = randn(M * K, 60 + M), w = randn(N * K, 70 + N);
      std::vector<uint16_t> wb(w.size());
      for (size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
      auto xr = x;
      for (auto& v : xr) v = bf16_to_f32(f32_to_bf16(v));
      std::vector<uint16_t> packed(kernels::bf16_packed_x_elems(M, K));
      k.bf16_pack_x(x.data(), M, K, packed.data(), 0, (M + 15) / 16);
      std::vector<float> y(M * N), ref(M * N);
      k.bf16_matmul(packed.data(), M, K, wb.data(), N, y.data(), N);
      kernels::scalar_table().matmul_bf16(xr.data(), K, M, K, wb.data(), K, N, ref.data(), N);
      expect_close(y, ref, 1e-4f, 1e-4f, "bf16_matmul");
    }
  }
}

TEST_P(KernelTest, SoftmaxHandlesExtremeValues) {
  const auto& k = kernels::table(GetParam());
  std::vector<float> v = {1000.0f, -1000.0f, 0.0f, 999.0f, -1e30f, 50.0f, 1000.0f, 3.0f, 2.0f};
  k.softmax(v.data(), static_cast<int64_t>(v.size()));
  float sum = 0;
  for (float p : v) {
    ASSERT_TRUE(std::isfinite(p));
    sum += p;
  }
  EXPECT_NEAR(sum, 1.0f, 1e-6f);
  EXPECT_NEAR(v[0], v[6], 1e-7f);
}

TEST_P(KernelTest, RopeMatchesScalar) {
  const auto& ref = kernels::scalar_table();
  const auto& k = kernels::table(GetParam());
  for (int64_t hd : {4, 8, 32, 64, 128}) {
    const int64_t heads = 3;
    auto x = randn(heads * hd, hd), c = randn(hd / 2, hd + 1), s = randn(hd / 2, hd + 2);
    auto a = x, b = x;
    ref.rope(a.data(), heads, hd, c.data(), s.data());
    k.rope(b.data(), heads, hd, c.data(), s.data());
    expect_close(b, a, 1e-6f, 1e-6f, "rope");
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, KernelTest, ::testing::ValuesIn(simd_isas()),
                         [](const auto& info) { return std::string(isa_name(info.param)); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(KernelTest);

TEST(KernelScalar, RopeRotatesHalfPairs) {
  // Pairs are (i, i + d/2): rotating e_0 by 90 degrees moves it to e_{d/2}.
  std::vector<float> x = {1, 0, 0, 0}, c = {0, 1}, s = {1, 0};
  kernels::scalar_table().rope(x.data(), 1, 4, c.data(), s.data());
  EXPECT_FLOAT_EQ(x[0], 0.0f);
  EXPECT_FLOAT_EQ(x[2], 1.0f);
}

}  // namespace
}  // namespace strata
