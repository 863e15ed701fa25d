// The training GEMM (src/kernels/gemm.cpp) against a plain double-precision
// product, on every ISA and with both backends (the own blocked GEMM, oneDNN):
// edge blocks, strided and transposed views, accumulation, prepacked B,
// thread-count independence, and the BF16 AMX path against the product of the
// BF16-rounded operands.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/cpu.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/gemm_onednn.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "strata/tensor.h"

namespace strata {
namespace {

std::vector<float> randn(size_t n, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.normal());
  return v;
}

float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// c = a · b (+ c) in double, a and b read through their views.
std::vector<double> reference(int64_t M, int64_t N, int64_t K, ops::MatRef a, ops::MatRef b,
                              const std::vector<float>& c0, bool accumulate, bool bf16) {
  std::vector<double> c(static_cast<size_t>(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = accumulate ? c0[i * N + j] : 0.0;
      for (int64_t p = 0; p < K; ++p) {
        float x = a.data[i * a.rs + p * a.cs], y = b.data[p * b.rs + j * b.cs];
        if (bf16) x = round_bf16(x), y = round_bf16(y);
        s += static_cast<double>(x) * y;
      }
      c[i * N + j] = s;
    }
  return c;
}

void expect_near(const std::vector<float>& got, const std::vector<double>& want, double rtol, const char* what) {
  double scale = 1e-30;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], rtol * scale) << what << " at " << i;
}

using GemmParam = std::tuple<Isa, ops::GemmBackend>;

class GemmTest : public ::testing::TestWithParam<GemmParam> {
 protected:
  void SetUp() override {
    const auto [isa, backend] = GetParam();
    if (!isa_supported(isa)) GTEST_SKIP() << "ISA " << isa_name(isa) << " not supported on this CPU: skipping";
    ex_ = std::make_unique<Exec>(isa, ops::Precision::F32, backend);
    if (backend == ops::GemmBackend::OneDnn && ex_->gemm() != ops::GemmBackend::OneDnn)
      GTEST_SKIP() << "oneDNN not built in (or scalar ISA): the own GEMM runs instead: skipping";
  }
  const Exec& ex() const { return *ex_; }
  Exec bf16() const { return ex_->with_precision(ops::Precision::BF16); }
  std::unique_ptr<Exec> ex_;
};

TEST_P(GemmTest, MatchesReferenceForShapesViewsAndAccumulation) {
  for (int64_t M : {1, 7, 33, 130}) {
    for (int64_t N : {1, 5, 48, 97}) {
      for (int64_t K : {1, 31, 200, 530, 4099}) {  // (a small C with a long K: oneDNN sums quarters of K)
        if (K > 1000 && M * N > 2000) continue;  // (keeps the double reference quick)
        auto a = randn(M * K, 1 + M), b = randn(K * N, 2 + N), at = std::vector<float>(K * M);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t p = 0; p < K; ++p) at[p * M + i] = a[i * K + p];
        const ops::MatRef a_rows{a.data(), K, 1}, a_cols{at.data(), 1, M};  // the same matrix, two layouts
        const ops::MatRef b_rows{b.data(), N, 1}, b_cols{b.data(), 1, K};  // b, and another matrix (bᵀ read as K x N)
        for (bool acc : {false, true}) {
          std::vector<float> c0 = randn(M * N, 3), c = c0;
          ops::gemm(ex(), M, N, K, a_rows, b_rows, c.data(), N, acc);
          expect_near(c, reference(M, N, K, a_rows, b_rows, c0, acc, false), 1e-5, "gemm rows/rows");
          c = c0;
          ops::gemm(ex(), M, N, K, a_cols, b_cols, c.data(), N, acc);
          expect_near(c, reference(M, N, K, a_cols, b_cols, c0, acc, false), 1e-5, "gemm cols/cols");
        }
      }
    }
  }
}

TEST_P(GemmTest, OneDnnRunsTheViewsTrainingUses) {
  if (std::get<1>(GetParam()) != ops::GemmBackend::OneDnn) GTEST_SKIP() << "oneDNN only";
  const int64_t M = 9, N = 20, K = 13;
  auto a = randn(M * K, 10), b = randn(K * N, 11);
  std::vector<float> c(M * N);
  const ops::MatRef a_rows{a.data(), K, 1}, a_cols{a.data(), 1, M}, b_rows{b.data(), N, 1}, b_cols{b.data(), 1, K};
  for (auto [av, bv] : {std::pair{a_rows, b_rows}, {a_rows, b_cols}, {a_cols, b_rows}, {a_cols, b_cols}}) {
    ASSERT_TRUE(ops::onednn_gemm_serial(M, N, K, av, bv, c.data(), N, false));
    expect_near(c, reference(M, N, K, av, bv, c, false, false), 1e-5, "onednn share");
  }
  // A view with no BLAS layout is left to the own GEMM.
  EXPECT_FALSE(ops::onednn_gemm_serial(M, N, K, {a.data(), 2 * K, 2}, b_rows, c.data(), N, false));
}

