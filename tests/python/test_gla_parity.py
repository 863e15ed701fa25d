#!/usr/bin/env python3
"""Gated linear attention (GLA) parity with PyTorch (ref_linear_attention.py,
flash-linear-attention GatedLinearAttention semantics: fused_chunk, no short
convolution, swish-gated RMSNorm).

Layer: random parameters (normal, std 0.3; gk_proj.1.bias spread over [-4, 6]
so the log gates logsigmoid(gk)/normaliser range from fast to slow decay),
two sequences of T in {1, 5, 37, 70} rows (70: more than one chunk of 64),
d 16 / 32, 1 / 2 heads, expand_k 0.5, expand_v 1, gate_low_rank_dim 4 (16
for d 32 with 2 heads), one case with gate_logit_normalizer 4 and one with
norm_eps 1e-6, and an output gradient go through `strata module-run --kind
gla` (half the cases with --opt chunk=16). Its output, token-by-token decode
output_step, final_state [B, H, dk, dv], grad.input and every grad.<param>
must match the float64 reference to 1e-5 x max(1, the reference's largest
magnitude). An input draw is replaced while a plain float32 torch run of the
reference is off by more than 2e-6 (ill-conditioned: q·k ≈ 0 on a
sequence's first row, where the per-head RMSNorm turns the rounding of q·k
into errors of 1e-5 and more in any float32 implementation).

Core: `--kind gla-core` on q, k [B, T, H, dk], v [B, T, H, dv] and log
gates gk [B, T, H, dk] used as they are (mild ones, or extreme ones:
logsigmoid(±30)/16, -8 and -30 per step, and a row at -8 in every channel),
with and without initial_state [B, H, dk, dv], T in {1, 17, 70}, an empty
params file: output [B, T, H, dv] and final_state must have no NaN and
match to 1e-5 (extreme gates: 1e-4).

The reference checks itself first: its invariants (self_check: retention ==
GLA with a constant gate, zero gates == causal linear attention, RoPE), and
for every case its parallel and chunked forms (C in 1, 3, 16, 64) and its
decode against the recurrent form, outputs, final state and gradients, to
1e-12. A strata without these kinds fails this test (it is not skipped).

Usage: test_gla_parity.py STRATA_BINARY   (exit 77 = skipped: no torch)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_io import f32, module_run, parity_main, torch  # noqa: E402  (exit 77 without torch)
from ref_linear_attention import (case_runner, core_forms_agree, draw_input, gla_forward, gla_params, near,  # noqa: E402
                                  reference_outputs, self_check)

B = 2
TOL, TOL_EXTREME = 1e-5, 1e-4
GAP = 2e-6  # the largest float32 error of the reference accepted in a draw
LAYER = [("gla", d, H, T) for d in (16, 32) for H in (1, 2) for T in (1, 5, 37, 70)]
CORE = [("gla-core", T, H, dk, dv, init, extreme)  # T, heads, dk, dv, initial_state given, extreme gates
        for (T, H, dk, dv, init, extreme) in ((1, 2, 8, 16, False, False), (1, 2, 8, 16, True, True),
                                              (17, 2, 8, 16, False, False), (17, 3, 16, 8, True, True),
                                              (70, 2, 8, 16, True, False), (70, 2, 16, 8, False, True),
                                              (70, 1, 16, 32, True, True))]
CASES = [("reference",)] + LAYER + CORE



def layer_case(strata, tmp, case, index, check):
    _, d, H, T = case
    seed = 300 + index
    r = 16 if (d, H) == (32, 2) else 4
    normalizer = 4.0 if (d, H, T) == (16, 2, 37) else 16.0
    eps = 1e-6 if (d, H, T) == (32, 1, 70) else 1e-5
    g = torch.Generator().manual_seed(seed)
    p = {n: f32(t).requires_grad_() for n, t in gla_params(d, H, 0.5, 1.0, r, generator=g).items()}
    kw = {"num_heads": H, "gate_logit_normalizer": normalizer, "norm_eps": eps}
    x, dy = draw_input(g, p, B, T, d, gla_forward, GAP, **kw)
    want = reference_outputs(gla_forward, p, x, dy, **kw)

    # Options at their defaults are given in some cases and left out in others.
    opts = [f"num_heads={H}"]
    if index % 3 == 0:
        opts += ["expand_k=0.5", "expand_v=1"]
    if r != 16 or index % 3 == 0:
        opts.append(f"gate_low_rank_dim={r}")
    if normalizer != 16.0:
        opts.append(f"gate_logit_normalizer={normalizer:g}")
    if eps != 1e-5:
        opts.append(f"norm_eps={eps:g}")
    if index % 2:
        opts.append("chunk=16")
    name = f"gla d={d} H={H} T={T} " + " ".join(opts)
    print(name)
    out = module_run(strata, tmp, check, name, "gla", p, {"input": x, "dy": dy}, opts, tag=f"gla{seed}")
    if out is None:
        return
    for what, t in want.items():
        near(check, name, what, out.get(what), t, TOL)


def core_gates(g, B, T, H, dk, extreme):
    """Log gates [B, T, H, dk] <= 0: logsigmoid(N(0, 9))/16, or with extreme values mixed in."""
    ls = torch.nn.functional.logsigmoid
    gates = ls(3 * torch.randn(B, T, H, dk, generator=g, dtype=torch.float64)) / 16
    if extreme:
        u = torch.rand(B, T, H, dk, generator=g, dtype=torch.float64)
        c = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
        gates = torch.where(u < 0.2, ls(c(-30.0)) / 16, gates)
        gates = torch.where((u >= 0.2) & (u < 0.4), ls(c(30.0)) / 16, gates)
        gates = torch.where((u >= 0.4) & (u < 0.45), c(-8.0), gates)
        gates = torch.where(u >= 0.98, c(-30.0), gates)
        gates[:, T // 2] = -8.0  # a row that nearly resets the state
    return gates


def core_case(strata, tmp, case, index, check):
    _, T, H, dk, dv, init, extreme = case
    seed = 300 + index
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: f32(torch.randn(*s, generator=g, dtype=torch.float64))  # noqa: E731
    inputs = {"q": rnd(B, T, H, dk), "k": rnd(B, T, H, dk), "v": rnd(B, T, H, dv),
              "gk": f32(core_gates(g, B, T, H, dk, extreme))}
    if init:
        inputs["initial_state"] = rnd(B, H, dk, dv)
    o, S = core_forms_agree(inputs["q"], inputs["k"], inputs["v"], inputs["gk"], inputs.get("initial_state"))
    opts = ["chunk=16"] if index % 2 else []
    name = (f"gla-core T={T} H={H} dk={dk} dv={dv}" + (" initial_state" if init else "") +
            (" extreme gates" if extreme else "") + "".join(" " + kv for kv in opts))
    print(name)
    out = module_run(strata, tmp, check, name, "gla-core", {}, inputs, opts, tag=f"glacore{seed}")
    if out is None:
        return
    tol = TOL_EXTREME if extreme else TOL
    for what, want in (("output", o), ("final_state", S)):
        got = out.get(what)
        if got is not None and torch.isnan(got).any():
            check.fail(f"{name}: NaN in '{what}'")
        near(check, name, what, got, want, tol)


run_case = case_runner("gla", layer_case, core_case)


def main():
    return parity_main(__doc__, CASES, run_case, TOL)


if __name__ == "__main__":
    sys.exit(main())
