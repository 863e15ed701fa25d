#!/usr/bin/env python3
"""Training throughput, strata vs PyTorch, side by side (run by hand, not a test).

  /usr/bin/python3 bench/train_vs_torch.py [--shape stories15m|dim512] [--precision f32|bf16] [--steps 4]
                                           [--threads 2]

Same model shape, same batch (8192 tokens per step), same thread count; F32,
or mixed precision (strata --precision bf16 against torch.autocast bf16).
Prints tokens/s of each (median over the steps after the first) and the ratio.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from test_train_parity import forward, read_safetensors  # noqa: E402

SHAPES = {
    # name: (config overrides, batch, seq)
    "stories15m": (dict(hidden_size=288, intermediate_size=768, num_hidden_layers=6, num_attention_heads=6,
                        num_key_value_heads=6, vocab_size=32000, max_position_embeddings=256,
                        tie_word_embeddings=True), 32, 256),
    "dim512": (dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                    num_key_value_heads=4, vocab_size=32000, max_position_embeddings=512,
                    tie_word_embeddings=False), 16, 512),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="stories15m", choices=SHAPES)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--strata", default=os.path.join(os.path.dirname(__file__), "..", "build", "strata"))
    args = ap.parse_args()
    over, B, T = SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([args.strata, "init", "--preset", "tiny", "--dtype", "f32", "-o", tmp + "/base"], check=True,
                       stderr=subprocess.DEVNULL)
        cfg = json.load(open(tmp + "/base/config.json"))
        cfg.update(over)
        cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
        json.dump(cfg, open(tmp + "/config.json", "w"))
        np.random.default_rng(0).integers(0, cfg["vocab_size"], size=B * T * (args.steps + 2) + 1).astype("<u2") \
            .tofile(tmp + "/data.bin")
        subprocess.run([args.strata, "train", "--config", tmp + "/config.json", "--data", tmp + "/data.bin",
                        "-o", tmp + "/run", "--steps", str(args.steps), "--batch", str(B), "--seq", str(T),
                        "--shuffle", "off", "--threads", str(args.threads), "--precision", args.precision],
                       check=True, stderr=subprocess.DEVNULL)
        rows = [json.loads(l) for l in open(tmp + "/run/metrics.jsonl")]
        strata_tok_s = statistics.median(r["tokens_per_s"] for r in rows[1:])
        params = {k: v.requires_grad_(True) for k, v in
                  read_safetensors(tmp + f"/run/checkpoint-{args.steps}/model.safetensors").items()}
    torch.set_num_threads(args.threads)
    opt = torch.optim.AdamW(list(params.values()), lr=1e-4, betas=(0.9, 0.95), foreach=False)
    times = []
    for step in range(args.steps):
        batch = torch.randint(0, cfg["vocab_size"], (B, T + 1))
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = forward(params, cfg, batch[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                     batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    torch_tok_s = statistics.median(B * T / t for t in times[1:])
    print(f"shape {args.shape}, {B}x{T} tokens/step, {args.threads} threads, {args.precision.upper()}")
    print(f"strata  {strata_tok_s:8.0f} tok/s")
    print(f"pytorch {torch_tok_s:8.0f} tok/s (torch {torch.__version__})")
    print(f"ratio   {strata_tok_s / torch_tok_s:8.2f}x")


if __name__ == "__main__":
    main()
