#!/usr/bin/env python3
"""Training parity with PyTorch (Debian's python3-torch).

From the same initial weights (written by `strata init`) and the same batches
(`--shuffle off` on a raw uint16 token file), strata's per-step losses for 20
AdamW steps must equal PyTorch's to 1e-4 relative, and the first step's
gradients (recovered from strata's first-step optimizer state, m = (1-beta1) g
with clipping off) must match to 1e-4 of their largest magnitude.

Usage: test_train_parity.py STRATA_BINARY   (exit 77 = skipped: no torch)
"""
import json
import math
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

STEPS, B, T = 20, 4, 32
LR, MIN_LR, WARMUP, WD, B1, B2, EPS = 1e-3, 1e-4, 5, 0.1, 0.9, 0.95, 1e-8


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        b, e = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[b:e], dtype="<f4").copy()).reshape(info["shape"])
    return out


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(p, cfg, ids):
    D, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps = D // H, cfg["rms_norm_eps"]
    Bn, Tn = ids.shape
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.outer(torch.arange(Tn, dtype=torch.float32), inv)
    cos, sin = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
    x = p["model.embed_tokens.weight"][ids]
    mask = torch.full((Tn, Tn), float("-inf")).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        h = rms_norm(x, p[pre + "input_layernorm.weight"], eps)
        q = (h @ p[pre + "self_attn.q_proj.weight"].T).view(Bn, Tn, H, hd).transpose(1, 2)
        k = (h @ p[pre + "self_attn.k_proj.weight"].T).view(Bn, Tn, KV, hd).transpose(1, 2)
        v = (h @ p[pre + "self_attn.v_proj.weight"].T).view(Bn, Tn, KV, hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v
        x = x + att.transpose(1, 2).reshape(Bn, Tn, D) @ p[pre + "self_attn.o_proj.weight"].T
        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        g = torch.nn.functional.silu(h @ p[pre + "mlp.gate_proj.weight"].T) * (h @ p[pre + "mlp.up_proj.weight"].T)
        x = x + g @ p[pre + "mlp.down_proj.weight"].T
    h = rms_norm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    return h @ head.T


def lr_at(s):
    if s <= WARMUP:
        return LR * s / WARMUP
    if s >= STEPS:
        return MIN_LR
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * (s - WARMUP) / (STEPS - WARMUP)))


def main():
    strata = sys.argv[1]
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        init, run = os.path.join(tmp, "init"), os.path.join(tmp, "run")
        subprocess.run([strata, "init", "--preset", "tiny", "--dtype", "f32", "--seed", "5", "-o", init], check=True)
        cfg = json.load(open(os.path.join(init, "config.json")))
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, cfg["vocab_size"], size=5000).astype("<u2")
        data = os.path.join(tmp, "data.bin")
        tokens.tofile(data)
        common = ["--data", data, "--batch", str(B), "--seq", str(T), "--lr", str(LR), "--min-lr", str(MIN_LR),
                  "--warmup", str(WARMUP), "--wd", str(WD), "--shuffle", "off", "--threads", "2"]
        subprocess.run([strata, "train", "--init", init, "-o", run, "--steps", str(STEPS), "--clip", "1.0"] + common,
                       check=True, stderr=subprocess.DEVNULL)
        losses = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
        losses = [r["loss"] for r in losses if "loss" in r]
        run1 = os.path.join(tmp, "run1")
        subprocess.run([strata, "train", "--init", init, "-o", run1, "--steps", "1", "--clip", "0"] + common,
                       check=True, stderr=subprocess.DEVNULL)
        m1 = read_safetensors(os.path.join(run1, "checkpoint-1", "optimizer.safetensors"))

        params = {k: v.clone().requires_grad_(True) for k, v in read_safetensors(os.path.join(init, "model.safetensors")).items()}
        decay = [v for v in params.values() if v.dim() >= 2]
        no_decay = [v for v in params.values() if v.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=LR, betas=(B1, B2), eps=EPS, foreach=False)
        n = len(tokens)
        ref = []
        for step in range(1, STEPS + 1):
            m = step - 1
            rows = [[int(tokens[((m * B + r) * T + i) % n]) for i in range(T + 1)] for r in range(B)]
            batch = torch.tensor(rows, dtype=torch.long)
            logits = forward(params, cfg, batch[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            if step == 1:
                worst = 0.0
                for name, p in params.items():
                    g_strata = m1["optim.m." + name] / (1 - B1)
                    scale = p.grad.abs().max().item()
                    err = (g_strata - p.grad).abs().max().item()
                    worst = max(worst, err / max(scale, 1e-12))
                    assert err <= 1e-4 * scale + 1e-9, f"gradient of {name}: max error {err} vs max |g| {scale}"
                print(f"first-step gradients: worst error {worst:.2e} of the largest magnitude")
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            for gr in opt.param_groups:
                gr["lr"] = lr_at(step)
            opt.step()
            ref.append(loss.item())
        worst = max(abs(a - b) / abs(b) for a, b in zip(losses, ref))
        for s, (a, b) in enumerate(zip(losses, ref), 1):
            print(f"step {s:2d}  strata {a:.6f}  torch {b:.6f}")
        assert len(losses) == STEPS, losses
        assert worst <= 1e-4, f"loss mismatch: worst relative error {worst:.2e}"
        print(f"losses: worst relative error {worst:.2e}")
        print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
