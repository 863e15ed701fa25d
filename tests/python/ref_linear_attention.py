"""Gated linear attention (GLA) and multi-scale retention (RetNet) token
mixers, in torch, from the spec: flash-linear-attention's
GatedLinearAttention (fused_chunk mode, no short convolution, swish gate with
the fused RMSNorm) and MultiScaleRetention, with the modules' own parameter
names.

The core, per head, with log forget gates g_t <= 0 (one per key channel), from
the state S_0 (zero unless given):
  S_t = diag(exp(g_t)) S_{t-1} + k_tᵀ v_t      S [dk, dv]
  o_t = (scale q_t) S_t                        scale = dk^-1/2
in three forms that must agree (in float64):
  core_recurrent  step by step (the reference);
  core_parallel   quadratic, from differences of the cumulative log gates
                  b = cumsum(g): o_t = scale Σ_{s<=t} (Σ_a q_ta k_sa e^{b_ta - b_sa}) v_s
                  (+ (scale q_t ⊙ e^{b_t}) S_0); never e^{b_t} · e^{-b_s};
  core_chunked    chunks of C rows (from row 0): the parallel form inside a
                  chunk with β the cumulative gate since its start, the state
                  carried from chunk to chunk: S <- diag(e^{β_end}) S + Σ_j (k_j ⊙ e^{β_end - β_j})ᵀ v_j.
RetNet's core is the GLA core with the constant gate log γ_h,
γ_h = 1 - 2^(-5-h); `retention_recurrent` runs it with γ itself.

GLA layer, x [B, T, d] (Kd = d expand_k, Vd = d expand_v, H heads):
  q, k = x Wqᵀ, x Wkᵀ [.., Kd]       q_proj.weight, k_proj.weight [Kd, d]
  v, gate = x Wvᵀ, x Wgᵀ [.., Vd]    v_proj.weight, g_proj.weight [Vd, d]
  g = logsigmoid((x W0ᵀ) W1ᵀ + b1) / gate_logit_normalizer
                                     gk_proj.0.weight [r, d], gk_proj.1.weight [Kd, r], gk_proj.1.bias [Kd]
  o_h = core(q_h, k_h, v_h, g_h)     head h: columns h dk .. (h+1) dk - 1
  out = o_proj(concat_h RMSNorm(o_h) w SiLU(gate_h))
                                     g_norm_swish_gate.weight w [dv] (shared), o_proj.weight [d, Vd]
RetNet layer: the same without gk_proj, with RoPE on q and k per head
(GPT-NeoX halves, θ_i = rope_theta^(-2i/dk), angles in float64, positions
pos..pos+T-1) and the gate log γ_h.

The layer forwards take the state before their first row and that row's
position, so `decode` (one row at a time through the recurrent form) is the
layer run T times. `reference_outputs` gives what a parity test compares (the
outputs, the final state and the gradients of sum(dy * output)) after
checking that every form and the decode agree; `self_check` tests the
invariants of the cores. Everything runs in the dtype of its inputs (float64
for references); autograd gives the gradients.
"""
import torch
import torch.nn.functional as F

FORMS = (("parallel", 0), ("chunked", 1), ("chunked", 3), ("chunked", 16), ("chunked", 64))


# ---------------------------------------------------------------- the cores

def _zeros_state(q, v):
    return torch.zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[3], dtype=q.dtype)


