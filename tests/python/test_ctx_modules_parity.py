#!/usr/bin/env python3
"""Parity of the context modules (AdaRMSNorm, token mixing, SE) with PyTorch.

A PyTorch implementation written from the formulas of docs/context-modules.md
(float64, autograd for the gradients; token mixing through torch's own
depthwise conv1d) against strata's modules run by the `ctx_module_io` tool on
the same random parameters, inputs and output gradients: outputs, decode
outputs (causal), input gradients and every parameter gradient must agree to
1e-5 of their largest magnitude, in both context modes.

Usage: test_ctx_modules_parity.py STRATA_BINARY   (exit 77 = skipped: no torch)
ctx_module_io is looked for beside STRATA_BINARY.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_io import np, parity_main, read_safetensors, torch, write_safetensors  # noqa: E402
import torch.nn.functional as F  # noqa: E402

D, ADA_RANK, TAPS, SE_REDUCTION, EPS = 16, 4, 3, 4, 1e-5
LENS = [6, 1, 9, 2]


def context_mean(z, mode):
    """Per row: prefix mean (causal) or whole-sequence mean (global) of z [T, D]."""
    if mode == "causal":
        return torch.cumsum(z, 0) / torch.arange(1, z.shape[0] + 1, dtype=z.dtype)[:, None]
    return z.mean(0, keepdim=True).expand_as(z)


def ada_rmsnorm(p, x, mode):
    xhat = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
    g = F.silu(context_mean(xhat, mode) @ p["m.ctx_down.weight"].T) @ p["m.ctx_up.weight"].T
    return p["m.weight"] * xhat * (1 + torch.tanh(g))


def token_mix(p, u, mode):
    k = p["m.weight"].shape[-1]
    padded = F.pad(u.T[None], (k - 1, 0))  # [1, D, k-1+T], zeros on the left
    return F.conv1d(padded, p["m.weight"], p["m.bias"], groups=u.shape[1])[0].T


def se(p, f, mode):
    h = F.relu(context_mean(f, mode) @ p["m.fc1.weight"].T + p["m.fc1.bias"])
    z = h @ p["m.fc2.weight"].T + p["m.fc2.bias"]
    return f * 2 * torch.sigmoid(z)


def random_params(kind, rng):
    n = lambda *shape, s=0.5: rng.normal(0, s, size=shape)
    if kind == "ada-rmsnorm":
        return {"m.weight": 1 + n(D, s=0.2), "m.ctx_down.weight": n(ADA_RANK, D, s=D ** -0.5),
                "m.ctx_up.weight": n(D, ADA_RANK)}
    if kind == "token-mix":
        w = n(D, 1, TAPS, s=0.3)
        w[:, 0, -1] += 1
        return {"m.weight": w, "m.bias": n(D, s=0.2)}
    h = D // SE_REDUCTION
    return {"m.fc1.weight": n(h, D, s=D ** -0.5), "m.fc1.bias": n(h, s=0.2), "m.fc2.weight": n(D, h),
            "m.fc2.bias": n(D, s=0.2)}


MODULES = {"ada-rmsnorm": ada_rmsnorm, "token-mix": token_mix, "se": se}
CASES = [(kind, mode) for kind in MODULES for mode in ("causal", "global")]
TOL = 1e-5


def run_case(tool, tmp, case, index, check):
    kind, mode = case
    fn = MODULES[kind]
    rng = np.random.default_rng(10 * (index // 2) + (mode == "global"))
    params = random_params(kind, rng)
    rows = sum(LENS)
    x, dy = rng.normal(0, 1, size=(rows, D)), rng.normal(0, 1, size=(rows, D))
    inp, out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
    write_safetensors(inp, {**params, "x": x, "dy": dy, "lens": np.array(LENS, dtype=np.float32)})
    subprocess.run([tool, kind, inp, out, f"hidden_size={D}", f"ada_rank={ADA_RANK}", f"tm_kernel={TAPS}",
                    f"se_reduction={SE_REDUCTION}", f"ctx_mode={mode}", f"rms_norm_eps={EPS}"], check=True)
    got = read_safetensors(out)

    # The float32 values strata saw, in float64.
    p = {k: torch.tensor(np.float32(v), dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(np.float32(x), dtype=torch.float64, requires_grad=True)
    y = torch.cat([fn(p, seq, mode) for seq in torch.split(xt, LENS)])
    (y * torch.tensor(np.float32(dy), dtype=torch.float64)).sum().backward()

    name = f"{kind} {mode}"
    print(name)
    check(name, "y", got.get("y"), y)
    if "y_decode" in got:
        check(name, "y_decode", got["y_decode"], y)
    check(name, "dx", got.get("dx"), xt.grad)
    for k, v in p.items():
        check(name, "grad of " + k, got.get("grad." + k), v.grad)


def main():
    return parity_main(__doc__, CASES, run_case, TOL, tool="ctx_module_io")


if __name__ == "__main__":
    sys.exit(main())
