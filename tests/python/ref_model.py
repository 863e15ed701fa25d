"""Whole decoders in torch as strata builds them from a config.json, under
strata's tensor names: a Llama (no `strata_layers`: [attention, mlp] per
layer) or any `strata_layers` unit of the kinds `attention` (alias `attn`,
`swa`; options `window`, `rope`), `mlp` (`intermediate_size`), `mamba` (its
sizes come from the tensors), `gla` (options `num_heads`, 0: max(1, d / 384);
`gate_logit_normalizer`, `norm_eps`) and `retnet` (`num_heads`, 0: max(1,
num_attention_heads / 2); `norm_eps`; RoPE at the model's rope_theta over
each head's key channels, positions from 0). The widths of gla and retnet
(expand_k, expand_v, gate_low_rank_dim) come from the tensors, and their
`chunk` does not change the maths: both run the recurrent form of
ref_linear_attention.py in float64, their output cast back to the input's
dtype. Each sub-layer is x = x + F(RMSNorm(x)); then the final RMSNorm and
the head (the embedding when tied). Layer overrides are not handled
(refused).

Names (docs/formats.md): model.embed_tokens.weight, model.layers.N.<norm>.weight
with norms input_layernorm, post_attention_layernorm, norm_2, ...;
model.layers.N.self_attn.{q,k,v,o}_proj.weight,
model.layers.N.mlp.{gate,up,down}_proj.weight, model.layers.N.mamba.*
(ref_mamba.py), model.layers.N.gla.* and model.layers.N.retnet.*
(ref_linear_attention.py), model.norm.weight, lm_head.weight when untied.
"""
import torch

from ref_linear_attention import gla_forward, retnet_forward
from ref_mamba import mamba_forward
from ref_swa import swa_forward

MIXER_NAMES = {"attention": "self_attn", "attn": "self_attn", "swa": "self_attn", "mlp": "mlp", "mamba": "mamba",
               "gla": "gla", "retnet": "retnet"}


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def norm_name(s):
    return ("input_layernorm", "post_attention_layernorm")[s] if s < 2 else f"norm_{s}"


def layer_plan(cfg):
    """Per layer, its sub-layers as (kind, options) pairs."""
    spec = cfg.get("strata_layers")
    if spec is None:
        if cfg.get("strata_recipe", "llama") != "llama":
            raise ValueError(f"recipe {cfg['strata_recipe']} without strata_layers: write the layers out")
        unit = [[{"kind": "attention"}, "mlp"]]
    else:
        if spec.get("overrides"):
            raise NotImplementedError("strata_layers.overrides")
        unit = spec["unit"]
    plan = []
    for i in range(cfg["num_hidden_layers"]):
        layer = unit[i % len(unit)]
        subs = []
        for sub in (layer if isinstance(layer, list) else [layer]):
            sub = {"kind": sub} if isinstance(sub, str) else dict(sub)
            if "norm" in sub or "post" in sub:
                raise NotImplementedError("norm / post modules")
            subs.append((sub.pop("kind"), sub))
        if len({MIXER_NAMES[k] for k, _ in subs}) != len(subs):
            raise NotImplementedError("a mixer used twice in one layer")
        plan.append(subs)
    return plan


def set_module_options(cfg, options):
    """In place: every sub-layer of cfg's `strata_layers` unit that has one of
    `options` (name -> value) takes the new value (e.g. window, scan_chunk, chunk)."""
    for layer in cfg.get("strata_layers", {}).get("unit", []):
        for sub in (layer if isinstance(layer, list) else [layer]):
            if isinstance(sub, dict):
                sub.update({k: v for k, v in options.items() if k in sub})


def _sub(p, prefix):
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def mlp_forward(p, h):
    return (torch.nn.functional.silu(h @ p["gate_proj.weight"].T) * (h @ p["up_proj.weight"].T)) @ p["down_proj.weight"].T


def linear_attention_forward(p, cfg, kind, opts, h):
    """A gla or retnet mixer on h [B, T, d]: float64 from the parameters and h, the output in h's dtype."""
    p64 = {k: v.to(torch.float64) for k, v in p.items()}
    h64 = h.to(torch.float64)
    eps = opts.get("norm_eps", 1e-5)
    if kind == "gla":
        heads = opts.get("num_heads", 0) or max(1, cfg["hidden_size"] // 384)
        y = gla_forward(p64, h64, heads, opts.get("gate_logit_normalizer", 16.0), eps)[0]
    else:
        heads = opts.get("num_heads", 0) or max(1, cfg["num_attention_heads"] // 2)
        y = retnet_forward(p64, h64, heads, cfg.get("rope_theta", 10000.0), eps)[0]
    return y.to(h.dtype)


def sublayer(p, cfg, kind, opts, h, scan):
    if kind == "mlp":
        return mlp_forward(p, h)
    if kind in ("attention", "attn", "swa"):
        window = opts.get("window", 2048 if kind == "swa" else 0)
        return swa_forward(p, h, cfg["num_attention_heads"], cfg["num_key_value_heads"], window,
                           cfg.get("rope_theta", 10000.0), opts.get("rope", True))[0]
    if kind == "mamba":
        return mamba_forward(p, h, **scan)[0]
    if kind in ("gla", "retnet"):
        return linear_attention_forward(p, cfg, kind, opts, h)
    raise NotImplementedError(f"module kind {kind}")


def model_forward(p, cfg, ids, scan=None):
    """Logits [B, T, V] of token ids [B, T]. scan: options of the Mamba scan
    (ref_mamba.selective_scan: chunk, checkpoint); default step by step."""
    if cfg.get("rope_scaling"):
        raise NotImplementedError("rope_scaling")
    eps = cfg["rms_norm_eps"]
    x = p["model.embed_tokens.weight"][ids]
    for i, subs in enumerate(layer_plan(cfg)):
        pre = f"model.layers.{i}."
        for s, (kind, opts) in enumerate(subs):
            h = rms_norm(x, p[pre + norm_name(s) + ".weight"], eps)
            x = x + sublayer(_sub(p, pre + MIXER_NAMES[kind] + "."), cfg, kind, opts, h, scan or {})
    h = rms_norm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    return h @ head.T