def core_recurrent(q, k, v, g, initial_state=None, scale=None):
    """q, k, g [B, T, H, dk] (g broadcastable), v [B, T, H, dv], initial_state
    [B, H, dk, dv] -> (o [B, T, H, dv], final state [B, H, dk, dv])."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    S = _zeros_state(q, v) if initial_state is None else initial_state
    g = g.expand(q.shape)
    outs = []
    for t in range(q.shape[1]):
        S = torch.exp(g[:, t])[..., None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bha,bhac->bhc", q[:, t] * scale, S))
    return torch.stack(outs, dim=1), S


def _block(qs, k, v, g, S):
    """Rows of one block from the state S before them (qs: q already scaled):
    the outputs and the state after them, from b = cumsum(g) over the block."""
    T = qs.shape[1]
    b = torch.cumsum(g.expand(qs.shape), dim=1)  # [B, T, H, dk]
    causal = torch.ones(T, T, dtype=torch.bool).tril()[None, :, :, None, None]
    # e^{b_ta - b_sa} for s <= t; the exponent is masked to -inf before exp where s > t.
    decay = torch.exp((b[:, :, None] - b[:, None, :]).masked_fill(~causal, float("-inf")))  # [B, t, s, H, dk]
    A = torch.einsum("btha,bsha,btsha->bhts", qs, k, decay)
    o = torch.einsum("bhts,bshc->bthc", A, v)
    S_new = torch.einsum("bsha,bshc->bhac", k * torch.exp(b[:, -1:] - b), v)
    if S is not None:
        o = o + torch.einsum("btha,bhac->bthc", qs * torch.exp(b), S)
        S_new = S_new + torch.exp(b[:, -1])[..., None] * S
    return o, S_new


def core_parallel(q, k, v, g, initial_state=None, scale=None):
    """core_recurrent in the quadratic form over all T rows."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return _block(q * scale, k, v, g, initial_state)


def core_chunked(q, k, v, g, initial_state=None, scale=None, chunk=64):
    """core_recurrent in chunks of `chunk` rows from row 0."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    g = g.expand(q.shape)
    S, outs = initial_state, []
    for t0 in range(0, q.shape[1], chunk):
        c = slice(t0, t0 + chunk)
        o, S = _block(q[:, c] * scale, k[:, c], v[:, c], g[:, c], S)
        outs.append(o)
    return torch.cat(outs, dim=1), (_zeros_state(q, v) if S is None else S)


def core(form, q, k, v, g, initial_state=None, chunk=64):
    if form == "recurrent":
        return core_recurrent(q, k, v, g, initial_state)
    if form == "parallel":
        return core_parallel(q, k, v, g, initial_state)
    if form == "chunked":
        return core_chunked(q, k, v, g, initial_state, chunk=chunk)
    raise ValueError(form)


def retnet_gamma(H, dtype=torch.float64):
    """RetNet's decay per head: γ_h = 1 - 2^(-5-h)."""
    return 1.0 - 2.0 ** (-5.0 - torch.arange(H, dtype=dtype))


def retention_recurrent(q, k, v, gamma=None, initial_state=None, scale=None):
    """The retention recurrence with γ [H] itself: S_t = γ_h S_{t-1} + k_tᵀ v_t, o_t = (scale q_t) S_t."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    gamma = retnet_gamma(q.shape[2], q.dtype) if gamma is None else gamma
    S = _zeros_state(q, v) if initial_state is None else initial_state
    outs = []
    for t in range(q.shape[1]):
        S = gamma[None, :, None, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bha,bhac->bhc", q[:, t] * scale, S))
    return torch.stack(outs, dim=1), S


def retention_log_gate(gamma, dk):
    """log γ as a GLA gate [1, 1, H, dk]."""
    return torch.log(gamma)[None, None, :, None].expand(1, 1, gamma.shape[0], dk)


# ---------------------------------------------------------------- the layers

def _heads(x, H):
    return x.reshape(*x.shape[:-1], H, x.shape[-1] // H)


def _silu(x):
    return x * torch.sigmoid(x)


def _gated_norm_out(p, o, gate, eps):
    """o_proj(concat_h RMSNorm(o_h) w SiLU(gate_h)), o [B, T, H, dv], gate [B, T, Vd]."""
    on = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + eps) * p["g_norm_swish_gate.weight"]
    on = on * _silu(_heads(gate, o.shape[2]))
    return on.flatten(-2) @ p["o_proj.weight"].T


def gla_log_gates(p, x, gate_logit_normalizer=16.0):
    """logsigmoid(gk_proj(x)) / gate_logit_normalizer [B, T, Kd]."""
    gk = (x @ p["gk_proj.0.weight"].T) @ p["gk_proj.1.weight"].T + p["gk_proj.1.bias"]
    return F.logsigmoid(gk) / gate_logit_normalizer


def gla_forward(p, x, num_heads, gate_logit_normalizer=16.0, norm_eps=1e-5, form="recurrent", chunk=64,
                initial_state=None, pos=0):
    """x [B, T, d] -> (out [B, T, d], final state [B, H, dk, dv]). pos is unused (no positions in GLA)."""
    H = num_heads
    q, k = _heads(x @ p["q_proj.weight"].T, H), _heads(x @ p["k_proj.weight"].T, H)
    v, gate = _heads(x @ p["v_proj.weight"].T, H), x @ p["g_proj.weight"].T
    g = _heads(gla_log_gates(p, x, gate_logit_normalizer), H)
    o, S = core(form, q, k, v, g, initial_state, chunk)
    return _gated_norm_out(p, o, gate, norm_eps), S


def rope(x, pos=0, theta=10000.0):
    """GPT-NeoX RoPE on x [B, T, H, dk] at positions pos..pos+T-1 (halves i, i + dk/2); the angles and
    their cos and sin in float64, then in x's dtype."""
    dk = x.shape[-1]
    half = dk // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / dk)
    ang = (pos + torch.arange(x.shape[1], dtype=torch.float64))[:, None] * inv[None, :]
    c, s = (t.to(x.dtype)[None, :, None, :] for t in (ang.cos(), ang.sin()))
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


