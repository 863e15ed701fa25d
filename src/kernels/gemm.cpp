// Blocked, packed F32 GEMM (the training products). The classic layering:
// a kc x nc block of B and an mc x kc block of A are copied into contiguous
// panels (B in L2, one B micro-panel in L1 while it meets every A panel), and a
// register-blocked micro-kernel (kernels::Table::gemm_micro) runs over them.
// Packing reads any strides, so transposed operands (dYᵀ X, X Wᵀ) cost no
// separate transpose. Its work is split over threads by rows or columns of C
// only, so every element's sum runs in the same order for any thread count.
// Where oneDNN is built in it runs the F32 products instead (gemm_onednn.cpp),
// on blocks sized from the problem alone (see gemm() below).
#include <algorithm>
#include <vector>

#include "core/parallel.h"
#include "kernels/gemm_onednn.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "strata/error.h"

namespace strata::ops {
namespace {

constexpr int64_t kKC = 192;   // largest reduction block (K is cut into equal blocks up to this)
constexpr int64_t kMC = 96;    // rows of A packed at a time (L2)
constexpr int64_t kNC = 1536;  // columns of B packed at a time (L2)

// Equal reduction blocks: K = 288 runs as 2 x 144, not 256 + a short 32.
int64_t kc_step(int64_t K) {
  const int64_t k_blocks = (K + kKC - 1) / kKC;
  return (K + k_blocks - 1) / k_blocks;
}

// Where block (j0, p0) of a fully packed B starts: column blocks of kNC one
// after another, each holding its reduction blocks in order.
int64_t packed_offset(int64_t K, int64_t N, int nr, int64_t j0, int64_t p0) {
  const int64_t nc = std::min(kNC, N - j0);
  return j0 * K + p0 * ((nc + nr - 1) / nr * nr);
}

// One thread's share: c[M, N] (+)= a[M, K] · b[K, N], b given as a view or
// already packed whole (`prepacked`, see PackedB).
void gemm_serial(const kernels::Table& kt, int64_t M, int64_t N, int64_t K, MatRef a, MatRef b, const float* prepacked,
                 float* c, int64_t ldc, bool accumulate) {
  const int mr = kt.gemm_mr, nr = kt.gemm_nr;
  thread_local std::vector<float> apack, bpack, edge;
  const int64_t nc_max = std::min(kNC, (N + nr - 1) / nr * nr);
  const int64_t mc_max = std::min(kMC, (M + mr - 1) / mr * mr);
  apack.resize(static_cast<size_t>(mc_max * kKC));
  if (!prepacked) bpack.resize(static_cast<size_t>(nc_max * kKC));
  edge.resize(static_cast<size_t>(mr * nr));
  if (K == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(c + i * ldc, c + i * ldc + N, 0.0f);
    return;
  }
  const int64_t kstep = kc_step(K);
  for (int64_t j0 = 0; j0 < N; j0 += kNC) {
    const int64_t nc = std::min(kNC, N - j0);
    for (int64_t p0 = 0; p0 < K; p0 += kstep) {
      const int64_t kc = std::min(kstep, K - p0);
      const bool acc = accumulate || p0 > 0;
      const float* bpanels = prepacked ? prepacked + packed_offset(K, N, nr, j0, p0) : bpack.data();
      if (!prepacked) kt.gemm_pack_b(b.data, b.rs, b.cs, p0, kc, j0, nc, bpack.data());
      for (int64_t i0 = 0; i0 < M; i0 += kMC) {
        const int64_t mc = std::min(kMC, M - i0);
        kt.gemm_pack_a(a.data, a.rs, a.cs, i0, mc, p0, kc, apack.data());
        for (int64_t jr = 0; jr < nc; jr += nr) {
          const float* bp = bpanels + jr * kc;
          const int64_t cols = std::min<int64_t>(nr, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const float* ap = apack.data() + ir * kc;
            const int64_t rows = std::min<int64_t>(mr, mc - ir);
            float* cblk = c + (i0 + ir) * ldc + j0 + jr;
            if (rows == mr && cols == nr) {
              kt.gemm_micro(kc, ap, bp, cblk, ldc, acc);
              continue;
            }
            // Edge block: full block into a buffer, then the valid part.
            kt.gemm_micro(kc, ap, bp, edge.data(), nr, false);
            for (int64_t i = 0; i < rows; ++i)
              for (int64_t j = 0; j < cols; ++j)
                cblk[i * ldc + j] = acc ? cblk[i * ldc + j] + edge[i * nr + j] : edge[i * nr + j];
          }
        }
      }
    }
  }
}

}  // namespace

namespace {

// B rounded to BF16 in whole tiles (kernels.h), zero-padded to multiples of
// 32; the threads take column blocks of 32.
void to_tiles_b(const kernels::Table& kt, MatRef b, int64_t K, int64_t N, std::vector<uint16_t>& out) {
  const int64_t Kp = (K + 31) / 32 * 32, Np = (N + 31) / 32 * 32;
  const bool padded = Kp != K || Np != N;
  out.resize(static_cast<size_t>(Kp * Np));
  if (padded) std::fill(out.begin(), out.end(), uint16_t{0});
  uint16_t* bb = out.data();
  parallel_for(N, 32, [&](int64_t lo, int64_t hi) {
    kt.bf16_pack_b(b.data + lo * b.cs, b.rs, b.cs, K, hi - lo, bb + lo * Kp, Kp);
  });
}

// a rounded to BF16 tiles, then the BF16 kernel (AMX or dot products); the threads take rows (or
// columns) of c in multiples of 32.
void bf16_gemm(const kernels::Table& kt, int64_t M, int64_t N, int64_t K, MatRef a, const uint16_t* bb, float* c,
              int64_t ldc, bool accumulate) {
  const int64_t Kp = (K + 31) / 32 * 32, Mp = (M + 31) / 32 * 32;
  thread_local std::vector<uint16_t> abuf;
  abuf.resize(static_cast<size_t>(Mp * Kp));
  if (Mp != M || Kp != K) std::fill(abuf.begin(), abuf.end(), uint16_t{0});
  uint16_t* ab = abuf.data();
  parallel_for(M, 32, [&](int64_t lo, int64_t hi) {
    kt.bf16_pack_a(a.data + lo * a.rs, a.rs, a.cs, hi - lo, K, ab + lo * Kp, Kp);
  });
  const int64_t threads = num_threads();
  if (M >= N) {
    const int64_t grain = ((M + threads - 1) / threads + 31) / 32 * 32;
    parallel_for(M, grain, [&](int64_t lo, int64_t hi) {
      kt.bf16_gemm(ab + lo * Kp, bb, hi - lo, N, Kp, c + lo * ldc, ldc, accumulate);
    });
  } else {
    const int64_t grain = ((N + threads - 1) / threads + 31) / 32 * 32;
    parallel_for(N, grain, [&](int64_t lo, int64_t hi) {
      kt.bf16_gemm(ab, bb + lo * Kp, M, hi - lo, Kp, c + lo, ldc, accumulate);
    });
  }
}

// A small C with a long reduction (weight gradients of small and mid-sized
// models, the classifier's d(h)) has too few rows and columns to share out
// without repacking the long operands per block, so oneDNN runs fixed quarters
// of the reduction into partial sums, which are then added to C in quarter
// order: the same bits for any thread count.
void onednn_gemm_split_k(const kernels::Table& kt, int64_t M, int64_t N, int64_t K, MatRef a, MatRef b, float* c,
                         int64_t ldc, bool accumulate) {
  const int64_t kb = ((K + 3) / 4 + 63) / 64 * 64, parts_n = (K + kb - 1) / kb, mn = M * N;
  thread_local std::vector<float> parts;
  parts.resize(static_cast<size_t>(parts_n * mn));
  float* base = parts.data();
  parallel_for(parts_n, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const int64_t p0 = q * kb, kq = std::min(kb, K - p0);
      const MatRef aq{a.data + p0 * a.cs, a.rs, a.cs}, bq{b.data + p0 * b.rs, b.rs, b.cs};
      if (!onednn_gemm_serial(M, N, kq, aq, bq, base + q * mn, N, false))
        gemm_serial(kt, M, N, kq, aq, bq, nullptr, base + q * mn, N, false);
    }
  });
  parallel_for(M, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float* ci = c + i * ldc;
      if (!accumulate) std::fill(ci, ci + N, 0.0f);
      for (int64_t q = 0; q < parts_n; ++q) {
        const float* pi = base + q * mn + i * N;
        for (int64_t j = 0; j < N; ++j) ci[j] += pi[j];
      }
    }
  });
}

}  // namespace

