#!/usr/bin/env python3
"""Selective scan, strata's kernels vs PyTorch (run by hand, not a test).

  OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/samba_vs_torch.py [--E 3072] [--N 16] [--T 4096]
      [--chunk 64] [--repeat 5] [--threads 2] [--no-checkpoint] [--bench-kernels build-bench/bench_kernels]

One sequence (batch 1) of the Mamba scan of Samba 421M's width (E 3072, N 16)
over T 4096 steps, forward and forward + backward (gradients of u, delta, A,
B, C, D from a random output gradient):
- strata: `bench_kernels --benchmark_filter=SelectiveScan/E/N/T/chunk/` (the
  kernels of src/kernels/ssm.h as the Mamba module drives them: chunk-start
  states saved, backward chunk by chunk in reverse, channel groups over the
  threads); its medians over --repeat repetitions;
- PyTorch: ref_mamba.selective_scan, chunks of at most --chunk steps in
  closed form over [E, N, chunk] tensors (cut shorter where the decay within
  a chunk would pass e^-30: about 53 steps with these inputs), a Python loop
  over chunks only, autograd for the backward, each chunk recomputed in
  backward unless --no-checkpoint (strata also keeps only the chunk-start
  states); the median of --repeat.
Inputs as at initialisation: u, B, C, dy ~ N(0, 1), delta log-uniform in
[1e-3, 0.1], A[e, n] = -(n + 1), D = 1. Build bench_kernels first:
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_BENCH=ON -DSTRATA_BUILD_TESTS=OFF
  cmake --build build-bench --target bench_kernels
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from parity_io import torch  # noqa: E402
from ref_mamba import selective_scan  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def strata_times(binary, args):
    """Median ms of strata's forward and forward + backward, or None when not run."""
    if not os.path.exists(binary):
        print(f"strata: {binary} not found (build bench_kernels first)")
        return None
    name = f"SelectiveScan/{args.E}/{args.N}/{args.T}/{args.chunk}/"
    # strata's pool takes every core it may run on: fewer threads = fewer cores.
    pin = ["taskset", "-c", f"0-{args.threads - 1}"] if args.threads < len(os.sched_getaffinity(0)) else []
    r = subprocess.run(pin + [binary, f"--benchmark_filter={name}", f"--benchmark_repetitions={args.repeat}",
                              "--benchmark_report_aggregates_only=true", "--benchmark_format=json"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{binary}: exit {r.returncode}\n{r.stderr}")
    out = {}
    for b in json.loads(r.stdout)["benchmarks"]:
        if b.get("aggregate_name") == "median":
            assert b["time_unit"] == "ms", b
            out[int(b["run_name"].split("/")[5])] = b["real_time"]
    if set(out) != {0, 1}:
        print(f"strata: bench_kernels has no {name}0 and {name}1 (registered sizes only)")
        return None
    return out[0], out[1]


def torch_times(args):
    g = torch.Generator().manual_seed(3)
    E, N, T = args.E, args.N, args.T
    u = torch.randn(1, T, E, generator=g).requires_grad_()
    dt = (1e-3 * 100.0 ** torch.rand(1, T, E, generator=g)).requires_grad_()
    A = (-torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1).requires_grad_()
    Bm = torch.randn(1, T, N, generator=g).requires_grad_()
    Cm = torch.randn(1, T, N, generator=g).requires_grad_()
    D = torch.ones(E).requires_grad_()
    dy = torch.randn(1, T, E, generator=g)
    opts = dict(chunk=args.chunk, checkpoint=not args.no_checkpoint)
    fwd, both = [], []
    for _ in range(args.repeat):
        for t in (u, dt, A, Bm, Cm, D):
            t.grad = None
        t0 = time.perf_counter()
        y, _ = selective_scan(u, dt, A, Bm, Cm, D, **opts)
        t1 = time.perf_counter()
        (y * dy).sum().backward()
        t2 = time.perf_counter()
        fwd.append((t1 - t0) * 1e3)
        both.append((t2 - t0) * 1e3)
        print(f"  torch: forward {fwd[-1]:.0f} ms, forward + backward {both[-1]:.0f} ms", flush=True)
    return statistics.median(fwd), statistics.median(both)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--E", type=int, default=3072)
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=64, help="scan chunk of both (strata's default scan_chunk: 64)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-checkpoint", action="store_true", help="torch keeps every chunk's tensors for backward")
    ap.add_argument("--bench-kernels", default=os.path.join(ROOT, "build-bench", "bench_kernels"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"selective scan E {args.E}, N {args.N}, T {args.T}, batch 1, chunk {args.chunk}, "
          f"{args.threads} threads", flush=True)
    s = strata_times(args.bench_kernels, args)
    t = torch_times(args)
    print(f"{'':8s} {'forward ms':>12s} {'fwd+bwd ms':>12s}")
    if s:
        print(f"{'strata':8s} {s[0]:12.1f} {s[1]:12.1f}")
    print(f"{'pytorch':8s} {t[0]:12.1f} {t[1]:12.1f}   (torch {torch.__version__}"
          f"{', no checkpoint' if args.no_checkpoint else ''})")
    if s:
        print(f"{'ratio':8s} {t[0] / s[0]:11.1f}x {t[1] / s[1]:11.1f}x   (PyTorch time / strata time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
