#!/usr/bin/env python3
"""Mamba mixer parity with PyTorch (ref_mamba.py, mamba_simple semantics).

Random parameters (A_log = ln(n+1) plus noise, softplus(dt bias) in
[1e-3, 0.1]), two sequences of T in {1, 2, 5, 37} rows, d_model 16 / 32,
d_state 4 / 16, d_conv 4, expand 2, and an output gradient go through
`strata module-run --kind mamba`. Its output, token-by-token decode, final
conv state (the last k_c pre-conv inputs, zero-padded, as the reference keeps
them: [B, E, k_c]; or strata's last k_c - 1 of them), final SSM state
[B, E, N] and every gradient must match the float64 torch reference to
1e-5 of the reference's largest magnitude. A strata without the mamba kind
fails this test (it is not skipped).

Usage: test_mamba_parity.py STRATA_BINARY   (exit 77 = skipped: no torch or no binary)
"""
import os
import sys
import tempfile

try:
    import numpy as np  # noqa: F401  (module_run_io needs it)
    import torch
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from module_run_io import Checker, f32, module_run  # noqa: E402
from ref_mamba import mamba_decode, mamba_forward, mamba_params  # noqa: E402

B, D_CONV, EXPAND = 2, 4, 2
TOL = 1e-5
CASES = [(d, n, T) for (d, n) in ((16, 4), (32, 16)) for T in (1, 2, 5, 37)]  # d_model, d_state, T


def run_case(strata, tmp, case, seed, check):
    d_model, d_state, T = case
    g = torch.Generator().manual_seed(seed)
    p = {k: f32(v).requires_grad_() for k, v in mamba_params(d_model, d_state, D_CONV, EXPAND, generator=g).items()}
    x = f32(torch.randn(B, T, d_model, generator=g, dtype=torch.float64)).requires_grad_()
    dy = f32(torch.randn(B, T, d_model, generator=g, dtype=torch.float64))
    y, conv_state, ssm_state = mamba_forward(p, x)
    (y * dy).sum().backward()
    with torch.no_grad():
        y_step, conv_step, ssm_step = mamba_decode(p, x)
    # The reference's own decode must agree with its forward (a check of the reference).
    assert (y_step - y).abs().max() <= 1e-12 * max(1.0, y.abs().max().item())
    assert (conv_step - conv_state).abs().max() <= 1e-12 and (ssm_step - ssm_state).abs().max() <= 1e-12

    # Half the cases give the shapes as options, the others leave them to the tensor shapes.
    opts = [f"d_model={d_model}", f"d_state={d_state}", f"d_conv={D_CONV}", f"expand={EXPAND}"] if seed % 2 else []
    name = f"d_model={d_model} d_state={d_state} T={T}"
    print(name)
    code, err, out = module_run(strata, tmp, "mamba", p, {"input": x, "dy": dy}, opts, tag=f"mamba{seed}")
    if out is None:
        print(err)
        why = " (strata has no mamba module)" if "unknown module kind" in err else ""
        check.failures.append(f"{name}: strata module-run failed (exit {code}){why}: {err.strip()}")
        return
    check(name, "output", out.get("output"), y)
    check(name, "output_step", out.get("output_step"), y_step)
    got_conv = out.get("final_conv_state")
    if got_conv is not None and got_conv.shape[-1] == D_CONV - 1:
        # strata's state keeps the last k_c - 1 inputs, all that later steps
        # read; the reference's oldest column is shifted out unread.
        print("  (final_conv_state holds the last d_conv - 1 inputs: compared with the reference's newest columns)")
        check(name, "final_conv_state[..., 1:]", got_conv, conv_state[..., 1:])
    else:
        check(name, "final_conv_state", got_conv, conv_state)
    check(name, "final_ssm_state", out.get("final_ssm_state"), ssm_state)
    check(name, "grad.input", out.get("grad.input"), x.grad)
    for n, t in p.items():
        check(name, "grad." + n, out.get("grad." + n), t.grad)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    strata = sys.argv[1]
    if not os.path.exists(strata):
        print(f"SKIP: strata binary {strata} not found (build it first)")
        return 77
    torch.set_num_threads(2)
    check = Checker(TOL)
    failed_cases = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(CASES):
            before = len(check.failures)
            run_case(strata, tmp, case, 200 + i, check)
            failed_cases += len(check.failures) > before
    for f in check.failures:
        print("FAIL:", f)
    print(f"worst relative error {check.worst:.2e} (tolerance {TOL:g})")
    print(f"{len(CASES) - failed_cases} passed, {failed_cases} failed")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
