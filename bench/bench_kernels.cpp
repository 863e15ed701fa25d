// Kernel micro-benchmarks on every ISA path (run by hand, not a test):
//   cmake -S . -B build-bench -DSTRATA_BUILD_BENCH=ON && cmake --build build-bench --target bench_kernels
//   build-bench/bench_kernels --benchmark_filter=Gemv
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/exec.h"
#include "kernels/kernels.h"
#include "kernels/linear_attention.h"
#include "kernels/ops.h"
#include "kernels/ssm.h"
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

// y[M, 5632] = x[M, 2048] · W^T: TinyLlama's gate projection. Args: isa (2 avx512, 3 avx512bf16, 4 amx), dtype (0 f32, 1 bf16), M.
void BM_Matmul(benchmark::State& state) {
  const Isa isa = static_cast<Isa>(state.range(0));
  if (!isa_supported(isa)) return state.SkipWithError("ISA not supported");
  const Exec ex(isa);
  const DType dt = state.range(1) ? DType::BF16 : DType::F32;
  const int64_t M = state.range(2), N = 5632, K = 2048;
  Tensor w = random_matrix(N, K, dt);
  std::vector<float> x(M * K, 0.01f), y(M * N);
  for (auto _ : state) {
    ops::matmul(ex, x.data(), M, w, y.data());
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
BENCHMARK(BM_Matmul)->Name("Prefill")->ArgsProduct({{1, 2, 3, 4}, {0, 1}, {64, 512}})->UseRealTime();

// Decode-like gemv from DRAM: one BF16 [N, K] matrix after another, 1 GiB in
// all (past the last-level cache), as a decoded token meets them. Args: N, K.
void BM_GemvStream(benchmark::State& state) {
  const Exec ex = Exec::defaults();
  const int64_t N = state.range(0), K = state.range(1);
  const int64_t count = std::max<int64_t>(1, (int64_t{1} << 30) / (N * K * 2));
  std::vector<Tensor> ws;
  for (int64_t i = 0; i < count; ++i) ws.push_back(random_matrix(N, K, DType::BF16));
  std::vector<float> x(K, 0.01f), y(N);
  for (auto _ : state) {
    for (const Tensor& w : ws) ops::matmul(ex, x.data(), 1, w, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(count * N * K * 2),
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_GemvStream)
    ->Name("GemvStream")
    ->Args({5632, 2048})
    ->Args({2048, 2048})
    ->Args({256, 2048})
    ->Args({4096, 1536})
    ->Args({1536, 1536})
    ->Args({1536, 4096})
    ->Args({6144, 1536})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The training products of a stories15M-shaped step (8192 rows, dim 288, FFN
// 768, vocab 32000). Args: op (0 x·Wᵀ with the inference matmul, 4 x·Wᵀ
// through ops::gemm, 7 x·B with B stored [K, N], 1 dy·W, 2 dW += dyᵀ·x;
// 8, 9, 10: x·Wᵀ, dy·W, dW += dyᵀ·x through ops::gemm in BF16),
// N (output features), K (input features).
void BM_TrainGemm(benchmark::State& state) {
  const int op = static_cast<int>(state.range(0));
  const Exec ex = Exec::defaults(), ex16 = ex.with_precision(ops::Precision::BF16);
  const int64_t M = 8192, N = state.range(1), K = state.range(2);
  Tensor w = random_matrix(N, K, DType::F32);
  std::vector<float> x(M * K, 0.01f), dy(M * N, 0.01f), y(M * std::max(N, K)), dw(N * K);
  for (auto _ : state) {
    switch (op) {
      case 0: ops::matmul(ex, x.data(), M, w, y.data()); break;
      case 1: ops::matmul_nn(ex, dy.data(), M, N, w.f32(), K, y.data()); break;
      case 2: ops::matmul_tn_acc(ex, dy.data(), M, N, x.data(), K, dw.data()); break;
      case 4: ops::gemm(ex, M, N, K, {x.data(), K, 1}, {w.f32(), 1, K}, y.data(), N, false); break;
      case 7: ops::gemm(ex, M, N, K, {x.data(), K, 1}, {w.f32(), N, 1}, y.data(), N, false); break;
      case 8: ops::gemm(ex16, M, N, K, {x.data(), K, 1}, {w.f32(), 1, K}, y.data(), N, false); break;
      case 9: ops::gemm(ex16, M, K, N, {dy.data(), N, 1}, {w.f32(), K, 1}, y.data(), K, false); break;
      case 10: ops::gemm(ex16, N, K, M, {dy.data(), 1, N}, {x.data(), K, 1}, dw.data(), K, true); break;
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
  const Exec ex = Exec::defaults();
  const int64_t n = 256, D = 288, V = 32000;
  Tensor head = random_matrix(V, D, DType::F32);
  std::vector<float> h(n * D, 0.01f), dl(n * V, 0.001f), out(n * V), dhead(V * D);
  const ops::PackedB head_t(ex, D, V, {head.f32(), 1, D}), head_n(ex, V, D, {head.f32(), D, 1});
  for (auto _ : state) {
    switch (op) {
      case 0: ops::gemm(ex, n, {h.data(), D, 1}, head_t, out.data(), V, false); break;
      case 1: ops::gemm(ex, n, {dl.data(), V, 1}, head_n, out.data(), D, false); break;
      case 2: ops::gemm(ex, V, D, n, {dl.data(), 1, V}, {h.data(), D, 1}, dhead.data(), D, true); break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * D * V, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_HeadChunk)->Name("HeadChunk")->DenseRange(0, 2)->UseRealTime()->Unit(benchmark::kMillisecond);

// The selective scan of one Mamba layer as training runs it
// (src/model/modules/mamba.cpp), one sequence: the forward over groups of 64
// channels keeping the state at every chunk's start, then (arg 4 = 1) the
// backward over groups of 256 channels walking the chunks in reverse from
// those states, dB and dC summed over the groups in order. Args: E, N, T,
// chunk, backward. bench/samba_vs_torch.py times the same in PyTorch.
void BM_SelectiveScan(benchmark::State& state) {
  const int64_t E = state.range(0), N = state.range(1), T = state.range(2), chunk = state.range(3);
  const bool backward = state.range(4) != 0;
  constexpr int64_t kGroup = 64, kGradGroup = 256;
  const kernels::Table& kt = Exec::defaults().kernels();
  const int64_t chunks = (T + chunk - 1) / chunk, groups = (E + kGroup - 1) / kGroup,
                grad_groups = (E + kGradGroup - 1) / kGradGroup;
  Rng r(3);
  std::vector<float> u(T * E), delta(T * E), bc(T * 2 * N), A(N * E), D(E, 1.0f), dy(T * E);
  for (float& v : u) v = static_cast<float>(r.normal());
  for (float& v : dy) v = static_cast<float>(r.normal());
  for (float& v : bc) v = static_cast<float>(r.normal());
  for (float& v : delta) v = 0.001f * std::pow(100.0f, r.uniform());  // log-uniform in [1e-3, 0.1], as at init
  for (int64_t s = 0; s < N; ++s) std::fill(A.begin() + s * E, A.begin() + (s + 1) * E, -static_cast<float>(s + 1));
  std::vector<float> h(N * E), saved(chunks * N * E), y(T * E), du(T * E), ddelta(T * E), dA(grad_groups * N * E),
      dD(E), part(grad_groups * T * 2 * N);
  auto args = [&](int64_t t0, int64_t e0, int64_t n) {
    kernels::ScanArgs a;
    a.T = std::min(chunk, T - t0), a.n = n, a.N = N;
    a.u = u.data() + t0 * E + e0, a.ld_u = E;
    a.delta = delta.data() + t0 * E + e0, a.ld_delta = E;
    a.B = bc.data() + t0 * 2 * N, a.C = a.B + N, a.ld_bc = 2 * N;
    a.A = A.data() + e0, a.ld_a = E;
    a.D = D.data() + e0;
    a.ld_h = E;
    a.y = y.data() + t0 * E + e0, a.ld_y = E;
    return a;
  };
  for (auto _ : state) {
    std::fill(h.begin(), h.end(), 0.0f);
    parallel_for(groups, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t grp = lo; grp < hi; ++grp) {
        const int64_t e0 = grp * kGroup, n = std::min(kGroup, E - e0);
        for (int64_t c = 0; c < chunks; ++c) {
          for (int64_t s = 0; s < N; ++s)
            std::copy_n(h.data() + s * E + e0, n, saved.data() + c * N * E + s * E + e0);
          kernels::ScanArgs a = args(c * chunk, e0, n);
          a.h = h.data() + e0;
          kt.scan_forward(a);
        }
      }
    });
    if (backward) {
      parallel_for(grad_groups, 1, [&](int64_t lo, int64_t hi) {
        std::vector<float> carry(N * kGradGroup), work(kernels::scan_backward_work(chunk, N));
        for (int64_t grp = lo; grp < hi; ++grp) {
          const int64_t e0 = grp * kGradGroup, n = std::min(kGradGroup, E - e0);
          std::fill(carry.begin(), carry.end(), 0.0f);
          for (int64_t c = chunks - 1; c >= 0; --c) {
            const int64_t t0 = c * chunk;
            kernels::ScanGradArgs g;
            g.f = args(t0, e0, n);
            g.f.h = saved.data() + c * N * E + e0;
            g.dy = dy.data() + t0 * E + e0, g.ld_dy = E;
            g.g = carry.data(), g.ld_g = kGradGroup;
            g.du = du.data() + t0 * E + e0, g.ld_du = E;
            g.ddelta = ddelta.data() + t0 * E + e0, g.ld_ddelta = E;
            g.dA = dA.data() + grp * N * E + e0, g.ld_dA = E;
            g.dD = dD.data() + e0;
            g.dB = part.data() + (grp * T + t0) * 2 * N, g.dC = g.dB + N, g.ld_dbc = 2 * N;
            g.work = work.data();
            kt.scan_backward(g);
          }
        }
      });
      for (int64_t grp = 1; grp < grad_groups; ++grp)
        for (int64_t i = 0; i < T * 2 * N; ++i) part[i] += part[grp * T * 2 * N + i];
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(part.data());
  }
  state.counters["steps x channels/s"] =
      benchmark::Counter(static_cast<double>(T * E), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SelectiveScan)
    ->Name("SelectiveScan")
    ->Args({3072, 16, 4096, 64, 0})
    ->Args({3072, 16, 4096, 64, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

// Chunked gated linear attention at the Sliding GLA 438M shape (4 heads,
// dk 192, dv 384, T 4096, chunk 64), the heads spread over the threads as the
// mixer does. Args: 0 forward, 1 forward + backward; gate 0 per channel (GLA),
// 1 per head (RetNet's shape of gate); GEMM backend 0 own, 1 oneDNN. GFLOP/s
// counts the chunk products as run (the intra-chunk score blocks included).
// LinAttnGemmRef: one plain F32 GEMM of the state products' shape over all
// heads' rows (T H x dv x dk), the matmul rate to hold it against.
double linattn_flops(bool backward, bool scalar, int64_t T, int64_t dk, int64_t dv, int64_t C) {
  const double n = static_cast<double>(C), chunks = static_cast<double>(T / C);
  double sub = 0;
  for (int64_t I1 = 16; I1 <= C; I1 += 16) sub += 2.0 * 16 * static_cast<double>(I1) * dk;
  const double intra = scalar ? 2.0 * n * n * dk : sub;
  const double fwd = 2 * n * dk * dv + 2 * n * n * dv + 2 * dk * n * dv + intra;
  const double bwd = intra + 2 * n * n * dv * 2 + 2 * n * dk * dv * 4 + 2 * intra;
  return chunks * (fwd + (backward ? bwd : 0));
}

void BM_LinAttn(benchmark::State& state) {
  const bool backward = state.range(0) == 1, scalar = state.range(1) == 1;
  const Exec ex = Exec::defaults().with_gemm(state.range(2) == 1 ? ops::GemmBackend::OneDnn : ops::GemmBackend::Own);
  const int64_t T = 4096, H = 4, dk = 192, dv = 384, C = 64;
  Rng r(3);
  auto randv = [&](int64_t n, double sd) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = static_cast<float>(r.normal() * sd);
    return v;
  };
  std::vector<float> q = randv(T * H * dk, 1), k = randv(T * H * dk, 1), v = randv(T * H * dv, 1);
  std::vector<float> g = randv(T * H * dk, 0.01), o(T * H * dv), dO = randv(T * H * dv, 1), dq(T * H * dk),
                     dk_(T * H * dk), dv_(T * H * dv), dg(T * H * dk), S(H * dk * dv);
  for (float& x : g) x = -std::fabs(x) - 0.001f;
  std::vector<float> saved(static_cast<size_t>(H * (T / C) * dk * dv));
  for (auto _ : state) {
    std::fill(S.begin(), S.end(), 0.0f);
    parallel_for(H, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t h = lo; h < hi; ++h) {
        ops::LinAttnHead a;
        a.T = T, a.dk = dk, a.dv = dv, a.chunk = C, a.scale = 0.07f;
        a.q = q.data() + h * dk, a.ld_q = H * dk, a.k = k.data() + h * dk, a.ld_k = H * dk;
        a.v = v.data() + h * dv, a.ld_v = H * dv, a.o = o.data() + h * dv, a.ld_o = H * dv;
        a.scalar_gate = scalar, a.g = g.data() + h * dk, a.ld_g = scalar ? 0 : H * dk;
        a.S = S.data() + h * dk * dv;
        float* sv = saved.data() + h * (T / C) * dk * dv;
        ops::linattn_forward(ex, a, backward ? sv : nullptr);
        if (!backward) continue;
        ops::LinAttnGrad gr;
        gr.dO = dO.data() + h * dv, gr.ld_do = H * dv, gr.dq = dq.data() + h * dk, gr.ld_dq = H * dk;
        gr.dk = dk_.data() + h * dk, gr.ld_dk = H * dk, gr.dv = dv_.data() + h * dv, gr.ld_dv = H * dv;
        if (!scalar) gr.dg = dg.data() + h * dk, gr.ld_dg = H * dk;
        ops::linattn_backward(ex, a, sv, gr);
      }
    });
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(H * linattn_flops(backward, scalar, T, dk, dv, C),
                                                 benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_LinAttn)->Name("LinAttn")->ArgsProduct({{0, 1}, {0, 1}, {0, 1}})->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_LinAttnGemmRef(benchmark::State& state) {
  const Exec ex = Exec::defaults().with_gemm(state.range(0) == 1 ? ops::GemmBackend::OneDnn : ops::GemmBackend::Own);
  const int64_t M = 4096 * 4, N = 384, K = 192;
  std::vector<float> a(M * K, 0.01f), b(K * N, 0.01f), c(M * N);
  for (auto _ : state) {
    ops::gemm(ex, M, N, K, {a.data(), K, 1}, {b.data(), N, 1}, c.data(), N, false);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_LinAttnGemmRef)->Name("LinAttnGemmRef")->DenseRange(0, 1)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
