// GGUF block formats (src/kernels/quant.h): quantize / dequantize round trips,
// the integer products against float products of the dequantized values, every
// ISA's product kernel against the scalar reference, and (where llama.cpp's
// libraries are installed) blocks bit-identical to ggml's reference quantizers.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/cpu.h"
#include "kernels/exec.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "test_util.h"

namespace strata {
namespace {

constexpr DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                            DType::Q4_K, DType::Q5_K, DType::Q6_K};

// Rows that exercise the quantizers' edge cases: gaussian, all zero, a
// constant, a lone outlier, tiny values, and only positive values.
std::vector<float> test_rows(int64_t n, int rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n) * rows);
  for (int r = 0; r < rows; ++r) {
    float* p = x.data() + static_cast<size_t>(r) * n;
    for (int64_t i = 0; i < n; ++i) p[i] = g(rng);
    switch (r % 6) {
      case 1: std::fill(p, p + n, 0.0f); break;
      case 2: std::fill(p, p + n, 0.37f); break;
      case 3: p[n / 3] = 40.0f; break;
      case 4: for (int64_t i = 0; i < n; ++i) p[i] *= 1e-6f; break;
      case 5: for (int64_t i = 0; i < n; ++i) p[i] = std::fabs(p[i]) + 0.5f; break;
      default: break;
    }
  }
  return x;
}

double rms_error(const float* a, const float* b, int64_t n) {
  double e = 0, s = 0;
  for (int64_t i = 0; i < n; ++i) {
    e += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    s += double(b[i]) * b[i];
  }
  return s == 0 ? std::sqrt(e) : std::sqrt(e / s);
}

TEST(Quant, RoundTripErrorIsWithinTheFormatsPrecision) {
  const int64_t n = 512;
  // Relative RMS error of gaussian rows: bits per value decide it.
  const struct { DType t; double bound; } cases[] = {{DType::Q8_0, 0.01}, {DType::Q4_0, 0.15}, {DType::Q4_1, 0.12},
                                                      {DType::Q5_0, 0.08}, {DType::Q5_1, 0.06}, {DType::Q4_K, 0.10}, {DType::Q5_K, 0.05}, {DType::Q6_K, 0.025}};
  for (const auto& c : cases) {
    const std::vector<float> x = test_rows(n, 6, 1);
    std::vector<uint8_t> q(row_bytes(c.t, n));
    std::vector<float> y(n);
    for (int r = 0; r < 6; ++r) {
      const float* xr = x.data() + r * n;
      quant::quantize_row(c.t, xr, q.data(), n);
      quant::dequantize_row(c.t, q.data(), y.data(), n);
      for (float v : y) ASSERT_TRUE(std::isfinite(v)) << dtype_name(c.t);
      if (r == 1) {
        for (float v : y) EXPECT_EQ(v, 0.0f) << dtype_name(c.t) << ": zeros stay zeros";
      } else if (r != 4) {
        EXPECT_LE(rms_error(y.data(), xr, n), r == 3 ? 0.5 : c.bound) << dtype_name(c.t) << " row kind " << r;
      }
    }
  }
}

TEST(Quant, IntegerProductEqualsTheProductOfDequantizedValues) {
  const int64_t K = 512;
  for (DType t : kTypes) {
    const std::vector<float> w = test_rows(K, 6, 2), x = test_rows(K, 1, 3);
    std::vector<uint8_t> wq(row_bytes(t, K) * 6), act(quant::act_row_bytes(t, K));
    for (int r = 0; r < 6; ++r) quant::quantize_row(t, w.data() + r * K, wq.data() + r * row_bytes(t, K), K);
    quant::quantize_act_row(t, x.data(), act.data(), K);
    // The activations as the product sees them.
    const int bs = quant::uses_q8k(t) ? quant::kSuper : quant::kBlock;
    std::vector<double> xa(K);
    for (int64_t b = 0; b < K / bs; ++b) {
      const float d = quant::uses_q8k(t) ? static_cast<const quant::ActQ8K*>((void*)act.data())[b].d
                                         : static_cast<const quant::ActQ8*>((void*)act.data())[b].d;
      const int8_t* qs = quant::uses_q8k(t) ? static_cast<const quant::ActQ8K*>((void*)act.data())[b].qs
                                            : static_cast<const quant::ActQ8*>((void*)act.data())[b].qs;
      for (int j = 0; j < bs; ++j) xa[b * bs + j] = double(d) * qs[j];
    }
    std::vector<float> wd(K);
    for (int r = 0; r < 6; ++r) {
      quant::dequantize_row(t, wq.data() + r * row_bytes(t, K), wd.data(), K);
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        ref += double(wd[k]) * xa[k];
        mag += std::fabs(double(wd[k]) * xa[k]);
      }
      const float got = quant::dot_scalar(t, wq.data() + r * row_bytes(t, K), act.data(), K);
      EXPECT_NEAR(got, ref, 1e-5 * mag + 1e-30) << dtype_name(t) << " row " << r;
    }
  }
}

class QuantKernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam()))
      GTEST_SKIP() << "skipped: this CPU has no " << isa_name(GetParam()) << " (its kernels are not tested here)";
  }
};

TEST_P(QuantKernelTest, ProductsEqualTheScalarReference) {
  const kernels::Table& kt = kernels::table(GetParam());
  for (DType t : kTypes) {
    for (int64_t K : {256, 768}) {
      for (int64_t M : {1, 3, 17}) {
        const int64_t N = 37;
        const std::vector<float> w = test_rows(K, static_cast<int>(N), 4), x = test_rows(K, static_cast<int>(M), 5);
        const size_t rb = row_bytes(t, K), ab = quant::act_row_bytes(t, K);
        std::vector<uint8_t> wq(rb * N), act(ab * M);
        for (int64_t r = 0; r < N; ++r) quant::quantize_row(t, w.data() + r * K, wq.data() + r * rb, K);
        for (int64_t i = 0; i < M; ++i) quant::quantize_act_row(t, x.data() + i * K, act.data() + i * ab, K);
        // Tolerance from the magnitude of the terms (Q4_0's -8 offset cancels large sums).
        std::vector<float> wd(K), xd(K), mag(M * N);
        for (int64_t j = 0; j < N; ++j) {
          quant::dequantize_row(t, wq.data() + j * rb, wd.data(), K);
          for (int64_t i = 0; i < M; ++i) {
            double m = 0;
            for (int64_t k = 0; k < K; ++k) m += std::fabs(double(wd[k]) * x[i * K + k]);
            mag[i * N + j] = static_cast<float>(m);
          }
        }
        std::vector<float> ref(M * N), got(M * N, -1.0f);
        quant::matmul_scalar(t, act.data(), M, K, wq.data(), rb, N, ref.data(), N);
        kt.quant_matmul(t, act.data(), M, K, wq.data(), rb, N, got.data(), N);
        for (int64_t i = 0; i < M * N; ++i)
          ASSERT_NEAR(got[i], ref[i], 1e-5f * mag[i] + 1e-30f) << dtype_name(t) << " K=" << K << " M=" << M;
        // One row at a time gives the bits of the block of rows (decode == prefill).
        std::vector<float> one(N);
        for (int64_t i = 0; i < M; ++i) {
          kt.quant_matmul(t, act.data() + i * ab, 1, K, wq.data(), rb, N, one.data(), N);
          ASSERT_EQ(0, std::memcmp(one.data(), got.data() + i * N, N * sizeof(float))) << dtype_name(t);
        }
      }
    }
  }
}

