"""`strata module-run` from Python: safetensors files (written and read here
with struct and numpy, so the `safetensors` package is not needed), one run
of the command, and the comparison the parity tests share.
"""
import json
import os
import struct
import subprocess

import numpy as np
import torch


def write_safetensors(path, tensors):
    """tensors: name -> torch tensor or numpy array, stored as F32 in order."""
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)  # keeps the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    """name -> float64 torch tensor (F32 and BF16 files)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        if info["dtype"] == "F32":
            a = np.frombuffer(data[b:e], dtype="<f4").astype(np.float64)
        elif info["dtype"] == "BF16":
            a = (np.frombuffer(data[b:e], dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {info['dtype']} not handled")
        out[name] = torch.from_numpy(a.copy()).reshape(info["shape"])
    return out


def f32(t):
    """The float32 value of t (what strata reads), kept in float64 for the reference."""
    return t.detach().to(torch.float32).to(torch.float64)


def module_run(strata, tmp, kind, params, inputs, opts=(), tag="case"):
    """Runs `strata module-run`; returns (exit code, stderr, outputs or None)."""
    p, x, o = (os.path.join(tmp, f"{tag}.{what}.safetensors") for what in ("params", "input", "out"))
    write_safetensors(p, params)
    write_safetensors(x, inputs)
    if os.path.exists(o):
        os.remove(o)
    cmd = [strata, "module-run", "--kind", kind, "--params", p, "--input", x, "-o", o, "--threads", "2"]
    for kv in opts:
        cmd += ["--opt", kv]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, r.stderr, (read_safetensors(o) if r.returncode == 0 and os.path.exists(o) else None)


class Checker:
    """Compares tensors to tol x the reference's largest magnitude; collects failures."""

    def __init__(self, tol):
        self.tol, self.failures, self.worst = tol, [], 0.0

    def __call__(self, case, what, got, want):
        want = want.detach().to(torch.float64)
        if got is None:
            self.failures.append(f"{case}: strata wrote no '{what}'")
            print(f"  {what:28s} MISSING")
            return
        if tuple(got.shape) != tuple(want.shape):
            self.failures.append(f"{case}: '{what}' has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
            print(f"  {what:28s} shape {tuple(got.shape)} != {tuple(want.shape)}")
            return
        err = (got - want).abs().max().item() if want.numel() else 0.0
        ref = want.abs().max().item() if want.numel() else 0.0
        rel = err / max(ref, 1e-30)
        self.worst = max(self.worst, rel)
        ok = err <= self.tol * max(ref, 1e-30)
        print(f"  {what:28s} max |diff| {err:.2e} of {ref:.2e} (rel {rel:.1e})  {'ok' if ok else 'FAIL'}")
        if not ok:
            self.failures.append(f"{case} {what}: {err:.3e} > {self.tol} x {ref:.3e}")
