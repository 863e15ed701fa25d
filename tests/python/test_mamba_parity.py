#!/usr/bin/env python3
"""Mamba mixer parity with PyTorch (ref_mamba.py, mamba_simple semantics).

Random parameters (A_log = ln(n+1) plus noise, softplus(dt bias) in
[1e-3, 0.1]), two sequences of T in {1, 2, 5, 37} rows, d_model 16 / 32,
d_state 4 / 16, d_conv 4, expand 2, and an output gradient go through
`strata module-run --kind mamba`. Its output, token-by-token decode, final
conv state [B, E, k_c] (the last k_c pre-conv inputs x, oldest first,
zero-padded on the left when T < k_c: mamba_simple's conv_state), final SSM
state [B, E, N] and every gradient must match the float64 torch reference to
1e-5 of the reference's largest magnitude. A strata without the mamba kind
fails this test (it is not skipped).

The reference checks itself first: its decode against its forward, and its
chunked closed-form scan (what bench/samba_vs_torch.py times) against the
step-by-step one, outputs and gradients.

Usage: test_mamba_parity.py STRATA_BINARY   (exit 77 = skipped: no torch)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_io import f32, module_run, parity_main, torch  # noqa: E402  (exit 77 without torch)
from ref_mamba import mamba_decode, mamba_forward, mamba_params  # noqa: E402

B, D_CONV, EXPAND = 2, 4, 2
TOL = 1e-5
CASES = [(d, n, T) for (d, n) in ((16, 4), (32, 16)) for T in (1, 2, 5, 37)]  # d_model, d_state, T


def check_reference(p, x, dy, y, conv_state, ssm_state):
    """The reference's decode and its chunked scan against its sequential forward."""
    with torch.no_grad():
        y_step, conv_step, ssm_step = mamba_decode(p, x)
    assert (y_step - y).abs().max() <= 1e-12 * max(1.0, y.abs().max().item())
    assert (conv_step - conv_state).abs().max() <= 1e-12 and (ssm_step - ssm_state).abs().max() <= 1e-12
    grads = [t.grad.clone() for t in (x, *p.values())]
    # The last one cuts chunks early (the overflow guard) by lowering its threshold.
    for chunk, checkpoint, limit in ((3, False, 30.0), (8, True, 30.0), (16, False, 0.05)):
        for t in (x, *p.values()):
            t.grad = None
        yc, _, hc = mamba_forward(p, x, chunk=chunk, checkpoint=checkpoint, max_log_decay=limit)
        (yc * dy).sum().backward()
        scale = max(1.0, y.abs().max().item())
        assert (yc - y).abs().max() <= 1e-12 * scale and (hc - ssm_state).abs().max() <= 1e-12 * scale, chunk
        for g, t in zip(grads, (x, *p.values())):
            assert (t.grad - g).abs().max() <= 1e-11 * max(1.0, g.abs().max().item()), chunk
    for g, t in zip(grads, (x, *p.values())):
        t.grad = g
    return y_step


def run_case(strata, tmp, case, index, check):
    d_model, d_state, T = case
    seed = 200 + index
    g = torch.Generator().manual_seed(seed)
    p = {k: f32(v).requires_grad_() for k, v in mamba_params(d_model, d_state, D_CONV, EXPAND, generator=g).items()}
    x = f32(torch.randn(B, T, d_model, generator=g, dtype=torch.float64)).requires_grad_()
    dy = f32(torch.randn(B, T, d_model, generator=g, dtype=torch.float64))
    y, conv_state, ssm_state = mamba_forward(p, x)
    (y * dy).sum().backward()
    y_step = check_reference(p, x, dy, y, conv_state, ssm_state)

    # Half the cases give the shapes as options, the others leave them to the tensor shapes.
    opts = [f"d_model={d_model}", f"d_state={d_state}", f"d_conv={D_CONV}", f"expand={EXPAND}"] if seed % 2 else []
    name = f"d_model={d_model} d_state={d_state} T={T}"
    print(name)
    out = module_run(strata, tmp, check, name, "mamba", p, {"input": x, "dy": dy}, opts, tag=f"mamba{seed}")
    if out is None:
        return
    check(name, "output", out.get("output"), y)
    check(name, "output_step", out.get("output_step"), y_step)
    check(name, "final_conv_state", out.get("final_conv_state"), conv_state)
    check(name, "final_ssm_state", out.get("final_ssm_state"), ssm_state)
    check(name, "grad.input", out.get("grad.input"), x.grad)
    for n, t in p.items():
        check(name, "grad." + n, out.get("grad." + n), t.grad)


def main():
    return parity_main(__doc__, CASES, run_case, TOL)


if __name__ == "__main__":
    sys.exit(main())
