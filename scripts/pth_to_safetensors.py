#!/usr/bin/python3
"""Convert a PyTorch checkpoint (torch.save: a lit-gpt / microsoft/Samba .pth,
an HF pytorch_model.bin) into a .safetensors file that strata reads.

    /usr/bin/python3 scripts/pth_to_safetensors.py IN.pth -o OUT.safetensors
    build/strata convert --from litgpt --samba-config Samba_421M -m OUT.safetensors -o samba-421m

The state dict is the checkpoint's "model" entry (what lit-gpt's pretrain.py
saves, beside the optimizer state), else its "state_dict" entry, else the
checkpoint itself. A prefix every name shares (_forward_module., module.,
_orig_mod.: wrappers of Fabric, DDP and torch.compile) is removed unless
--keep-prefix. Tensors keep their dtype (BF16 stays BF16) and bits; a tensor
stored under two names (a tied lm_head) is written under both. Entries that
are not tensors are skipped with a note.

Runs with Debian's python3-torch (/usr/bin/python3). The safetensors format is
written here with struct and json, so the `safetensors` package is not needed.
The pickle is read by an unpickler that builds only tensors, storages, dtypes
and plain containers, so a checkpoint cannot run code while it loads
(torch 1.13's weights_only=True refuses the floats of lit-gpt's saved
hyper-parameters); --trust-pickle uses the ordinary unpickler instead.
"""
import argparse
import io
import json
import os
import pickle
import struct
import sys
import types

STRIPPED_PREFIXES = ("_forward_module.", "module.", "_orig_mod.")


def dtype_names(torch):
    return {
        torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
        torch.uint8: "U8", torch.bool: "BOOL",
    }


def restricted_pickle(torch):
    """A pickle module for torch.load whose globals are only what tensors are
    made of; anything else is an error naming it."""
    allowed = {
        ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
        ("torch", "Size"), ("torch", "device"), ("torch", "Tensor"), ("torch.nn.parameter", "Parameter"),
        ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2"),
    }

    def ok(module, name):
        if (module, name) in allowed:
            return True
        if module in ("torch", "torch.storage") and name.endswith("Storage"):
            return True
        return module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if not ok(module, name):
                raise pickle.UnpicklingError(f"the checkpoint needs '{module}.{name}', which is not part of a tensor")
            return super().find_class(module, name)

    m = types.ModuleType("restricted_pickle")
    m.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
    m.Unpickler = Unpickler
    m.load = lambda f, **kw: Unpickler(f, **kw).load()
    m.loads = lambda b, **kw: Unpickler(io.BytesIO(b), **kw).load()
    return m


def torch_load(path, torch, **kwargs):
    try:
        return torch.load(path, map_location="cpu", weights_only=False, **kwargs)
    except TypeError:  # a torch without weights_only
        return torch.load(path, map_location="cpu", **kwargs)


def load(path, trust, torch):
    if trust:
        return torch_load(path, torch)
    restricted = restricted_pickle(torch)
    # torch 1.13's load replaces a given pickle_module by its own module-global
    # `pickle`, so that one is swapped too while loading.
    ser, saved = torch.serialization, torch.serialization.pickle
    ser.pickle = restricted
    try:
        return torch_load(path, torch, pickle_module=restricted)
    finally:
        ser.pickle = saved


def state_dict_of(ckpt, torch):
    if isinstance(ckpt, dict):
        for key in ("model", "state_dict"):
            inner = ckpt.get(key)
            if isinstance(inner, dict) and any(torch.is_tensor(v) for v in inner.values()):
                return inner, key
        return ckpt, None
    if hasattr(ckpt, "state_dict"):  # a whole module was saved
        return ckpt.state_dict(), None
    sys.exit(f"error: the checkpoint is a {type(ckpt).__name__}, not a state dict")


def strip_prefixes(names):
    """The prefix shared by every name (repeatedly: _forward_module._orig_mod.)."""
    prefix = ""
    changed = True
    while changed and names:
        changed = False
        for p in STRIPPED_PREFIXES:
            if all(n.startswith(prefix + p) for n in names):
                prefix += p
                changed = True
    return prefix


def tensor_bytes(t, torch):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: the same 16 bits as int16
        return t.reshape(-1).view(torch.int16).numpy().tobytes()
    return t.reshape(-1).numpy().tobytes()


def write_safetensors(path, tensors, metadata, torch):
    """tensors: [(name, tensor)]. Larger elements first, so every tensor starts
    aligned to its element size (the header is padded to 8 bytes)."""
    names = dtype_names(torch)
    order = sorted(range(len(tensors)), key=lambda i: (-tensors[i][1].element_size(), i))
    header, blobs, offset = {}, [], 0
    for i in order:
        name, t = tensors[i]
        if t.dtype not in names:
            sys.exit(f"error: tensor '{name}' has dtype {t.dtype}, which safetensors cannot hold")
        data = tensor_bytes(t, torch)
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Usage: /usr/bin/python3 scripts/pth_to_safetensors.py IN.pth -o OUT.safetensors; then "
        "strata convert --from litgpt --samba-config NAME -m OUT.safetensors -o DIR (docs/formats.md).",
    )
    ap.add_argument("input", help="a torch.save file (.pth, .pt, .bin, .ckpt)")
    ap.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    ap.add_argument("--keep-prefix", action="store_true",
                    help="keep a shared _forward_module./module./_orig_mod. prefix on the names")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="unpickle anything (the ordinary torch.load): only for checkpoints you trust")
    args = ap.parse_args(argv)
    if sys.byteorder != "little":
        sys.exit("error: safetensors is little-endian; run this on a little-endian machine")
    try:
        import torch
    except ImportError:
        sys.exit("error: PyTorch is not installed for this interpreter (Debian: apt-get install python3-torch, "
                 "then run with /usr/bin/python3)")

    try:
        ckpt = load(args.input, args.trust_pickle, torch)
    except Exception as e:  # noqa: BLE001 (torch raises many kinds)
        hint = "" if args.trust_pickle else " (if you trust the file, --trust-pickle loads any pickle)"
        sys.exit(f"error: {args.input}: cannot load: {str(e).splitlines()[0] if str(e) else type(e).__name__}{hint}")
    sd, key = state_dict_of(ckpt, torch)
    skipped = [k for k, v in sd.items() if not torch.is_tensor(v)]
    items = [(k, v) for k, v in sd.items() if torch.is_tensor(v)]
    if not items:
        sys.exit(f"error: {args.input}: no tensors in the state dict")
    prefix = "" if args.keep_prefix else strip_prefixes([k for k, _ in items])
    items = [(k[len(prefix):], v) for k, v in items]
    write_safetensors(args.output, items, {"format": "pt"}, torch)
    where = f" (the checkpoint's '{key}' entry)" if key else ""
    note = f", prefix '{prefix}' removed" if prefix else ""
    print(f"wrote {args.output}: {len(items)} tensors{where}{note}", file=sys.stderr)
    if skipped:
        print(f"note: skipped {len(skipped)} entries that are not tensors: {', '.join(map(str, skipped[:8]))}"
              + (" ..." if len(skipped) > 8 else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