TEST_P(GemmTest, PrepackedBIsBitwiseTheSameAndThreadsDoNotMatter) {
  // More than one column block and two reduction blocks; then shapes like
  // attention's small products and the projections, split by rows and by columns.
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{70, 1700, 300}, {96, 300, 64}, {300, 64, 96},
                         {1000, 288, 288}, {40, 2000, 33}, {50, 70, 4100}, {1500, 40, 2100}}) {
    auto a = randn(M * K, 4), b = randn(N * K, 5);
    const ops::MatRef av{a.data(), K, 1}, bv{b.data(), 1, K};
    std::vector<float> c1(M * N), c2(M * N), c3(M * N);
    ops::gemm(ex(), M, N, K, av, bv, c1.data(), N, false);
    ops::PackedB packed(ex(), K, N, bv);
    ops::gemm(ex(), M, av, packed, c2.data(), N, false);
    EXPECT_EQ(c1, c2) << M << " x " << N << " x " << K;
    const int threads = num_threads();
    set_num_threads(1);
    ops::gemm(ex(), M, N, K, av, bv, c3.data(), N, false);
    set_num_threads(threads);
    EXPECT_EQ(c1, c3) << M << " x " << N << " x " << K;
  }
}

TEST_P(GemmTest, Bf16MatchesTheProductOfRoundedOperands) {
  // Below AVX512-BF16 the BF16 request runs in F32: compare with the F32 reference then.
  const bool rounded = bf16().bf16_products();
  for (int64_t M : {3, 40, 97}) {
    for (int64_t N : {17, 64, 100}) {
      for (int64_t K : {5, 32, 290}) {
        auto a = randn(M * K, 6 + K), b = randn(N * K, 7 + N);
        const ops::MatRef av{a.data(), K, 1}, b_t{b.data(), 1, K}, b_n{b.data(), N, 1};
        for (bool acc : {false, true}) {
          std::vector<float> c0 = randn(M * N, 8), c = c0;
          ops::gemm(bf16(), M, N, K, av, b_t, c.data(), N, acc);
          expect_near(c, reference(M, N, K, av, b_t, c0, acc, rounded), 1e-5, "bf16 gemm, b transposed");
          c = c0;
          ops::gemm(bf16(), M, N, K, av, b_n, c.data(), N, acc);
          expect_near(c, reference(M, N, K, av, b_n, c0, acc, rounded), 1e-5, "bf16 gemm, b row-major");
          // A transposed view of a (the weight-gradient case).
          std::vector<float> at(K * M);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t p = 0; p < K; ++p) at[p * M + i] = a[i * K + p];
          c = c0;
          const ops::MatRef a_cols{at.data(), 1, M};
          ops::gemm(bf16(), M, N, K, a_cols, b_n, c.data(), N, acc);
          expect_near(c, reference(M, N, K, a_cols, b_n, c0, acc, rounded), 1e-5, "bf16 gemm, a transposed");
        }
        std::vector<float> c1(M * N), c2(M * N);
        ops::gemm(bf16(), M, N, K, av, b_t, c1.data(), N, false);
        ops::PackedB packed(bf16(), K, N, b_t);
        ops::gemm(bf16(), M, av, packed, c2.data(), N, false);
        EXPECT_EQ(c1, c2);
        const int threads = num_threads();
        set_num_threads(1);
        ops::gemm(bf16(), M, N, K, av, b_t, c2.data(), N, false);
        set_num_threads(threads);
        EXPECT_EQ(c1, c2) << "one thread, " << M << " x " << N << " x " << K;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(IsaBackend, GemmTest,
                         ::testing::Combine(::testing::ValuesIn(kAllIsas),
                                            ::testing::Values(ops::GemmBackend::Own, ops::GemmBackend::OneDnn)),
                         [](const auto& info) {
                           const bool onednn = std::get<1>(info.param) == ops::GemmBackend::OneDnn;
                           return std::string(isa_name(std::get<0>(info.param))) + (onednn ? "_onednn" : "_own");
                         });

}  // namespace
}  // namespace strata
