#!/usr/bin/env python3
"""RetNet multi-scale retention parity with PyTorch (ref_linear_attention.py,
flash-linear-attention MultiScaleRetention semantics).

Layer: random parameters (normal, std 0.3; norm weight 1 + N(0, 0.09)), two
sequences of T in {1, 5, 37, 70} rows (70: more than one chunk of 64), d 16
/ 32, 1 / 2 heads (decay γ_h = 1 - 2^(-5-h) per head), expand_k 1, expand_v
2, GPT-NeoX RoPE on q and k per head (rope_theta 10000, one case 500), one
case with norm_eps 1e-6, and an output gradient go through `strata
module-run --kind retnet` (half the cases with --opt chunk=16). Its output,
token-by-token decode output_step, final_state [B, H, dk, dv], grad.input and
every grad.<param> must match the float64 reference to 1e-5 x max(1, the
reference's largest magnitude). An input draw is replaced while a plain
float32 torch run of the reference is off by more than 2e-6 (ill-conditioned:
q·k ≈ 0 on a sequence's first row, where the per-head RMSNorm turns the
rounding of q·k into errors of 1e-5 and more in any float32 implementation).

Core: `--kind retention-core` on q, k [B, T, H, dk], v [B, T, H, dv] (no
RoPE), with the default γ or a given gamma [H] (down to 0.01 and up to 1),
with and without initial_state [B, H, dk, dv], T in {1, 17, 70}, an empty
params file: output [B, T, H, dv] and final_state must match to 1e-5 (1e-4
with γ = 0.01).

The reference checks itself first: its invariants (self_check), and for
every case its GLA-core forms with the gate log γ (parallel, chunked with C
in 1, 3, 16, 64) and its decode against the γ recurrence, outputs, final
state and gradients, to 1e-12. A strata without these kinds fails this test
(it is not skipped).

Usage: test_retnet_parity.py STRATA_BINARY   (exit 77 = skipped: no torch)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_io import f32, module_run, parity_main, torch  # noqa: E402  (exit 77 without torch)
from ref_linear_attention import (case_runner, agree, core_forms_agree, draw_input, near, reference_outputs,  # noqa: E402
                                  retention_log_gate, retention_recurrent, retnet_forward, retnet_gamma,
                                  retnet_params, self_check)

B = 2
TOL, TOL_EXTREME = 1e-5, 1e-4
GAP = 2e-6  # the largest float32 error of the reference accepted in a draw
LAYER = [("retnet", d, H, T) for d in (16, 32) for H in (1, 2) for T in (1, 5, 37, 70)]
CORE = [("retention-core", T, H, dk, dv, gamma, init)  # T, heads, dk, dv, gamma (None: default), initial_state
        for (T, H, dk, dv, gamma, init) in ((1, 2, 8, 16, None, False), (17, 4, 8, 8, None, True),
                                            (70, 2, 16, 16, None, False), (70, 2, 16, 16, (0.5, 0.999), True),
                                            (17, 3, 8, 8, (0.9, 0.25, 1.0), True),
                                            (70, 4, 8, 16, (0.01, 0.9, 0.99, 1.0), True))]
CASES = [("reference",)] + LAYER + CORE



def layer_case(strata, tmp, case, index, check):
    _, d, H, T = case
    seed = 400 + index
    theta = 500.0 if (d, H, T) == (16, 2, 70) else 10000.0
    eps = 1e-6 if (d, H, T) == (32, 1, 37) else 1e-5
    g = torch.Generator().manual_seed(seed)
    p = {n: f32(t).requires_grad_() for n, t in retnet_params(d, H, 1.0, 2.0, generator=g).items()}
    kw = {"num_heads": H, "rope_theta": theta, "norm_eps": eps}
    x, dy = draw_input(g, p, B, T, d, retnet_forward, GAP, **kw)
    want = reference_outputs(retnet_forward, p, x, dy, **kw)

    # Options at their defaults are given in some cases and left out in others.
    opts = [f"num_heads={H}"]
    if index % 3 == 0:
        opts += ["expand_k=1", "expand_v=2"]
    if theta != 10000.0 or index % 3 == 0:
        opts.append(f"rope_theta={theta:g}")
    if eps != 1e-5:
        opts.append(f"norm_eps={eps:g}")
    if index % 2:
        opts.append("chunk=16")
    name = f"retnet d={d} H={H} T={T} " + " ".join(opts)
    print(name)
    out = module_run(strata, tmp, check, name, "retnet", p, {"input": x, "dy": dy}, opts, tag=f"retnet{seed}")
    if out is None:
        return
    for what, t in want.items():
        near(check, name, what, out.get(what), t, TOL)


def core_case(strata, tmp, case, index, check):
    _, T, H, dk, dv, gamma, init = case
    seed = 400 + index
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: f32(torch.randn(*s, generator=g, dtype=torch.float64))  # noqa: E731
    inputs = {"q": rnd(B, T, H, dk), "k": rnd(B, T, H, dk), "v": rnd(B, T, H, dv)}
    if gamma is not None:
        inputs["gamma"] = f32(torch.tensor(gamma, dtype=torch.float64))
    if init:
        inputs["initial_state"] = rnd(B, H, dk, dv)
    gam = inputs.get("gamma", retnet_gamma(H))
    q, k, v, S0 = inputs["q"], inputs["k"], inputs["v"], inputs.get("initial_state")
    o, S = retention_recurrent(q, k, v, gam, S0)
    o_g, S_g = core_forms_agree(q, k, v, retention_log_gate(gam, dk), S0, what="retention as GLA")
    agree("retention == GLA(log γ) output", o_g, o, 1e-12)
    agree("retention == GLA(log γ) final state", S_g, S, 1e-12)
    opts = ["chunk=16"] if index % 2 else []
    name = (f"retention-core T={T} H={H} dk={dk} dv={dv} gamma={gamma or 'default'}" +
            (" initial_state" if init else "") + "".join(" " + kv for kv in opts))
    print(name)
    out = module_run(strata, tmp, check, name, "retention-core", {}, inputs, opts, tag=f"retcore{seed}")
    if out is None:
        return
    tol = TOL_EXTREME if gamma is not None and min(gamma) < 0.1 else TOL
    for what, want in (("output", o), ("final_state", S)):
        near(check, name, what, out.get(what), want, tol)


run_case = case_runner("retnet", layer_case, core_case)


def main():
    return parity_main(__doc__, CASES, run_case, TOL)


if __name__ == "__main__":
    sys.exit(main())