PackedB::PackedB(const Exec& ex, int64_t K_, int64_t N_, MatRef b) : K(K_), N(N_) {
  const kernels::Table& kt = ex.kernels();
  nr = kt.gemm_nr;
  bf16 = ex.bf16_products();
  if (bf16) {
    to_tiles_b(kt, b, K, N, vnni);
    return;
  }
  if (ex.gemm() == GemmBackend::OneDnn) {  // oneDNN packs per call; keep the view
    onednn_view = b;
    onednn = true;
    return;
  }
  data.resize(static_cast<size_t>(K * ((N + nr - 1) / nr * nr)));
  const int64_t kstep = kc_step(K), jblocks = (N + kNC - 1) / kNC;
  std::vector<std::pair<int64_t, int64_t>> blocks;
  for (int64_t jb = 0; jb < jblocks; ++jb)
    for (int64_t p0 = 0; p0 < K; p0 += kstep) blocks.emplace_back(jb * kNC, p0);
  parallel_for(static_cast<int64_t>(blocks.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const auto [j0, p0] = blocks[i];
      kt.gemm_pack_b(b.data, b.rs, b.cs, p0, std::min(kstep, K - p0), j0, std::min(kNC, N - j0),
                     data.data() + packed_offset(K, N, nr, j0, p0));
    }
  });
}

