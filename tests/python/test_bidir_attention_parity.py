#!/usr/bin/env python3
"""Bidirectional attention (module bidir-attention) parity with PyTorch.

A float64 torch reference of the module: q, k, v, o projections without
bias, rotate_half RoPE on q and k at positions 0..T-1 of each sequence, and
softmax(q_h k_hᵀ / sqrt(head_dim)) v_h over every row of the sequence (no
causal mask). Random weights, inputs and an output gradient dy go through
`strata module-run --kind bidir-attention`; its output, the input gradient
and the gradient of every weight must match the reference to 1e-5 of the
reference's largest magnitude. Sequences of lengths 5, 9 and 1 each run
alone, and batches of several sequences run together (module-run takes
[B, T, D]: the sequences of one call share their length).

Two properties are checked on strata alone as well:
- batch independence: changing one sequence of a batch leaves the outputs
  and input gradients of the other sequences exactly as they were;
- non-causal: changing the last row of a sequence changes the output of
  every row of it, the first included.

Usage: test_bidir_attention_parity.py STRATA_BINARY   (exit 77 = skipped: no torch)
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_io import f32, module_run, parity_main, torch  # noqa: E402  (exit 77 without torch)
from ref_swa import apply_rope, rope_tables  # noqa: E402

KIND = "bidir-attention"
D, HEADS, HEAD_DIM = 32, 4, 8
TOL = 1e-5
# (what, sequences B, rows per sequence T, rope theta)
CASES = [("parity", 1, 5, 10000.0),
         ("parity", 1, 9, 10000.0),
         ("parity", 1, 1, 10000.0),
         ("parity", 3, 9, 10000.0),
         ("parity", 2, 6, 500000.0),
         ("parity", 4, 1, 10000.0),
         ("batch independence", 3, 7, 10000.0),
         ("non-causal", 1, 8, 10000.0)]


def bidir_attention(p, x, heads, theta):
    """x [B, T, D] -> y [B, T, D]: every row attends to every row of its sequence."""
    B, T, _ = x.shape
    wq, wk, wv, wo = (p[n + "_proj.weight"] for n in "qkvo")
    hd = wq.shape[0] // heads
    cos, sin = rope_tables(T, hd, theta, x.dtype)
    q = apply_rope((x @ wq.T).view(B, T, heads, hd), cos, sin)
    k = apply_rope((x @ wk.T).view(B, T, heads, hd), cos, sin)
    v = (x @ wv.T).view(B, T, heads, hd)
    a = torch.softmax(torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hd), dim=-1)
    o = torch.einsum("bhts,bshd->bthd", a, v).reshape(B, T, heads * hd)
    return o @ wo.T


def random_case(g, B, T):
    """Weights (the module's names), input x [B, T, D] and output gradient dy,
    float32 values held in float64."""
    def rnd(*shape, std):
        return f32(torch.randn(*shape, generator=g, dtype=torch.float64) * std)

    width = HEADS * HEAD_DIM
    p = {"q_proj.weight": rnd(width, D, std=D ** -0.5),
         "k_proj.weight": rnd(width, D, std=D ** -0.5),
         "v_proj.weight": rnd(width, D, std=D ** -0.5),
         "o_proj.weight": rnd(D, width, std=width ** -0.5)}
    return p, rnd(B, T, D, std=1.0), rnd(B, T, D, std=1.0)


def run_strata(strata, tmp, check, name, p, x, dy, theta, tag):
    opts = [f"num_heads={HEADS}", f"head_dim={HEAD_DIM}", f"rope_theta={theta}"]
    return module_run(strata, tmp, check, name, KIND, p, {"input": x, "dy": dy}, opts, tag=tag)


def compare_with_reference(check, name, out, p, x, dy, theta):
    """strata's output and gradients against the float64 reference's."""
    p = {n: t.clone().requires_grad_() for n, t in p.items()}
    x = x.clone().requires_grad_()
    y = bidir_attention(p, x, HEADS, theta)
    (y * dy).sum().backward()
    check(name, "output", out.get("output"), y)
    check(name, "grad.input", out.get("grad.input"), x.grad)
    for n, t in p.items():
        check(name, "grad." + n, out.get("grad." + n), t.grad)
    return y.detach()


def check_batch_independence(strata, tmp, check, name, p, x, dy, theta, out):
    """Sequence 1 replaced: the others' outputs and input gradients stay bit for bit."""
    g = torch.Generator().manual_seed(7)
    x2 = x.clone()
    x2[1] = f32(torch.randn(x.shape[1:], generator=g, dtype=torch.float64))
    out2 = run_strata(strata, tmp, check, name + " (sequence 1 replaced)", p, x2, dy, theta, tag="indep2")
    if out2 is None:
        return
    compare_with_reference(check, name + " (sequence 1 replaced)", out2, p, x2, dy, theta)
    others = [s for s in range(x.shape[0]) if s != 1]
    for what in ("output", "grad.input"):
        diff = (out2[what][others] - out[what][others]).abs().max().item()
        moved = (out2[what][1] - out[what][1]).abs().max().item()
        ok = diff == 0.0 and moved > 0.0
        print(f"  {what:28s} other sequences moved {diff:.2e}, sequence 1 moved {moved:.2e}  {'ok' if ok else 'FAIL'}")
        if diff != 0.0:
            check.fail(f"{name}: replacing sequence 1 changed '{what}' of sequences {others} by up to {diff:.3e}")
        if moved == 0.0:
            check.fail(f"{name}: replacing sequence 1 left its own '{what}' unchanged")


def check_non_causal(strata, tmp, check, name, p, x, dy, theta, out):
    """The last row changed: every row's output changes, the first's included,
    by the amounts the reference gives."""
    T = x.shape[1]
    g = torch.Generator().manual_seed(8)
    x2 = x.clone()
    x2[0, T - 1] = f32(torch.randn(D, generator=g, dtype=torch.float64))
    out2 = run_strata(strata, tmp, check, name + " (last row changed)", p, x2, dy, theta, tag="noncausal2")
    if out2 is None:
        return
    y2 = compare_with_reference(check, name + " (last row changed)", out2, p, x2, dy, theta)
    y = bidir_attention(p, x, HEADS, theta)
    moved = (out2["output"][0] - out["output"][0]).abs().amax(dim=-1)  # per row
    want = (y2[0] - y[0]).abs().amax(dim=-1)
    scale = y.abs().max().item()
    print(f"  rows' output change            {' '.join(f'{m:.1e}' for m in moved.tolist())}")
    for t in range(T):
        if moved[t].item() < 1e-3 * scale:
            check.fail(f"{name}: row {t}'s output moved only {moved[t].item():.3e} when row {T - 1} changed "
                       f"(reference: {want[t].item():.3e}); the module looks causal")
    check(name, "change of the first row", out2["output"][0, 0] - out["output"][0, 0], y2[0, 0] - y[0, 0])


def run_case(strata, tmp, case, index, check):
    what, B, T, theta = case
    g = torch.Generator().manual_seed(200 + index)
    p, x, dy = random_case(g, B, T)
    name = f"{what} B={B} T={T} theta={theta:g}"
    print(name)
    out = run_strata(strata, tmp, check, name, p, x, dy, theta, tag=f"case{index}")
    if out is None:
        return
    compare_with_reference(check, name, out, p, x, dy, theta)
    if what == "batch independence":
        check_batch_independence(strata, tmp, check, name, p, x, dy, theta, out)
    elif what == "non-causal":
        check_non_causal(strata, tmp, check, name, p, x, dy, theta, out)


def main():
    return parity_main(__doc__, CASES, run_case, TOL)


if __name__ == "__main__":
    sys.exit(main())
