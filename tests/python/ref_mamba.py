"""The Mamba (v1) mixer of mamba_simple, in torch, from the spec
(samba-family.md §2.1-2.5), with the module's own parameter names:

  [x; z] = in_proj(h)                       in_proj.weight [2E, d], no bias
  c_t = b + sum_k W[:, 0, k] x_{t-(k_c-1)+k}  conv1d.weight [E, 1, k_c], conv1d.bias [E];
                                            inputs before t = 0 are zero, tap k_c-1 is the current one
  u = SiLU(c)
  [delta; B; C] = x_proj(u)                 x_proj.weight [R+2N, E]
  dt = softplus(dt_proj(delta))             dt_proj.weight [E, R], dt_proj.bias [E]
  A = -exp(A_log)                           A_log [E, N]
  h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t,  y_t = h_t C_t + D u_t     D [E]
  out = out_proj(y * SiLU(z))               out_proj.weight [d, E]

`mamba_forward` runs the scan (`selective_scan`) sequentially over time, the
reference, or in chunks with the steps of a chunk in closed form (vectorised,
for speed); `mamba_step` is the one-token decode of the reference. The states
are mamba_simple's: conv_state [B, E, k_c] holds the last k_c pre-conv inputs
x, oldest first (zeros on the left while fewer than k_c have been seen; the
decode shifts it left before each use, so its oldest column is never read),
and ssm_state [B, E, N]. Everything works in the dtype of its inputs (float64
for references; the scan at least in float32), and autograd gives the
gradients.
"""
import torch
import torch.utils.checkpoint


def _silu(x):
    return x * torch.sigmoid(x)


def _softplus(x):
    # ln(1 + e^x) without overflow for large x.
    return torch.where(x > 20, x, torch.log1p(torch.exp(torch.clamp(x, max=20))))


def _split_proj(p, u):
    """delta, B, C and dt from the post-conv activations u [..., E]."""
    E, N = p["A_log"].shape
    R = p["dt_proj.weight"].shape[1]
    dbc = u @ p["x_proj.weight"].T
    delta, Bm, Cm = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:R + 2 * N]
    dt = _softplus(delta @ p["dt_proj.weight"].T + p["dt_proj.bias"])
    return dt, Bm, Cm