def retnet_forward(p, x, num_heads, rope_theta=10000.0, norm_eps=1e-5, form="recurrent", chunk=64,
                   initial_state=None, pos=0):
    """x [B, T, d] -> (out [B, T, d], final state [B, H, dk, dv]); x's first row at position pos.
    form "recurrent" runs retention_recurrent (γ itself), the others the GLA core with log γ."""
    H = num_heads
    q = rope(_heads(x @ p["q_proj.weight"].T, H), pos, rope_theta)
    k = rope(_heads(x @ p["k_proj.weight"].T, H), pos, rope_theta)
    v, gate = _heads(x @ p["v_proj.weight"].T, H), x @ p["g_proj.weight"].T
    gamma = retnet_gamma(H, x.dtype)
    if form == "recurrent":
        o, S = retention_recurrent(q, k, v, gamma, initial_state)
    else:
        o, S = core(form, q, k, v, retention_log_gate(gamma, q.shape[-1]), initial_state, chunk)
    return _gated_norm_out(p, o, gate, norm_eps), S


def decode(forward, p, x, **kw):
    """Every row of x [B, T, d] through forward (recurrent form) one at a time from the zero state."""
    S, outs = None, []
    for t in range(x.shape[1]):
        o, S = forward(p, x[:, t:t + 1], form="recurrent", initial_state=S, pos=t, **kw)
        outs.append(o)
    return torch.cat(outs, dim=1), S


def _normal(g, dtype, *shape, std=0.3):
    return torch.randn(*shape, generator=g, dtype=dtype) * std


