"""Sliding-window GQA attention with rotate_half RoPE, in torch, from the spec
(samba-family.md §3): q/k/v/o projections without biases, RoPE on q and k
(pairs i and i + head_dim/2), query t attends to keys t-w+1 .. t (w = 0 or
w >= T: every earlier key), query head j uses KV head j // (H / H_kv).

Parameters use the module's own names (q_proj.weight, ...). Everything runs in
the dtype of the inputs (float64 for references); gradients come from autograd.
"""
import math

import torch


def rope_tables(T, head_dim, theta, dtype):
    """cos, sin [T, head_dim/2] at positions 0..T-1. The angles are formed in
    float32 as HF and llama2.c form them (inv_freq and p * inv_freq in F32),
    then cos/sin are taken in `dtype`."""
    half = head_dim // 2
    inv = 1.0 / (torch.tensor(theta, dtype=torch.float32) ** (torch.arange(half, dtype=torch.float32) * 2 / head_dim))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    ang = ang.to(dtype)
    return ang.cos(), ang.sin()


def apply_rope(x, cos, sin):
    """x [B, T, heads, head_dim]: x' = x cos + rotate_half(x) sin per half."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


def window_mask(T, window, dtype):
    """Additive mask [T, T]: 0 where query t may see key s, -inf elsewhere."""
    t = torch.arange(T)[:, None]
    s = torch.arange(T)[None, :]
    ok = s <= t
    if window > 0:
        ok = ok & (s >= t - window + 1)
    m = torch.zeros(T, T, dtype=dtype)
    return m.masked_fill(~ok, float("-inf"))


def swa_forward(p, x, heads, kv_heads, window=0, theta=10000.0, rope=True):
    """x [B, T, D] -> (out [B, T, D], rotated keys [B, T, H_kv*hd], values [B, T, H_kv*hd]).
    rope=False: no rotation (NoPE)."""
    B, T, _ = x.shape
    wq, wk, wv, wo = (p[n + "_proj.weight"] for n in "qkvo")
    hd = wq.shape[0] // heads
    q = (x @ wq.T).view(B, T, heads, hd)
    k = (x @ wk.T).view(B, T, kv_heads, hd)
    v = (x @ wv.T).view(B, T, kv_heads, hd)
    if rope:
        cos, sin = rope_tables(T, hd, theta, x.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    rep = heads // kv_heads
    kr, vr = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, kr) / math.sqrt(hd) + window_mask(T, window, x.dtype)
    a = torch.softmax(scores, dim=-1)
    o = torch.einsum("bhts,bshd->bthd", a, vr).reshape(B, T, heads * hd)
    return o @ wo.T, k.reshape(B, T, kv_heads * hd), v.reshape(B, T, kv_heads * hd)
