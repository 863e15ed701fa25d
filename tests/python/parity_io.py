"""What the PyTorch parity tests (and bench/*_vs_torch.py) share.

- safetensors files, read and written here with struct and numpy (the
  `safetensors` package is not needed): `write_safetensors` (F32),
  `read_safetensors` (F32, BF16, F16 decoded to a torch dtype),
  `read_safetensors_raw` (dtype, shape and the stored bytes);
- the command line of every test, `test_X.py STRATA_BINARY`: no torch or
  numpy -> exit 77 (skipped, on import of this module); a missing binary, or
  a missing tool expected beside it -> exit 1; `parity_main` runs the cases,
  counts the failed ones and prints the summary;
- running strata: `run_strata` (any subcommand, the error output shown when
  it fails), `module_run` (`strata module-run` on tensors) and
  `unshuffled_batch` (the rows `strata train --shuffle off` reads);
- `Checker`: max |got - want| against tol x the reference's largest
  magnitude, failures collected rather than raised.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

SKIPPED = 77
_NP_OF = {"F32": "<f4", "BF16": "<u2", "F16": "<f2"}


# ---------------------------------------------------------------- safetensors

def write_safetensors(path, tensors):
    """tensors: name -> torch tensor, numpy array or number; stored as F32 in order."""
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        a = t.detach().cpu().to(torch.float64).numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)  # keeps the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors_raw(path):
    """name -> (dtype string, shape list, the tensor's bytes as stored)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], body[b:e])
    return out


def read_safetensors(path, dtype=torch.float64):
    """name -> torch tensor of `dtype` (exact for F32 into float32 or float64)."""
    out = {}
    for name, (dt, shape, raw) in read_safetensors_raw(path).items():
        if dt not in _NP_OF:
            raise ValueError(f"{path}: tensor {name}: dtype {dt} not handled")
        a = np.frombuffer(raw, dtype=_NP_OF[dt])
        a = (a.astype(np.uint32) << 16).view(np.float32) if dt == "BF16" else a.astype(np.float32)
        out[name] = torch.from_numpy(a).to(dtype).reshape(shape)
    return out


def f32(t):
    """The float32 value of t (what strata reads), kept in float64 for the reference."""
    return t.detach().to(torch.float32).to(torch.float64)


# ------------------------------------------------------------- running strata

def run_strata(strata, *args, quiet=True):
    """Runs `strata ARGS...`; raises with its error output when it fails.
    quiet: progress lines on stderr are not shown."""
    r = subprocess.run([strata, *map(str, args)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE if quiet else None, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"strata {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr or ''}")
    return r.stdout


def module_run(strata, tmp, check, case, kind, params, inputs, opts=(), tag="case"):
    """Runs `strata module-run --kind KIND` on params and inputs (name ->
    tensor) with --opt key=value for each of opts; returns its outputs (name
    -> float64 tensor), or None after recording the failure in check."""
    p, x, o = (os.path.join(tmp, f"{tag}.{what}.safetensors") for what in ("params", "input", "out"))
    write_safetensors(p, params)
    write_safetensors(x, inputs)
    if os.path.exists(o):
        os.remove(o)
    cmd = [strata, "module-run", "--kind", kind, "--params", p, "--input", x, "-o", o, "--threads", "2"]
    for kv in opts:
        cmd += ["--opt", kv]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode == 0 and os.path.exists(o):
        return read_safetensors(o)
    print(r.stderr)
    why = f" (strata has no {kind} module)" if "unknown module kind" in r.stderr else ""
    check.fail(f"{case}: strata module-run failed (exit {r.returncode}){why}: {r.stderr.strip()}")
    return None


def unshuffled_batch(tokens, step, B, T):
    """The token rows [B, T + 1] (int64) of 0-based `step` as `strata train
    --shuffle off` reads them from the token array `tokens`: row r starts at
    token (step B + r) T, wrapping around the end."""
    idx = (np.arange(B)[:, None] + step * B) * T + np.arange(T + 1)[None, :]
    return torch.from_numpy(np.asarray(tokens)[idx % len(tokens)].astype(np.int64))


def tool_beside(strata, name):
    """A binary built next to strata (strata_tests, ctx_module_io, ...)."""
    return os.path.join(os.path.dirname(os.path.abspath(strata)), name)


# ------------------------------------------------------------------ checking

class Checker:
    """Compares tensors to tol x the reference's largest magnitude (+ atol); collects failures."""

    def __init__(self, tol):
        self.tol, self.failures, self.worst = tol, [], 0.0

    def fail(self, message):
        self.failures.append(message)

    def __call__(self, case, what, got, want, tol=None, atol=0.0):
        tol = self.tol if tol is None else tol
        want = want.detach().to(torch.float64)
        if got is None:
            self.fail(f"{case}: strata wrote no '{what}'")
            print(f"  {what:28s} MISSING")
            return
        got = got.detach().to(torch.float64)
        if tuple(got.shape) != tuple(want.shape):
            self.fail(f"{case}: '{what}' has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
            print(f"  {what:28s} shape {tuple(got.shape)} != {tuple(want.shape)}")
            return
        err = (got - want).abs().max().item() if want.numel() else 0.0
        ref = want.abs().max().item() if want.numel() else 0.0
        if err != err:  # NaN anywhere
            err = float("inf")
        rel = err / max(ref, 1e-30)
        self.worst = max(self.worst, rel)
        ok = err <= tol * max(ref, 1e-30) + atol
        print(f"  {what:28s} max |diff| {err:.2e} of {ref:.2e} (rel {rel:.1e})  {'ok' if ok else 'FAIL'}")
        if not ok:
            self.fail(f"{case} {what}: {err:.3e} > {tol} x {ref:.3e}" + (f" + {atol:g}" if atol else ""))


# ------------------------------------------------------------- the test's main

def parity_main(doc, cases, run_case, tol, tool=None, threads=2):
    """The command line of a parity test; returns its exit code.

    argv: STRATA_BINARY. tool: the name of a binary beside it that the cases
    run instead (it must exist). For each case (index i),
    run_case(binary, tmp, case, i, check) compares through `check` (a
    Checker(tol)); an exception in a case is a failure of that case. Prints
    every failure, the worst relative error and "P passed, F failed"."""
    if len(sys.argv) != 2:
        print(doc)
        return 2
    binary = sys.argv[1] if tool is None else tool_beside(sys.argv[1], tool)
    if not os.path.exists(binary):
        print(f"FAIL: {binary} not found (build it first)")
        return 1
    torch.set_num_threads(threads)
    check = Checker(tol)
    failed_cases = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases):
            before = len(check.failures)
            try:
                run_case(binary, tmp, case, i, check)
            except Exception as e:  # noqa: BLE001  (reported as the case's failure)
                check.fail(f"{case}: {type(e).__name__}: {e}")
            failed_cases += len(check.failures) > before
    for f in check.failures:
        print("FAIL:", f)
    print(f"worst relative error {check.worst:.2e} (tolerance {tol:g})")
    print(f"{len(cases) - failed_cases} passed, {failed_cases} failed")
    return 1 if check.failures else 0