void gemm(const Exec& ex, int64_t M, MatRef a, const PackedB& b, float* c, int64_t ldc, bool accumulate) {
  if (M <= 0 || b.N <= 0) return;
  const kernels::Table& kt = ex.kernels();
  if (kt.gemm_nr != b.nr || b.bf16 != ex.bf16_products() || (b.onednn != (ex.gemm() == GemmBackend::OneDnn) && !b.bf16))
    fail("gemm: B was packed for another kernel table, precision or GEMM backend");
  if (b.bf16) return bf16_gemm(kt, M, b.N, b.K, a, b.vnni.data(), c, ldc, accumulate);
  if (b.onednn) return gemm(ex, M, b.N, b.K, a, b.onednn_view, c, ldc, accumulate);
  const int64_t threads = num_threads();
  int64_t grain = (M + threads - 1) / threads;
  grain = (grain + kt.gemm_mr - 1) / kt.gemm_mr * kt.gemm_mr;
  parallel_for(M, grain, [&](int64_t lo, int64_t hi) {
    gemm_serial(kt, hi - lo, b.N, b.K, {a.data + lo * a.rs, a.rs, a.cs}, {}, b.data.data(), c + lo * ldc, ldc,
                accumulate);
  });
}

void gemm(const Exec& ex, int64_t M, int64_t N, int64_t K, MatRef a, MatRef b, float* c, int64_t ldc,
          bool accumulate) {
  if (M <= 0 || N <= 0) return;
  const kernels::Table& kt = ex.kernels();
  if (ex.bf16_products()) {
    // The operands are rounded to BF16 once per call into the layouts the BF16
    // kernels read in place (a row-major, b in VNNI pairs), zero-padded.
    thread_local std::vector<uint16_t> bbuf;
    to_tiles_b(kt, b, K, N, bbuf);
    return bf16_gemm(kt, M, N, K, a, bbuf.data(), c, ldc, accumulate);
  }
  const int64_t threads = num_threads();
  const bool onednn = ex.gemm() == GemmBackend::OneDnn;
  if (onednn && std::max(M, N) < 2048 && K >= 2048) return onednn_gemm_split_k(kt, M, N, K, a, b, c, ldc, accumulate);
  auto share = [&](int64_t m, int64_t n, MatRef as, MatRef bs, float* cs) {
    if (!onednn || !onednn_gemm_serial(m, n, K, as, bs, cs, ldc, accumulate))
      gemm_serial(kt, m, n, K, as, bs, nullptr, cs, ldc, accumulate);
  };
  // Split the longer side of C. The own GEMM sums every element the same way
  // whatever its share, so it takes one contiguous share per thread (aligned
  // to the register block). oneDNN's sums depend on the shape of the call, so
  // it gets blocks sized from the problem alone, never from the thread count.
  const bool by_rows = M >= N;
  const int64_t len = by_rows ? M : N, align = by_rows ? kt.gemm_mr : kt.gemm_nr;
  // (Blocks of at least 256: oneDNN repacks the other operand for each one.)
  int64_t grain = onednn ? std::max<int64_t>((len + 3) / 4, 256) : (len + threads - 1) / threads;
  grain = (grain + align - 1) / align * align;
  // (parallel_for hands out whole multiples of the grain, or everything to one thread.)
  const int64_t step = onednn ? grain : len;
  parallel_for(len, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i += step) {
      const int64_t n = std::min(step, hi - i);
      if (by_rows)
        share(n, N, {a.data + i * a.rs, a.rs, a.cs}, b, c + i * ldc);
      else
        share(M, n, a, {b.data + i * b.cs, b.rs, b.cs}, c + i);
    }
  });
}

}  // namespace strata::ops
