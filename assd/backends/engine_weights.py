"""XLNet weights rearranged for the engine: fused projections, relative-position tables.

Taken straight from a Hugging Face ``XLNetLMHeadModel`` (its parameters, not a converted
file), so every XLNet-format checkpoint works without a conversion step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class LayerWeights:
    """One XLNet layer. H heads of size D; d = d_model; F = d_inner."""

    w_qkv: torch.Tensor  # [3*H*D, d]  rows: q, k, v (F.linear layout); w_qkv[:H*D] is q alone
    w_o: torch.Tensor  # [d, H*D]
    w_r: torch.Tensor  # [H*D, d]  positional key projection (F.linear layout)
    r_w_bias: torch.Tensor  # [H, 1, D]  content bias (added to queries for the content term)
    r_r_bias: torch.Tensor  # [H, 1, D]  position bias (added to queries for the position term)
    ln1: tuple[torch.Tensor, torch.Tensor]  # post-attention layer norm (weight, bias) [d]
    ff1: tuple[torch.Tensor, torch.Tensor]  # [F, d], [F]
    ff2: tuple[torch.Tensor, torch.Tensor]  # [d, F], [d]
    ln2: tuple[torch.Tensor, torch.Tensor]  # post-FFN layer norm [d]


@dataclass
class XLNetWeights:
    """Everything the engine's forward needs, in one dtype on one device."""

    emb: torch.Tensor  # [V, d] word embedding (tied LM head weight)
    mask_emb: torch.Tensor  # [d] the query stream's initial state
    lm_bias: torch.Tensor  # [V]
    layers: list[LayerWeights]
    n_head: int
    d_head: int
    d_model: int
    clamp_len: int
    eps: float
    act: Callable[[torch.Tensor], torch.Tensor]
    head: object | None = None  # an assd.heads.DraftHead (same dtype and device), or None

    @property
    def vocab_size(self) -> int:
        return self.emb.shape[0]


def check_config(config) -> None:
    """Raise ValueError for XLNet settings the engine does not reproduce."""
    if getattr(config, "attn_type", "bi") != "bi":
        raise ValueError(
            f"the engine needs attn_type='bi' (got {config.attn_type!r}): use XLNetReference"
        )
    if getattr(config, "bi_data", False):
        raise ValueError(
            "the engine needs bi_data=False (a training-only option): set config.bi_data = False"
        )
    if config.d_model % config.n_head != 0:
        raise ValueError("d_model must be divisible by n_head")


def weights_from_hf(model, dtype: torch.dtype | None = None) -> XLNetWeights:
    """Read an ``XLNetLMHeadModel``'s parameters into :class:`XLNetWeights` (no copy of the model)."""
    from transformers.activations import ACT2FN

    cfg = model.config
    check_config(cfg)
    tr = model.transformer
    dtype = dtype or tr.word_embedding.weight.dtype
    H, D, d = cfg.n_head, cfg.d_head, cfg.d_model

    def c(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(dtype).contiguous()

    def lin(w: torch.Tensor) -> torch.Tensor:  # [d, H, D] einsum weight -> [H*D, d] F.linear weight
        return w.reshape(d, H * D).t()

    layers = []
    for layer in tr.layer:
        a, f = layer.rel_attn, layer.ff
        layers.append(
            LayerWeights(
                w_qkv=c(torch.cat([lin(a.q), lin(a.k), lin(a.v)], 0)),
                w_o=c(a.o.reshape(d, H * D)),
                w_r=c(lin(a.r)),
                r_w_bias=c(a.r_w_bias[:, None, :]),
                r_r_bias=c(a.r_r_bias[:, None, :]),
                ln1=(c(a.layer_norm.weight), c(a.layer_norm.bias)),
                ff1=(c(f.layer_1.weight), c(f.layer_1.bias)),
                ff2=(c(f.layer_2.weight), c(f.layer_2.bias)),
                ln2=(c(f.layer_norm.weight), c(f.layer_norm.bias)),
            )
        )
    act = cfg.ff_activation
    return XLNetWeights(
        emb=c(tr.word_embedding.weight),
        mask_emb=c(tr.mask_emb.reshape(d)),
        lm_bias=c(model.lm_loss.bias),
        layers=layers,
        n_head=H,
        d_head=D,
        d_model=d,
        clamp_len=int(cfg.clamp_len),
        eps=float(cfg.layer_norm_eps),
        act=ACT2FN[act] if isinstance(act, str) else act,
    )


def sinusoid(rel: torch.Tensor, d_model: int) -> torch.Tensor:
    """XLNet's relative position embedding of distances rel [N] -> [N, d_model] (float32)."""
    freq = torch.arange(0, d_model, 2, dtype=torch.int64, device=rel.device).float()
    inv_freq = 1 / torch.pow(10000, freq / d_model)
    x = rel.float()[:, None] * inv_freq
    return torch.cat([torch.sin(x), torch.cos(x)], -1)


def rel_tables(w: XLNetWeights, length: int) -> list[torch.Tensor]:
    """Per layer, the positional keys of every distance i - j in [-(L-1), L-1]: [H, D, 2L-1].

    Distances are clamped to +-clamp_len when clamp_len > 0, as XLNet does. Index a table
    with ``i - j + L - 1``. Computed once per session length, shared by every call.
    """
    dev = w.emb.device
    rel = torch.arange(length - 1, -length, -1, device=dev).flip(0)  # -(L-1) .. L-1
    if w.clamp_len > 0:
        rel = rel.clamp(-w.clamp_len, w.clamp_len)
    pe = sinusoid(rel, w.d_model)  # [2L-1, d] float32, as XLNet computes it
    H, D = w.n_head, w.d_head
    out = []
    for lw in w.layers:
        r = torch.nn.functional.linear(pe, lw.w_r.float()).to(w.emb.dtype)  # [2L-1, H*D]
        out.append(r.view(-1, H, D).permute(1, 2, 0).contiguous())  # [H, D, 2L-1]
    return out