def gla_params(d, num_heads, expand_k=0.5, expand_v=1.0, gate_low_rank_dim=16, generator=None,
               dtype=torch.float64, std=0.3):
    """Random GLA parameters: normal weights (std), a gk bias spread over
    [-4, 6] (log gates from about -0.25 to -1.5e-4 per step at normaliser 16:
    fast and slow decay), the norm weight 1 + N(0, std²)."""
    g = generator
    Kd, Vd = int(d * expand_k), int(d * expand_v)
    bias = torch.linspace(-4.0, 6.0, Kd, dtype=dtype)[torch.randperm(Kd, generator=g)]
    return {
        "q_proj.weight": _normal(g, dtype, Kd, d, std=std),
        "k_proj.weight": _normal(g, dtype, Kd, d, std=std),
        "v_proj.weight": _normal(g, dtype, Vd, d, std=std),
        "g_proj.weight": _normal(g, dtype, Vd, d, std=std),
        "gk_proj.0.weight": _normal(g, dtype, gate_low_rank_dim, d, std=std),
        "gk_proj.1.weight": _normal(g, dtype, Kd, gate_low_rank_dim, std=std),
        "gk_proj.1.bias": bias + _normal(g, dtype, Kd, std=0.1),
        "o_proj.weight": _normal(g, dtype, d, Vd, std=std),
        "g_norm_swish_gate.weight": 1.0 + _normal(g, dtype, Vd // num_heads, std=std),
    }


def retnet_params(d, num_heads, expand_k=1.0, expand_v=2.0, generator=None, dtype=torch.float64, std=0.3):
    """Random RetNet parameters: normal weights (std), the norm weight 1 + N(0, std²)."""
    g = generator
    Kd, Vd = int(d * expand_k), int(d * expand_v)
    return {
        "q_proj.weight": _normal(g, dtype, Kd, d, std=std),
        "k_proj.weight": _normal(g, dtype, Kd, d, std=std),
        "v_proj.weight": _normal(g, dtype, Vd, d, std=std),
        "g_proj.weight": _normal(g, dtype, Vd, d, std=std),
        "o_proj.weight": _normal(g, dtype, d, Vd, std=std),
        "g_norm_swish_gate.weight": 1.0 + _normal(g, dtype, Vd // num_heads, std=std),
    }


# ---------------------------------------------------------------- checks

def agree(what, got, want, tol):
    """Raises AssertionError unless max |got - want| <= tol x max(1, max |want|) (NaN fails)."""
    err = (got - want).abs().max().item() if want.numel() else 0.0
    ref = want.abs().max().item() if want.numel() else 0.0
    if not err <= tol * max(1.0, ref):
        raise AssertionError(f"reference: {what}: max |diff| {err:.3e} > {tol:g} x max(1, {ref:.3e})")


def reference_outputs(forward, p, x, dy, tol=1e-12, **kw):
    """What strata must write for the layer `forward` (gla_forward or
    retnet_forward with options kw) on params p and input x (leaves with
    requires_grad) and output gradient dy: name -> tensor for output (the
    recurrent form), output_step (decode), final_state, grad.input and
    grad.<param>. Checks first that every form of FORMS (outputs, final state,
    gradients) and the decode agree with the recurrent form to tol."""
    leaves = {"input": x, **p}

    def run(form, chunk):
        for t in leaves.values():
            t.grad = None
        y, S = forward(p, x, form=form, chunk=chunk, **kw)
        (y * dy).sum().backward()
        return y.detach(), S.detach(), {n: t.grad.clone() for n, t in leaves.items()}

    y, S, grads = run("recurrent", 0)
    for form, chunk in FORMS:
        y2, S2, g2 = run(form, chunk)
        name = f"{form} C={chunk}" if chunk else form
        agree(f"{name} output", y2, y, tol)
        agree(f"{name} final state", S2, S, tol)
        for n in grads:
            agree(f"{name} grad.{n}", g2[n], grads[n], tol)
    for n, t in leaves.items():
        t.grad = grads[n]
    with torch.no_grad():
        y_step, S_step = decode(forward, p, x, **kw)
    agree("decode output", y_step, y, tol)
    agree("decode final state", S_step, S, tol)
    return {"output": y, "output_step": y_step, "final_state": S, **{"grad." + n: g for n, g in grads.items()}}


def float32_gap(forward, p, x, dy, **kw):
    """How far a plain float32 run of forward (recurrent form) lands from the
    float64 one: the largest max |diff| / max(1, max |want|) over the output,
    the final state and the gradients of sum(dy * output). Large on an
    ill-conditioned draw (e.g. q·k ≈ 0 on a sequence's first row, which the
    RMSNorm amplifies), which no float32 implementation matches closely."""
    runs = []
    for dtype in (torch.float64, torch.float32):
        pp = {n: t.detach().to(dtype).requires_grad_() for n, t in p.items()}
        xx = x.detach().to(dtype).requires_grad_()
        y, S = forward(pp, xx, **kw)
        (y * dy.to(dtype)).sum().backward()
        runs.append([y.detach(), S.detach(), xx.grad] + [t.grad for t in pp.values()])
    return max(((a.to(torch.float64) - b).abs().max() / max(1.0, b.abs().max().item())).item()
               for a, b in zip(runs[1], runs[0]))


def core_forms_agree(q, k, v, g, initial_state=None, tol=1e-12, what="core"):
    """core_recurrent's (o, final state), after checking the parallel form and
    the chunked one (C in 1, 3, 16, 64) against it, and that nothing is NaN."""
    o, S = core_recurrent(q, k, v, g, initial_state)
    if torch.isnan(o).any() or torch.isnan(S).any():
        raise AssertionError(f"reference: {what}: NaN in the recurrent form")
    for form, chunk in FORMS:
        o2, S2 = core(form, q, k, v, g, initial_state, chunk)
        agree(f"{what} {form} C={chunk} output", o2, o, tol)
        agree(f"{what} {form} C={chunk} final state", S2, S, tol)
    return o, S


def self_check(seed=0):
    """The invariants of the cores and of RoPE, in float64; raises AssertionError when one fails."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    B, T, H, dk, dv = 2, 23, 3, 4, 5
    q, k, v, S0 = rnd(B, T, H, dk), rnd(B, T, H, dk), rnd(B, T, H, dv), rnd(B, H, dk, dv)

    # RetNet core == GLA core with the constant log gate log γ_h (default and given γ).
    for gamma in (retnet_gamma(H), torch.tensor([0.01, 0.5, 1.0], dtype=torch.float64)):
        for init in (None, S0):
            o_r, S_r = retention_recurrent(q, k, v, gamma, init)
            o_g, S_g = core_forms_agree(q, k, v, retention_log_gate(gamma, dk), init, what="retention as GLA")
            agree("retention == GLA(log γ) output", o_r, o_g, 1e-12)
            agree("retention == GLA(log γ) final state", S_r, S_g, 1e-12)

    # GLA core with zero log gates == un-normalised causal linear attention.
    o_g, S_g = core_forms_agree(q, k, v, torch.zeros(1, 1, 1, 1, dtype=torch.float64), S0, what="zero gates")
    qs = q * dk ** -0.5
    scores = torch.einsum("btha,bsha->bhts", qs, k) * torch.ones(T, T, dtype=torch.float64).tril()
    o_l = torch.einsum("bhts,bshc->bthc", scores, v) + torch.einsum("btha,bhac->bthc", qs, S0)
    agree("zero gates == linear attention output", o_g, o_l, 1e-12)
    agree("zero gates == linear attention final state", S_g, S0 + torch.einsum("bsha,bshc->bhac", k, v), 1e-12)

    # Extreme gates (logsigmoid(±30)/16, -8, -30) over 70 rows: no NaN, the forms agree.
    T2 = 70
    u = torch.rand(B, T2, H, dk, generator=gen, dtype=torch.float64)
    g = F.logsigmoid(3 * rnd(B, T2, H, dk)) / 16
    g = torch.where(u < 0.2, F.logsigmoid(torch.tensor(-30.0, dtype=torch.float64)) / 16, g)
    g = torch.where((u >= 0.2) & (u < 0.4), F.logsigmoid(torch.tensor(30.0, dtype=torch.float64)) / 16, g)
    g = torch.where((u >= 0.4) & (u < 0.45), torch.tensor(-8.0, dtype=torch.float64), g)
    g = torch.where(u >= 0.98, torch.tensor(-30.0, dtype=torch.float64), g)
    core_forms_agree(rnd(B, T2, H, dk), rnd(B, T2, H, dk), rnd(B, T2, H, dv), g, rnd(B, H, dk, dv),
                     what="extreme gates")

    # RoPE: the spec's rotation on a unit vector (dk 4, channel 1: θ_1 = 10000^(-1/2), partner channel 3),
    # identity at position 0, norm-preserving, q'(t)·k'(s) depends only on t - s.
    e1 = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 1, 4)
    ang = torch.tensor(3 * 0.01, dtype=torch.float64)
    agree("rope of a unit vector", rope(e1, 3), torch.stack((0 * ang, ang.cos(), 0 * ang, ang.sin())).view(1, 1, 1, 4),
          1e-15)
    x = rnd(1, 6, 2, 8)
    agree("rope at position 0", rope(x[:, :1]), x[:, :1], 1e-15)
    agree("rope norm", rope(x, 5).norm(dim=-1), x.norm(dim=-1), 1e-13)
    a, c = x[:, :1].expand(1, 6, 2, 8), x[:, 1:2].expand(1, 6, 2, 8)
    dots = lambda p0, p1: (rope(a, p0) * rope(c, p1)).sum(-1)  # noqa: E731
    agree("rope relative positions", dots(3, 10), dots(40, 47), 1e-12)


def _demo():
    """self_check, then reference_outputs of a GLA and a RetNet layer (every form and the decode must agree)."""
    self_check()
    g = torch.Generator().manual_seed(1)
    for forward, params, kw in ((gla_forward, gla_params(16, 2, gate_low_rank_dim=4, generator=g),
                                 {"num_heads": 2, "gate_logit_normalizer": 16.0}),
                                (retnet_forward, retnet_params(16, 2, generator=g), {"num_heads": 2})):
        p = {n: t.requires_grad_() for n, t in params.items()}
        x = torch.randn(2, 70, 16, generator=g, dtype=torch.float64).requires_grad_()
        dy = torch.randn(2, 70, 16, generator=g, dtype=torch.float64)
        out = reference_outputs(forward, p, x, dy, **kw)
        print(forward.__name__, {n: tuple(t.shape) for n, t in out.items()})
    print("reference self-checks passed")


# ---------------------------------------------------------------- what the parity tests share

def near(check, case, what, got, want, tol):
    """Passes when max |got - want| <= tol x max(1, max |want|) (NaN fails); that ratio goes into check.worst."""
    want = want.detach().to(torch.float64)
    if got is None or tuple(got.shape) != tuple(want.shape):
        return check(case, what, got, want, tol=tol)  # reports the missing tensor or the wrong shape
    err = (got.to(torch.float64) - want).abs().max().item() if want.numel() else 0.0
    ref = want.abs().max().item() if want.numel() else 0.0
    rel = err / max(1.0, ref) if err == err else float("inf")
    check.worst = max(check.worst, rel)
    ok = rel <= tol
    print(f"  {what:28s} max |diff| {err:.2e} of {ref:.2e} (/max(1, ref) {rel:.1e})  {'ok' if ok else 'FAIL'}")
    if not ok:
        check.fail(f"{case} {what}: {err:.3e} > {tol:g} x max(1, {ref:.3e})")


def case_runner(layer_kind, layer_case, core_case):
    """run_case of a parity test: case ("reference",) runs self_check, (layer_kind, ...)
    layer_case, anything else core_case."""
    def run_case(strata, tmp, case, index, check):
        if case[0] == "reference":
            print("reference self-check")
            self_check()
        elif case[0] == layer_kind:
            layer_case(strata, tmp, case, index, check)
        else:
            core_case(strata, tmp, case, index, check)
    return run_case


def draw_input(g, p, B, T, d, forward, gap, **kw):
    """x, dy [B, T, d] (float32 values in float64); redrawn while a float32 run of
    the reference is off by more than gap (ill-conditioned)."""
    f32 = lambda t: t.to(torch.float32).to(torch.float64)  # noqa: E731
    for _ in range(100):
        x = f32(torch.randn(B, T, d, generator=g, dtype=torch.float64))
        dy = f32(torch.randn(B, T, d, generator=g, dtype=torch.float64))
        if float32_gap(forward, p, x, dy, **kw) <= gap:
            return x.requires_grad_(), dy
    raise AssertionError("reference: no well-conditioned input in 100 draws")


if __name__ == "__main__":
    _demo()