// Prefill (16 tokens or more) on CPUs with BF16 products: weight panels
// dequantized and rounded to BF16 (bit for bit the reference dequantization,
// rounded), multiplied as stored BF16 weights.
TEST_P(QuantKernelTest, PrefillOnBf16PanelsEqualsTheRoundedDequantizedProduct) {
  const kernels::Table& kt = kernels::table(GetParam());
  if (!kt.dequant_bf16 || !kt.bf16_matmul)
    GTEST_SKIP() << "skipped: " << isa_name(GetParam())
                 << " has no BF16 products; its quantized prefill is the integer products tested above";
  const Exec ex = Exec::defaults().with_isa(GetParam());
  const int64_t K = 768, N = 48;
  for (DType t : kTypes) {
    const Tensor wf = Tensor::alloc(DType::F32, {N, K});
    const std::vector<float> rows = test_rows(K, static_cast<int>(N), 6);
    std::copy(rows.begin(), rows.end(), wf.f32());
    const Tensor w = wf.to(t);
    const size_t rb = row_bytes(t, K);
    // The panel: the reference dequantization rounded to BF16, bit for bit.
    std::vector<uint16_t> panel(N * K);
    kt.dequant_bf16(t, static_cast<const uint8_t*>(w.data), rb, N, K, panel.data());
    std::vector<float> wd(N * K);
    for (int64_t j = 0; j < N; ++j) {
      quant::dequantize_row(t, static_cast<const uint8_t*>(w.data) + j * rb, wd.data() + j * K, K);
      for (int64_t k = 0; k < K; ++k)
        ASSERT_EQ(panel[j * K + k], f32_to_bf16(wd[j * K + k])) << dtype_name(t) << " row " << j << " k " << k;
    }
    // The product against BF16-rounded activations, within the worst-case
    // error of summing K products in F32 (K * 2^-24 of their magnitude).
    for (int64_t M : {16, 40}) {
      const std::vector<float> x = test_rows(K, static_cast<int>(M), 7);
      std::vector<float> got(M * N, -1.0f);
      ops::matmul(ex, x.data(), M, w, got.data());
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double ref = 0, mag = 0;
          for (int64_t k = 0; k < K; ++k) {
            const double p = double(bf16_to_f32(f32_to_bf16(x[i * K + k]))) * bf16_to_f32(panel[j * K + k]);
            ref += p;
            mag += std::fabs(p);
          }
          ASSERT_NEAR(got[i * N + j], ref, K * 0x1p-24 * mag + 1e-30) << dtype_name(t) << " M=" << M;
        }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, QuantKernelTest, ::testing::ValuesIn(kAllIsas),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

// ggml's reference quantizers and dequantizers, from llama.cpp's own library.
TEST(Quant, BlocksEqualGgmlsReferenceQuantizersBitForBit) {
  STRATA_REQUIRE_LLAMACPP(dir);
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "skipped under AddressSanitizer: ggml's own allocations are not ours to check (the Release pass "
                  "runs this)";
#endif
  void* lib = dlopen((dir + "/libggml-base.so").c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(lib, nullptr) << dlerror();
  using QuantFn = void (*)(const float*, void*, int64_t);
  using DequantFn = void (*)(const void*, float*, int64_t);
  const struct { DType t; const char* q; const char* dq; } fns[] = {
      {DType::Q8_0, "quantize_row_q8_0_ref", "dequantize_row_q8_0"},
      {DType::Q4_0, "quantize_row_q4_0_ref", "dequantize_row_q4_0"},
      {DType::Q4_1, "quantize_row_q4_1_ref", "dequantize_row_q4_1"},
      {DType::Q5_0, "quantize_row_q5_0_ref", "dequantize_row_q5_0"},
      {DType::Q5_1, "quantize_row_q5_1_ref", "dequantize_row_q5_1"},
      {DType::Q4_K, "quantize_row_q4_K_ref", "dequantize_row_q4_K"},
      {DType::Q5_K, "quantize_row_q5_K_ref", "dequantize_row_q5_K"},
      {DType::Q6_K, "quantize_row_q6_K_ref", "dequantize_row_q6_K"}};
  const int64_t n = 1024;
  const int rows = 60;
  const std::vector<float> x = test_rows(n, rows, 6);
  for (const auto& f : fns) {
    auto q = reinterpret_cast<QuantFn>(dlsym(lib, f.q));
    auto dq = reinterpret_cast<DequantFn>(dlsym(lib, f.dq));
    ASSERT_TRUE(q && dq) << f.q << " / " << f.dq << " not exported by " << dir;
    const size_t rb = row_bytes(f.t, n);
    std::vector<uint8_t> ours(rb), theirs(rb);
    std::vector<float> y_ours(n), y_theirs(n);
    int differing = 0;
    for (int r = 0; r < rows; ++r) {
      quant::quantize_row(f.t, x.data() + r * n, ours.data(), n);
      q(x.data() + r * n, theirs.data(), n);
      if (std::memcmp(ours.data(), theirs.data(), rb) != 0) ++differing;
      quant::dequantize_row(f.t, theirs.data(), y_ours.data(), n);
      dq(theirs.data(), y_theirs.data(), n);
      ASSERT_EQ(0, std::memcmp(y_ours.data(), y_theirs.data(), n * sizeof(float))) << dtype_name(f.t) << " row " << r;
    }
    EXPECT_EQ(differing, 0) << dtype_name(f.t) << ": rows whose blocks differ from ggml's";
  }
  // The library stays loaded: ggml registers state at load that unloading would leave dangling.
}

}  // namespace
}  // namespace strata
