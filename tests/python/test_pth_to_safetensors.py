#!/usr/bin/env python3
"""scripts/pth_to_safetensors.py against torch.save files in lit-gpt layout.

A random tiny-samba state dict under lit-gpt's names (BF16 matrices, F32 norms,
A_log and D, the tied lm_head sharing wte's storage) is saved the way lit-gpt's
pretrain.py saves it ({"model": ..., "optimizer": ..., "iter_num": ...}, names
behind Fabric's _forward_module. prefix) and, a second time, as a plain state
dict with a DDP module. prefix in the legacy (non-zip) format. A pickle that
would call a function while loading must be refused. The script's output,
read back with the tests' own reader (parity_io.py), must hold every tensor
with its name, dtype, shape and bits, and `strata convert --from litgpt`
must accept it.

Usage: test_pth_to_safetensors.py STRATA_BINARY   (exit 77 = skipped: no torch)
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_io import read_safetensors_raw, torch  # noqa: E402  (exit 77 without torch)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "pth_to_safetensors.py")
NAMES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}

# tiny-samba: vocab 512, d 64, d_p 128, 4 heads / 2 KV heads (h_d 16); layer 0
# Mamba (E 128, N 16, R 4, k_c 4), layer 1 sliding-window attention.
V, D, F, E, N, R, K, HD = 512, 64, 128, 128, 16, 4, 4, 16


def tiny_samba(g):
    def mat(*shape):
        return torch.randn(*shape, generator=g).to(torch.bfloat16)

    def vec(*shape):
        return torch.randn(*shape, generator=g)

    sd = {"transformer.wte.weight": mat(V, D)}
    for i in range(2):
        p = f"transformer.h.{i}."
        sd[p + "norm_1.weight"] = vec(D)
        if i == 0:
            a = p + "attn."
            sd.update({a + "in_proj.weight": mat(2 * E, D), a + "conv1d.weight": vec(E, 1, K), a + "conv1d.bias": vec(E),
                       a + "x_proj.weight": mat(R + 2 * N, E), a + "dt_proj.weight": mat(E, R),
                       a + "dt_proj.bias": vec(E), a + "A_log": vec(E, N), a + "D": vec(E),
                       a + "out_proj.weight": mat(D, E)})
        else:
            sd[p + "attn.attn.weight"] = mat((4 + 2 * 2) * HD, D)
            sd[p + "attn.proj.weight"] = mat(D, D)
        sd[p + "norm_2.weight"] = vec(D)
        for w, shape in (("w1", (F, D)), ("w2", (F, D)), ("w3", (D, F))):
            sd[p + f"mlp.swiglu.{w}.weight"] = mat(*shape)
    sd["transformer.ln_f.weight"] = vec(D)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied: the same storage, as in lit-gpt
    return sd


class Harmless:
    def __reduce__(self):  # unpickling would call os.getpid()
        return (os.getpid, ())


def same_bits(t, raw):
    """t's bytes (contiguous, little-endian as on x86) equal the stored ones."""
    view = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}[t.dtype]
    return t.contiguous().view(view).numpy().tobytes() == raw


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def main():
    strata = sys.argv[1] if len(sys.argv) > 1 else None
    failures = []
    g = torch.Generator().manual_seed(1)
    sd = tiny_samba(g)
    with tempfile.TemporaryDirectory() as tmp:
        code, out, err = run([sys.executable, SCRIPT, "--help"])
        if code != 0 or "--samba-config" not in out:
            failures.append(f"--help: exit {code}, usage missing: {out}{err}")
        cases = [
            ("lit-gpt pretrain checkpoint", "fabric.pth",
             {"model": {"_forward_module." + k: v for k, v in sd.items()},
              "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 4e-4}]},
              "hparams": {"lr": 4e-4}, "iter_num": 3, "step_count": 1}, True),
            ("plain state dict, legacy format", "ddp.pt", {"module." + k: v for k, v in sd.items()}, False),
        ]
        for what, fname, obj, zipped in cases:
            src, dst = os.path.join(tmp, fname), os.path.join(tmp, fname + ".safetensors")
            torch.save(obj, src, _use_new_zipfile_serialization=zipped)
            code, _, err = run([sys.executable, SCRIPT, src, "-o", dst])
            if code != 0:
                failures.append(f"{what}: script failed (exit {code}): {err}")
                continue
            got = read_safetensors_raw(dst)
            if sorted(got) != sorted(sd):
                failures.append(f"{what}: names differ: {sorted(set(got) ^ set(sd))}")
                continue
            for name, t in sd.items():
                dt, shape, raw = got[name]
                if NAMES.get(dt) != t.dtype or shape != list(t.shape) or not same_bits(t, raw):
                    failures.append(f"{what}: tensor {name}: {dt} {shape} != {t.dtype} {list(t.shape)} or bits differ")
            print(f"{what}: {len(got)} tensors equal")
            if strata and os.path.exists(strata):
                outdir = os.path.join(tmp, fname + ".strata")
                code, _, err = run([strata, "convert", "--from", "litgpt", "--samba-config", "tiny-samba",
                                    "-m", dst, "-o", outdir])
                if code != 0:
                    failures.append(f"{what}: strata convert --from litgpt failed: {err.strip()}")
        # A pickle that would call a function while loading is refused, naming it.
        src = os.path.join(tmp, "evil.pth")
        torch.save({"model": {"a": torch.ones(2)}, "x": Harmless()}, src)
        code, _, err = run([sys.executable, SCRIPT, src, "-o", os.path.join(tmp, "evil.safetensors")])
        if code == 0 or "getpid" not in err or "--trust-pickle" not in err:
            failures.append(f"a pickle with a function call: exit {code}, {err.strip()}")
        # Names the script must not touch when asked to keep them.
        src, dst = os.path.join(tmp, "keep.pth"), os.path.join(tmp, "keep.safetensors")
        torch.save({"module.a": torch.ones(2)}, src)
        code, _, err = run([sys.executable, SCRIPT, src, "-o", dst, "--keep-prefix"])
        if code != 0 or list(read_safetensors_raw(dst)) != ["module.a"]:
            failures.append(f"--keep-prefix: exit {code} {err}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