def _scan_sequential(u, dt, A, Bm, Cm, h):
    ys = []
    for t in range(u.shape[1]):
        decay = torch.exp(dt[:, t, :, None] * A)  # [B, E, N]
        h = decay * h + (dt[:, t] * u[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1), h


def _scan_chunk(h, u, dt, A, Bm, Cm):
    """Steps t0..t0+L-1 from the state h [B, E, N] before them, in closed form,
    time last (u, dt [B, E, L]; Bm, Cm [B, N, L]; tensors [B, E, N, L]): with
    S_t = A sum_{r<=t} dt_r (the log of the decay since the chunk's start),
    h_t = exp(S_t) (h + sum_{s<=t} exp(-S_s) dt_s B_s u_s)."""
    x = (dt * u)[:, :, None, :] * Bm[:, None, :, :]
    if u.shape[-1] == 1:
        hs = torch.exp(dt[:, :, None, :] * A[..., None]) * h[..., None] + x
    else:
        decay = torch.exp(torch.cumsum(dt, dim=-1)[:, :, None, :] * A[..., None])  # exp(S_t), in (0, 1]
        hs = decay * (h[..., None] + torch.cumsum(x / decay, dim=-1))
    return (hs * Cm[:, None, :, :]).sum(2), hs[..., -1]


def _chunk_sizes(dt, a_max, chunk, max_log_decay):
    """Lengths of the chunks over dt [B, E, T]: at most `chunk` steps, fewer
    where a_max [E, 1] (each channel's fastest decay) times the sum of dt
    since the chunk's start would pass max_log_decay; at least one."""
    T, sizes, t0 = dt.shape[-1], [], 0
    while t0 < T:
        reach = (torch.cumsum(dt[..., t0:t0 + chunk], dim=-1) * a_max).amax(dim=(0, 1))  # [L], increasing
        sizes.append(max(1, int((reach <= max_log_decay).sum())))
        t0 += sizes[-1]
    return sizes


def selective_scan(u, dt, A, Bm, Cm, D, chunk=0, checkpoint=False, max_log_decay=30.0):
    """y [B, T, E] and the final state h [B, E, N] of the scan from h = 0:
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t,  y_t = h_t C_t + D u_t, with
    u, dt [B, T, E] (dt after softplus), A [E, N] (negative), Bm, Cm [B, T, N].

    chunk 0: one step at a time (the reference). chunk L: a loop over chunks
    of at most L steps, each in closed form over tensors [B, E, N, L] (time
    last: torch's cumsum is fastest along the last dimension). A chunk is cut
    shorter where the decay since its start would fall below
    exp(-max_log_decay) in some channel, at least one step: x / exp(S) must
    stay finite and, in float32, the backward's exp(S)^2 a normal number.
    checkpoint: keep only each chunk's inputs for backward and recompute the
    rest (as strata keeps only the state at each chunk's start).
    Runs in float32 (float64 inputs: float64) whatever the autocast state."""
    dtype = torch.promote_types(u.dtype, torch.float32)
    with torch.autocast("cpu", enabled=False):
        u, dt, A, Bm, Cm, D = (t.to(dtype) for t in (u, dt, A, Bm, Cm, D))
        Bn, T, E = u.shape
        h = torch.zeros(Bn, E, A.shape[1], dtype=dtype)
        if chunk <= 0:
            y, h = _scan_sequential(u, dt, A, Bm, Cm, h)
            return y + D * u, h
        ut, dtt, Bt, Ct = (t.transpose(1, 2).contiguous() for t in (u, dt, Bm, Cm))  # time last
        with torch.no_grad():
            sizes = _chunk_sizes(dtt, (-A).amax(dim=1)[:, None], chunk, max_log_decay)
        ys = []
        for uc, dc, bc, cc in zip(*(t.split(sizes, dim=-1) for t in (ut, dtt, Bt, Ct))):  # one split: cheap backward
            if checkpoint and torch.is_grad_enabled():
                y, h = torch.utils.checkpoint.checkpoint(_scan_chunk, h, uc, dc, A, bc, cc, use_reentrant=False)
            else:
                y, h = _scan_chunk(h, uc, dc, A, bc, cc)
            ys.append(y)
        return torch.cat(ys, dim=-1).transpose(1, 2) + D * u, h


def mamba_forward(p, x, dtype=None, **scan):
    """x [B, T, d] -> (out [B, T, d], conv_state [B, E, k_c], ssm_state [B, E, N]).

    dtype: compute in this dtype (e.g. torch.float64); default: x's.
    scan: how the scan runs (selective_scan's chunk, checkpoint, max_log_decay)."""
    if dtype is not None:
        p = {k: v.to(dtype) for k, v in p.items()}
        x = x.to(dtype)
    Bn, T, _ = x.shape
    E, N = p["A_log"].shape
    w = p["conv1d.weight"][:, 0, :]  # [E, k_c]
    kc = w.shape[1]
    xz = x @ p["in_proj.weight"].T
    xs, z = xz[..., :E], xz[..., E:]
    # Causal depthwise convolution: k_c - 1 zero rows in front, then each
    # output is the weighted sum of its window of k_c inputs.
    xpad = torch.cat((torch.zeros(Bn, kc - 1, E, dtype=xs.dtype), xs), dim=1)  # [B, T + k_c - 1, E]
    c = p["conv1d.bias"] if "conv1d.bias" in p else torch.zeros(E, dtype=x.dtype)
    c = c + sum(xpad[:, k:k + T, :] * w[:, k] for k in range(kc))
    u = _silu(c)
    dt, Bm, Cm = _split_proj(p, u)
    A = -torch.exp(p["A_log"])
    y, h = selective_scan(u, dt, A, Bm, Cm, p["D"], **scan)
    out = (y * _silu(z)) @ p["out_proj.weight"].T
    conv_state = xpad[:, -kc:, :].transpose(1, 2)  # the last k_c pre-conv inputs, zero-padded on the left
    return out, conv_state, h


def empty_state(p, batch, dtype):
    E, N = p["A_log"].shape
    kc = p["conv1d.weight"].shape[2]
    return torch.zeros(batch, E, kc, dtype=dtype), torch.zeros(batch, E, N, dtype=dtype)


def mamba_step(p, x, conv_state, ssm_state):
    """One token x [B, d] -> (out [B, d], conv_state, ssm_state), new states returned."""
    E, N = p["A_log"].shape
    xz = x @ p["in_proj.weight"].T
    xs, z = xz[:, :E], xz[:, E:]
    conv_state = torch.cat((conv_state[:, :, 1:], xs[:, :, None]), dim=2)  # shift left, newest last
    c = (conv_state * p["conv1d.weight"][:, 0, :]).sum(-1)
    if "conv1d.bias" in p:
        c = c + p["conv1d.bias"]
    u = _silu(c)
    dt, Bm, Cm = _split_proj(p, u)
    A = -torch.exp(p["A_log"])
    ssm_state = torch.exp(dt[:, :, None] * A) * ssm_state + (dt * u)[:, :, None] * Bm[:, None, :]
    y = (ssm_state * Cm[:, None, :]).sum(-1) + p["D"] * u
    out = (y * _silu(z)) @ p["out_proj.weight"].T
    return out, conv_state, ssm_state


def mamba_decode(p, x):
    """Every row of x [B, T, d] through mamba_step from empty states."""
    conv, ssm = empty_state(p, x.shape[0], x.dtype)
    outs = []
    for t in range(x.shape[1]):
        o, conv, ssm = mamba_step(p, x[:, t], conv, ssm)
        outs.append(o)
    return torch.stack(outs, dim=1), conv, ssm


def mamba_params(d_model, d_state, d_conv, expand, dt_rank=None, generator=None, dtype=torch.float64,
                 dt_min=1e-3, dt_max=0.1):
    """Random parameters like a trained layer's: A_log = ln(n+1) plus noise,
    dt_proj.bias such that softplus(bias) is log-uniform in [dt_min, dt_max],
    the matrices normal with std 1/sqrt(fan_in)."""
    g = generator
    E = expand * d_model
    R = dt_rank if dt_rank else -(-d_model // 16)

    def normal(*shape, std):
        return torch.randn(*shape, generator=g, dtype=dtype) * std

    tau = torch.exp(torch.rand(E, generator=g, dtype=dtype) * (torch.log(torch.tensor(dt_max)) -
                                                                 torch.log(torch.tensor(dt_min))) +
                    torch.log(torch.tensor(dt_min)))
    a_log = torch.log(torch.arange(1, d_state + 1, dtype=dtype))[None, :].repeat(E, 1)
    return {
        "in_proj.weight": normal(2 * E, d_model, std=d_model ** -0.5),
        "conv1d.weight": normal(E, 1, d_conv, std=d_conv ** -0.5),
        "conv1d.bias": normal(E, std=0.2),
        "x_proj.weight": normal(R + 2 * d_state, E, std=E ** -0.5),
        "dt_proj.weight": (torch.rand(E, R, generator=g, dtype=dtype) * 2 - 1) * R ** -0.5,
        "dt_proj.bias": tau + torch.log(-torch.expm1(-tau)),  # softplus^-1(tau)
        "A_log": a_log + normal(E, d_state, std=0.1),
        "D": 1.0 + normal(E, std=0.1),
        "out_proj.weight": normal(d_model, E, std=E ** -0.5),
    }
