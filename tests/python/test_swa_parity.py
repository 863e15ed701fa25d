#!/usr/bin/env python3
"""Sliding-window GQA attention parity with PyTorch (ref_swa.py).

For windows 1, 3, at least T and 0 (full), heads / KV heads 4/4, 4/2, 4/1
and two RoPE bases, random weights, a batch of two sequences and an output
gradient go through `strata module-run --kind attention --opt window=W`; its
output, token-by-token decode, final KV cache (the last min(T, w) rotated
keys and values) and every gradient must match a float64 torch reference
to 1e-5 of the reference's largest magnitude.

Usage: test_swa_parity.py STRATA_BINARY   (exit 77 = skipped: no torch)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_io import f32, module_run, parity_main, torch  # noqa: E402  (exit 77 without torch)
from ref_swa import swa_forward  # noqa: E402

D, HEAD_DIM, B = 32, 8, 2
TOL = 1e-5
# window, heads, kv heads, T, rope theta
CASES = [(w, h, kv, T, theta)
         for (T, theta) in ((7, 10000.0), (13, 500000.0))
         for w in (1, 3, T + 4, 0)
         for (h, kv) in ((4, 4), (4, 2), (4, 1))]


def run_case(strata, tmp, case, index, check):
    window, heads, kv_heads, T, theta = case
    seed = 100 + index
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std):
        return f32(torch.randn(*shape, generator=g, dtype=torch.float64) * std).requires_grad_()

    p = {"q_proj.weight": rnd(heads * HEAD_DIM, D, std=D ** -0.5),
         "k_proj.weight": rnd(kv_heads * HEAD_DIM, D, std=D ** -0.5),
         "v_proj.weight": rnd(kv_heads * HEAD_DIM, D, std=D ** -0.5),
         "o_proj.weight": rnd(D, heads * HEAD_DIM, std=(heads * HEAD_DIM) ** -0.5)}
    x = rnd(B, T, D, std=1.0)
    dy = f32(torch.randn(B, T, D, generator=g, dtype=torch.float64))
    y, k, v = swa_forward(p, x, heads, kv_heads, window, theta)
    (y * dy).sum().backward()

    opts = [f"window={window}", f"num_heads={heads}", f"rope_theta={theta}"]
    if seed % 2:  # also let head_dim and the KV heads come from the shapes alone
        opts = [f"window={window}", f"head_dim={HEAD_DIM}", f"rope_theta={theta}", f"num_kv_heads={kv_heads}"]
    name = f"window={window} heads={heads}/{kv_heads} T={T} theta={theta:g}"
    print(name)
    out = module_run(strata, tmp, check, name, "attention", p, {"input": x, "dy": dy}, opts, tag=f"swa{seed}")
    if out is None:
        return
    check(name, "output", out.get("output"), y)
    check(name, "output_step", out.get("output_step"), y)
    held = T if window == 0 else min(T, window)
    check(name, "final_k", out.get("final_k"), k[:, T - held:])
    check(name, "final_v", out.get("final_v"), v[:, T - held:])
    check(name, "grad.input", out.get("grad.input"), x.grad)
    for n, t in p.items():
        check(name, "grad." + n, out.get("grad." + n), t.grad)


def main():
    return parity_main(__doc__, CASES, run_case, TOL)


if __name__ == "__main__":
    sys.exit(main())
