#!/usr/bin/env python3
"""Differential attention (module diff-attn) parity with PyTorch.

One layer, written here in torch from the spec (docs/diff-attention.md): the
paper form (A1 - lambda A2) V with the flash-variant GQA pairing, rotate_half
RoPE on every sub-head, the lambda re-parameterisation, subln and the output
scale. For several layouts the script writes random weights, a ragged batch of
sequences and an output gradient to a fixture directory (config.json of the
modified decoder, case.json, fixture.safetensors); strata's test binary runs
the layer on it (gtest DiffAttentionParity, next to the strata binary) and
writes its output and gradients; outputs must match to 1e-5 and gradients to
1e-4 of their largest magnitude.

Usage: test_diff_attention_parity.py STRATA_BINARY   (exit 77 = skipped: no torch)
strata_tests is looked for beside STRATA_BINARY.
"""
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_io import parity_main, read_safetensors, torch, write_safetensors  # noqa: E402
from ref_swa import apply_rope, rope_tables  # noqa: E402

THETA = 10000.0
CASES = [  # layout, heads, kv heads, subln, out_scale, lambda_init, layer
    ("paper", 8, 4, True, "one_minus_lambda_init", "paper", 3),
    ("paper", 8, 2, False, "one_minus_lambda_init", "paper", 0),
    ("expanded", 4, 2, False, "one", "zero", 1),
    ("expanded", 4, 4, True, "one_minus_lambda_init", "paper", 7),
]
D, HEAD_DIM, LENS = 32, 8, [40, 9, 1]


def rope(x, n):
    """rotate_half RoPE on x [n, subheads, d] at positions 0..n-1."""
    cos, sin = rope_tables(n, x.shape[-1], THETA, x.dtype)
    return apply_rope(x[None], cos, sin)[0]


def diff_attention(p, pre, case, x):
    layout, heads, kv_heads, subln, out_scale = case[:5]
    paper = layout == "paper"
    H, KV = (heads // 2, kv_heads // 2) if paper else (heads, kv_heads)
    d = HEAD_DIM
    dv, rep = (2 * d if paper else d), H // KV
    w = lambda n: p[pre + n]  # noqa: E731
    lam = (torch.exp((w("lambda_q1") * w("lambda_k1")).sum()) - torch.exp((w("lambda_q2") * w("lambda_k2")).sum())
           + w("lambda_init"))
    scale = 1.0 - w("lambda_init") if out_scale == "one_minus_lambda_init" else 1.0
    outs, row = [], 0
    for n in LENS:
        xs = x[row:row + n]
        row += n
        q = rope((xs @ w("q_proj.weight").T).view(n, 2 * H, d), n).view(n, H, 2, d)
        k = rope((xs @ w("k_proj.weight").T).view(n, 2 * KV, d), n).view(n, KV, 2, d)
        v = (xs @ w("v_proj.weight").T).view(n, KV, dv)
        # Flash pairing: diff head h uses group h // rep for both components.
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        mask = torch.full((n, n), float("-inf")).triu(1)
        a1, a2 = (torch.softmax(torch.einsum("thd,shd->hts", q[:, :, c], k[:, :, c]) / math.sqrt(d) + mask, -1)
                  for c in (0, 1))
        o = torch.einsum("hts,shd->thd", a1 - lam * a2, v)
        if subln:
            o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * w("subln.weight")
        outs.append((o * scale).reshape(n, H * dv) @ w("o_proj.weight").T)
    return torch.cat(outs)


def run_case(test_binary, tmp, case, index, check):
    seed = 100 + index
    layout, heads, kv_heads, subln, out_scale, lambda_init, layer = case
    paper = layout == "paper"
    H, KV = (heads // 2, kv_heads // 2) if paper else (heads, kv_heads)
    d = HEAD_DIM
    dv = 2 * d if paper else d
    pre = f"model.layers.{layer}.self_attn."
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s, std=0.3: (torch.randn(*s, generator=g) * std).requires_grad_()  # noqa: E731
    p = {pre + "q_proj.weight": rnd(2 * H * d, D), pre + "k_proj.weight": rnd(2 * KV * d, D),
         pre + "v_proj.weight": rnd(KV * dv, D), pre + "o_proj.weight": rnd(D, H * dv)}
    for n in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
        p[pre + n] = rnd(d)
    li = 0.0 if lambda_init == "zero" else 0.8 - 0.6 * math.exp(-0.3 * layer)
    p[pre + "lambda_init"] = torch.tensor(li, dtype=torch.float32)  # 0-dim buffer
    if subln:
        p[pre + "subln.weight"] = (1.0 + torch.randn(dv, generator=g) * 0.3).requires_grad_()
    rows = sum(LENS)
    x = rnd(rows, D, std=1.0)
    dy = torch.randn(rows, D, generator=g)
    y = diff_attention(p, pre, case, x)
    (y * dy).sum().backward()

    fixture = os.path.join(tmp, "fixture")
    os.makedirs(fixture, exist_ok=True)
    config = {"model_type": "strata_modified_llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64,
              "hidden_size": D, "intermediate_size": 64, "num_hidden_layers": layer + 1,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": d,
              "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": THETA,
              "attention": "differential",
              "diff_attn": {"layout": layout, "subln": subln, "out_scale": out_scale, "lambda_init": lambda_init}}
    with open(os.path.join(fixture, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(fixture, "case.json"), "w") as f:
        json.dump({"prefix": pre[:-1], "lens": LENS, "layer": layer}, f)
    write_safetensors(os.path.join(fixture, "fixture.safetensors"),
                      {**p, "input": x, "grad_output": dy})
    out = os.path.join(tmp, "strata.safetensors")
    if os.path.exists(out):
        os.remove(out)
    env = dict(os.environ, STRATA_DIFF_ATTN_FIXTURE=fixture, STRATA_DIFF_ATTN_OUT=out)
    r = subprocess.run([test_binary, "--gtest_filter=DiffAttentionParity.*"], env=env, capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(out):
        print(r.stdout[-3000:], r.stderr[-3000:])
        check.fail(f"{case}: the strata test binary failed (exit {r.returncode})")
        return
    s = read_safetensors(out)
    lam = (torch.exp((p[pre + "lambda_q1"] * p[pre + "lambda_k1"]).sum()) -
           torch.exp((p[pre + "lambda_q2"] * p[pre + "lambda_k2"]).sum()) + li).item()
    print(f"case {case}: lambda = {lam:.4f}")
    check(case, "output", s.get("output"), y, tol=1e-5)
    check(case, "grad input", s.get("grad_input"), x.grad, tol=1e-4)
    for name, t in p.items():
        if name.endswith("lambda_init"):
            if "grad." + name in s:
                check.fail(f"{case}: strata has a gradient for the buffer {name}")
            continue
        check(case, "grad " + name[len(pre):], s.get("grad." + name), t.grad, tol=1e-4)


def main():
    return parity_main(__doc__, CASES, run_case, 1e-5, tool="strata_tests")


if __name__ == "__main__":
    sys.exit(main())
