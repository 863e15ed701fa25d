// Kernel micro-benchmarks on every ISA path (run by hand, not a test):
//   cmake -S . -B build-bench -DSTRATA_BUILD_BENCH=ON && cmake --build build-bench --target bench_kernels
//   build-bench/bench_kernels --benchmark_filter=Gemv
#include <benchmark/benchmark.h>

#include <vector>

#include "core/cpu.h"
#include "core/rng.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "strata/tensor.h"

namespace {

using namespace strata;

Tensor random_matrix(int64_t n, int64_t k, DType dt) {
  Tensor t = Tensor::alloc(dt, {n, k});
  Rng r(1);
  for (int64_t i = 0; i < n * k; ++i) {
    const float v = static_cast<float>(r.normal()) * 0.02f;
    if (dt == DType::F32) t.f32()[i] = v;
    else t.u16()[i] = f32_to_bf16(v);
  }
  return t;
}

// y[M, 5632] = x[M, 2048] · W^T: TinyLlama's gate projection. Args: isa, dtype (0 f32, 1 bf16), M.
void BM_Matmul(benchmark::State& state) {
  const Isa isa = static_cast<Isa>(state.range(0));
  if (!isa_supported(isa)) return state.SkipWithError("ISA not supported");
  set_active_isa(isa);
  const DType dt = state.range(1) ? DType::BF16 : DType::F32;
  const int64_t M = state.range(2), N = 5632, K = 2048;
  Tensor w = random_matrix(N, K, dt);
  std::vector<float> x(M * K, 0.01f), y(M * N);
  for (auto _ : state) {
    ops::matmul(x.data(), M, w, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(w.nbytes()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Matmul)
    ->Name("Gemv")
    ->ArgsProduct({{0, 1, 2}, {0, 1}, {1}})
    ->UseRealTime();
BENCHMARK(BM_Matmul)->Name("Prefill")->ArgsProduct({{1, 2}, {0, 1}, {64}})->UseRealTime();

// The training products of a stories15M-shaped step (8192 rows, dim 288, FFN
// 768, vocab 32000). Args: op (0 x·Wᵀ with the inference matmul, 4 x·Wᵀ
// through ops::gemm, 7 x·B with B stored [K, N], 1 dy·W, 2 dW += dyᵀ·x;
// 8, 9, 10: x·Wᵀ, dy·W, dW += dyᵀ·x through ops::gemm in BF16),
// N (output features), K (input features).
void BM_TrainGemm(benchmark::State& state) {
  const int op = static_cast<int>(state.range(0));
  const int64_t M = 8192, N = state.range(1), K = state.range(2);
  Tensor w = random_matrix(N, K, DType::F32);
  std::vector<float> x(M * K, 0.01f), dy(M * N, 0.01f), y(M * std::max(N, K)), dw(N * K);
  for (auto _ : state) {
    switch (op) {
      case 0: ops::matmul(x.data(), M, w, y.data()); break;
      case 1: ops::matmul_nn(dy.data(), M, N, w.f32(), K, y.data()); break;
      case 2: ops::matmul_tn_acc(dy.data(), M, N, x.data(), K, dw.data()); break;
      case 4: ops::gemm(M, N, K, {x.data(), K, 1}, {w.f32(), 1, K}, y.data(), N, false); break;
      case 7: ops::gemm(M, N, K, {x.data(), K, 1}, {w.f32(), N, 1}, y.data(), N, false); break;
      case 8: ops::gemm(M, N, K, {x.data(), K, 1}, {w.f32(), 1, K}, y.data(), N, false, ops::Precision::BF16); break;
      case 9: ops::gemm(M, K, N, {dy.data(), N, 1}, {w.f32(), K, 1}, y.data(), K, false, ops::Precision::BF16); break;
      case 10: ops::gemm(N, K, M, {dy.data(), 1, N}, {x.data(), K, 1}, dw.data(), K, true, ops::Precision::BF16); break;
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_TrainGemm)
    ->Name("TrainGemm")
    ->ArgsProduct({{0, 4, 1, 2, 8, 9, 10}, {288, 768}, {288, 768}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TrainGemm)->Name("TrainGemmHead")->Args({0, 32000, 288})->Args({4, 32000, 288})->Args({7, 32000, 288})
    ->Args({1, 32000, 288})->Args({2, 32000, 288})->Args({8, 32000, 288})->Args({9, 32000, 288})
    ->Args({10, 32000, 288})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// The classifier's three products for one 256-row chunk (stories15M shape:
// width 288, vocab 32000) as training runs them: arg 0 logits = h · headᵀ
// and 1 dh = dlogits · head with the head prepacked, 2 dhead += dlogitsᵀ · h.
void BM_HeadChunk(benchmark::State& state) {
  const int op = static_cast<int>(state.range(0));
  const int64_t n = 256, D = 288, V = 32000;
  Tensor head = random_matrix(V, D, DType::F32);
  std::vector<float> h(n * D, 0.01f), dl(n * V, 0.001f), out(n * V), dhead(V * D);
  const ops::PackedB head_t(D, V, {head.f32(), 1, D}), head_n(V, D, {head.f32(), D, 1});
  for (auto _ : state) {
    switch (op) {
      case 0: ops::gemm(n, {h.data(), D, 1}, head_t, out.data(), V, false); break;
      case 1: ops::gemm(n, {dl.data(), V, 1}, head_n, out.data(), D, false); break;
      case 2: ops::gemm(V, D, n, {dl.data(), 1, V}, {h.data(), D, 1}, dhead.data(), D, true); break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * D * V, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_HeadChunk)->Name("HeadChunk")->DenseRange(0, 2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
