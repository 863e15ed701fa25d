#!/usr/bin/env python3
"""Training throughput, strata vs PyTorch, side by side (run by hand, not a test).

  /usr/bin/python3 bench/train_vs_torch.py [--shape stories15m|dim512|samba50m|gla50m|retnet50m] [--strata-only] [--precision f32|bf16]
                                           [--steps 4] [--threads 2] [--batch B] [--seq T]
                                           [--window W] [--scan-chunk L]

The same model (strata's initial weights, written by `strata init`), the same
batches (strata's `--shuffle off` order over one token file) and the same
thread count in both; F32, or mixed precision (strata --precision bf16
against torch.autocast bf16). The torch model is tests/python/ref_model.py
(for Samba: the Mamba scan in chunks of --scan-chunk steps in closed form,
each chunk recomputed in backward, as strata keeps only chunk-start states).
Prints tokens/s of each (median over the steps after the first), the ratio,
and the first step's losses, which must agree to 1e-4 relative in F32 (exit
1 otherwise: the two would not be computing the same function; also when a
loss is not finite).
"""
import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from parity_io import np, read_safetensors, run_strata, torch, unshuffled_batch  # noqa: E402
from ref_model import model_forward, set_module_options  # noqa: E402

SHAPES = {
    # name: (preset the config starts from, config overrides, module options, batch, seq)
    "stories15m": ("tiny", dict(hidden_size=288, intermediate_size=768, num_hidden_layers=6, num_attention_heads=6,
                                num_key_value_heads=6, vocab_size=32000, tie_word_embeddings=True), {}, 32, 256),
    "dim512": ("tiny", dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                            num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False), {}, 16, 512),
    # 49,385,984 parameters: 4 units of [mamba, mlp] [swa, mlp] (16 sub-layers), E 1024, N 16,
    # 8 heads of 64 (MHA, as Samba 421M), window = half the sequence (Samba: 2048 of 4096).
    # 8 sequences a step: PyTorch's peak RSS is 8.9 GB there (21.7 GB at 16).
    "samba50m": ("tiny-samba", dict(hidden_size=512, intermediate_size=1792, num_hidden_layers=8,
                                    num_attention_heads=8, num_key_value_heads=8, vocab_size=32000,
                                    tie_word_embeddings=True), {"window": 256}, 8, 512),
    # samba50m with GLA / RetNet in place of Mamba: GLA 2 heads (dk 128, dv 256; Sliding GLA's
    # expansions), RetNet 4 heads (dk 128, dv 256). PyTorch runs them as recurrences in float64
    # (tests/python/ref_linear_attention.py), so take these shapes with --strata-only.
    "gla50m": ("tiny-sliding-gla", dict(hidden_size=512, intermediate_size=1792, num_hidden_layers=8,
                                        num_attention_heads=8, num_key_value_heads=8, vocab_size=32000,
                                        tie_word_embeddings=True), {"window": 256}, 8, 512),
    "retnet50m": ("tiny-sliding-retnet", dict(hidden_size=512, intermediate_size=1792, num_hidden_layers=8,
                                              num_attention_heads=8, num_key_value_heads=8, vocab_size=32000,
                                              tie_word_embeddings=True), {"window": 256}, 8, 512),
}
LOSS_TOL = 1e-4


def write_config(strata, tmp, shape, args):
    preset, over, options, _, _ = SHAPES[shape]
    run_strata(strata, "init", "--preset", preset, "--dtype", "f32", "-o", tmp + "/base")
    cfg = json.load(open(tmp + "/base/config.json"))
    cfg.update(over, max_position_embeddings=args.seq)
    cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    if "strata_layers" in cfg:
        cfg["strata_layers"]["repeat"] = cfg["num_hidden_layers"] // len(cfg["strata_layers"]["unit"])
        set_module_options(cfg, dict(options, **({"window": args.window} if args.window is not None else {})))
    json.dump(cfg, open(tmp + "/config.json", "w"), indent=2)
    return cfg


