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

}  // namespace

BENCHMARK_MAIN();
