#!/usr/bin/env python3
"""Training parity with PyTorch (Debian's python3-torch).

For a Llama (preset tiny), a Samba (preset tiny-samba: Mamba, MLP,
sliding-window attention with window 16 < T, MLP; Mamba scan chunks of 12
steps), a Sliding GLA (preset tiny-sliding-gla: GLA, MLP, sliding-window
attention with window 16, MLP) and a Sliding RetNet (preset
tiny-sliding-retnet: RetNet, MLP, sliding-window attention with window 16,
MLP), whose GLA and RetNet layers strata runs in chunks of 12 rows (T = 32:
two full chunks and a short one of 8; PyTorch runs them step by step in
float64), from the same initial weights (written by `strata init`) and the
same batches (`--shuffle off` on a raw uint16 token file), with weight decay
on the parameters the model's `strata_training` names (matrices; all for the
Samba, Sliding GLA and Sliding RetNet presets), strata's per-step losses for
20 AdamW steps must equal PyTorch's (ref_model.py) to 1e-4 relative, and the
first step's gradients (recovered from strata's first-step optimizer state,
m = (1-beta1) g with clipping off) must match to 1e-4 of their largest
magnitude.

Usage: test_train_parity.py STRATA_BINARY   (exit 77 = skipped: no torch)
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_io import np, parity_main, read_safetensors, run_strata, torch, unshuffled_batch  # noqa: E402
from ref_model import model_forward, set_module_options  # noqa: E402

STEPS, B, T = 20, 4, 32
LR, MIN_LR, WARMUP, WD, B1, B2, EPS = 1e-3, 1e-4, 5, 0.1, 0.9, 0.95, 1e-8
TOL = 1e-4
# preset, module options changed in config.json after init (scan_chunk 12,
# chunk 12: the Mamba, GLA and RetNet backwards cross chunk boundaries, a
# short chunk last).
CASES = [("tiny", {}), ("tiny-samba", {"scan_chunk": 12}), ("tiny-sliding-gla", {"chunk": 12}),
         ("tiny-sliding-retnet", {"chunk": 12})]


def lr_at(s):
    if s <= WARMUP:
        return LR * s / WARMUP
    if s >= STEPS:
        return MIN_LR
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * (s - WARMUP) / (STEPS - WARMUP)))


def run_case(strata, tmp, case, index, check):
    preset, options = case
    init, run = os.path.join(tmp, preset, "init"), os.path.join(tmp, preset, "run")
    run_strata(strata, "init", "--preset", preset, "--dtype", "f32", "--seed", 5, "-o", init)
    cfg = json.load(open(os.path.join(init, "config.json")))
    if options:
        set_module_options(cfg, options)
        json.dump(cfg, open(os.path.join(init, "config.json"), "w"), indent=2)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg["vocab_size"], size=5000).astype("<u2")
    data = os.path.join(tmp, preset, "data.bin")
    tokens.tofile(data)
    common = ["--data", data, "--batch", B, "--seq", T, "--lr", LR, "--min-lr", MIN_LR, "--warmup", WARMUP,
              "--wd", WD, "--shuffle", "off", "--threads", 2]
    run_strata(strata, "train", "--init", init, "-o", run, "--steps", STEPS, "--clip", "1.0", *common)
    losses = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    losses = [r["loss"] for r in losses if "loss" in r]
    run1 = os.path.join(tmp, preset, "run1")
    run_strata(strata, "train", "--init", init, "-o", run1, "--steps", 1, "--clip", 0, *common)
    m1 = read_safetensors(os.path.join(run1, "checkpoint-1", "optimizer.safetensors"))

    params = {k: v.requires_grad_(True) for k, v in
              read_safetensors(os.path.join(init, "model.safetensors"), torch.float32).items()}
    # The model's training recipe says which parameters decay (strata train's default).
    decay_all = cfg.get("strata_training", {}).get("decay", "matrices") == "all"
    decay = [v for v in params.values() if decay_all or v.dim() >= 2]
    no_decay = [v for v in params.values() if not decay_all and v.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(B1, B2), eps=EPS, foreach=False)
    ref = []
    print(preset)
    for step in range(1, STEPS + 1):
        batch = unshuffled_batch(tokens, step - 1, B, T)
        logits = model_forward(params, cfg, batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        if step == 1:
            print(" first-step gradients (strata's from its optimizer state):")
            for name, p in params.items():
                m = m1.get("optim.m." + name)
                check(preset, "grad " + name, None if m is None else m / (1 - B1), p.grad, atol=1e-9)
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step)
        opt.step()
        ref.append(loss.item())
    if len(losses) != STEPS:
        check.fail(f"{preset}: strata logged {len(losses)} losses, expected {STEPS}")
    worst = 0.0
    for s, (a, b) in enumerate(zip(losses, ref), 1):
        rel = abs(a - b) / abs(b)
        worst = max(worst, rel)
        print(f" step {s:2d}  strata {a:.6f}  torch {b:.6f}  rel {rel:.1e}")
    print(f" losses: worst relative error {worst:.2e}")
    if worst > TOL:
        check.fail(f"{preset}: loss mismatch: worst relative error {worst:.2e} > {TOL:g}")


def main():
    return parity_main(__doc__, CASES, run_case, TOL)


if __name__ == "__main__":
    sys.exit(main())