def torch_steps(params, cfg, tokens, args):
    opt = torch.optim.AdamW(list(params.values()), lr=1e-4, betas=(0.9, 0.95), foreach=False)
    scan = {"chunk": args.scan_chunk, "checkpoint": True}
    times, losses = [], []
    for step in range(args.steps):
        batch = unshuffled_batch(tokens, step, args.batch, args.seq)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = model_forward(params, cfg, batch[:, :-1], scan)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                     batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        print(f"  torch step {step + 1}: loss {losses[-1]:.6f}, {times[-1]:.2f} s", flush=True)
    return times, losses


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="stories15m", choices=SHAPES)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--batch", type=int, help="sequences per step (default: the shape's)")
    ap.add_argument("--seq", type=int, help="tokens per sequence (default: the shape's)")
    ap.add_argument("--window", type=int, help="sliding window of the attention layers (Samba shapes)")
    ap.add_argument("--scan-chunk", type=int, default=64, help="torch's Mamba scan chunk (strata's: scan_chunk)")
    ap.add_argument("--strata", default=os.path.join(os.path.dirname(__file__), "..", "build", "strata"))
    ap.add_argument("--strata-only", action="store_true", help="time strata alone (no PyTorch run)")
    args = ap.parse_args()
    args.batch = args.batch or SHAPES[args.shape][3]
    args.seq = args.seq or SHAPES[args.shape][4]
    B, T = args.batch, args.seq
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(args.strata, tmp, args.shape, args)
        run_strata(args.strata, "init", "--config", tmp + "/config.json", "--dtype", "f32", "--seed", 1,
                   "-o", tmp + "/init")
        info = json.loads(run_strata(args.strata, "info", "--config", tmp + "/config.json", "--json"))
        tokens = np.random.default_rng(0).integers(0, cfg["vocab_size"], size=B * T * (args.steps + 2) + 1) \
            .astype("<u2")
        tokens.tofile(tmp + "/data.bin")
        print(f"shape {args.shape}: {info['total_params']:,} parameters, {B}x{T} tokens/step, "
              f"{args.threads} threads, {args.precision.upper()}", flush=True)
        t0 = time.perf_counter()
        run_strata(args.strata, "train", "--init", tmp + "/init", "--data", tmp + "/data.bin", "-o", tmp + "/run",
                   "--steps", args.steps, "--batch", B, "--seq", T, "--shuffle", "off",
                   "--threads", args.threads, "--precision", args.precision)
        print(f"  strata: {args.steps} steps in {time.perf_counter() - t0:.1f} s", flush=True)
        rows = [json.loads(line) for line in open(tmp + "/run/metrics.jsonl")]
        rows = [r for r in rows if "tokens_per_s" in r]
        params = {k: v.requires_grad_(True) for k, v in
                  read_safetensors(tmp + "/init/model.safetensors", torch.float32).items()}
    strata_tok_s = statistics.median(r["tokens_per_s"] for r in rows[1:])
    if args.strata_only:
        print(f"strata  {strata_tok_s:8.0f} tok/s, step 1 loss {rows[0]['loss']:.6f}")
        return 0 if all(math.isfinite(r["loss"]) for r in rows) else 1
    times, losses = torch_steps(params, cfg, tokens, args)
    torch_tok_s = statistics.median(B * T / t for t in times[1:])
    rel = abs(rows[0]["loss"] - losses[0]) / abs(losses[0])
    print(f"strata  {strata_tok_s:8.0f} tok/s")
    print(f"pytorch {torch_tok_s:8.0f} tok/s (torch {torch.__version__})")
    print(f"ratio   {strata_tok_s / torch_tok_s:8.2f}x")
    same = rel <= LOSS_TOL or args.precision != "f32"
    if not all(math.isfinite(x) for x in losses + [r["loss"] for r in rows]):
        print("NON-FINITE LOSS: " + ", ".join(f"{x:.6f}" for x in losses))
        same = False
    print(f"step 1 loss: strata {rows[0]['loss']:.6f}, torch {losses[0]:.6f} (relative difference {rel:.1e}"
          + ("" if args.precision != "f32" else f", {'ok' if same else 'MISMATCH'}: tolerance {LOSS_TOL:g}") + ")")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
