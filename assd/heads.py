"""Draft heads: a small network on top of a frozen AS-ARM that drafts tokens one after another.

Why. The model's own parallel drafts (rank n+i given ranks < n) ignore each other, and on trained
models they are accepted about a third of the time. A draft head proposes rank r from the
target's own final content states of the committed ranks (everything the target knows about
them) *and* the tokens proposed since (y, x_1, ..., read as plain token embeddings), so each
proposal conditions on the ones before it, at a fraction of a target call (EAGLE-style, for
any-subset orders).

What it computes. ``draft(r, c, f)``: logits for the token at rank r given ranks < c, where
ranks < f (f <= c) are read through the target's final content states and ranks f .. c-1
through their tokens. Keys are built from those inputs (``u``), per head layer; a query row
starting from a learned vector attends to them with XLNet's relative attention, then an FFN, and
the target's tied output embedding gives the logits. Backends provide the states (the reference
recomputes them, the engine caches them); this module holds the parameters and the maths.

Files: ``draft_head.safetensors`` (int8 with per-channel scales, ``assd.quantize``) and
``draft_head.json`` (a :class:`HeadConfig`) beside the target's weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backends.engine_attention import rel_scores
from .backends.engine_weights import sinusoid

CONFIG_FILE = "draft_head.json"
WEIGHTS_FILE = "draft_head.safetensors"


@dataclass(frozen=True)
class HeadConfig:
    """Sizes of a draft head; d_model and vocab_size are the target's."""

    d_model: int
    vocab_size: int
    n_head: int
    d_head: int
    d_inner: int
    n_layer: int = 1
    clamp_len: int = -1
    eps: float = 1e-12


class HeadLayer(nn.Module):
    """One query-only XLNet layer: the query attends to fixed key inputs, then an FFN."""

    def __init__(self, c: HeadConfig):
        super().__init__()
        d, hd = c.d_model, c.n_head * c.d_head
        self.q = nn.Linear(d, hd, bias=False)
        self.kv = nn.Linear(d, 2 * hd, bias=False)
        self.r = nn.Linear(d, hd, bias=False)
        self.o = nn.Linear(hd, d, bias=False)
        self.r_w_bias = nn.Parameter(torch.zeros(c.n_head, 1, c.d_head))
        self.r_r_bias = nn.Parameter(torch.zeros(c.n_head, 1, c.d_head))
        self.ln1 = nn.LayerNorm(d, eps=c.eps)
        self.ff1 = nn.Linear(d, c.d_inner)
        self.ff2 = nn.Linear(c.d_inner, d)
        self.ln2 = nn.LayerNorm(d, eps=c.eps)


class DraftHead(nn.Module):
    """The draft head's parameters and maths (see the module docstring). ``emb`` [V, d] is the
    target's word embedding: the head reads tokens and writes logits through it (not stored)."""

    def __init__(self, c: HeadConfig):
        super().__init__()
        self.config = c
        d = c.d_model
        self.feat_proj = nn.Linear(d, d)
        self.kind = nn.Parameter(torch.zeros(2, d))  # added to feature / token inputs
        self.in_norm = nn.LayerNorm(d, eps=c.eps)
        self.query = nn.Parameter(torch.randn(d) * 0.02)
        self.layers = nn.ModuleList(HeadLayer(c) for _ in range(c.n_layer))
        self.out_bias = nn.Parameter(torch.zeros(c.vocab_size))

    # -- inputs ------------------------------------------------------------------------------
    def feature_inputs(self, h: torch.Tensor) -> torch.Tensor:
        """[..., d] target final content states -> key inputs."""
        return self.in_norm(self.feat_proj(h) + self.kind[0])

    def token_inputs(self, e: torch.Tensor) -> torch.Tensor:
        """[..., d] target word embeddings of tokens -> key inputs."""
        return self.in_norm(e + self.kind[1])

    def keys(self, u: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Key inputs [B, S, d] -> per layer (k, v), each [B, H, S, D]."""
        c = self.config
        B, S, _ = u.shape
        out = []
        for layer in self.layers:
            kv = layer.kv(u).view(B, S, 2, c.n_head, c.d_head).permute(2, 0, 3, 1, 4)
            out.append((kv[0], kv[1]))
        return out

    def rel_tables(self, length: int) -> list[torch.Tensor]:
        """Per layer [H, D, 2T-1] positional keys of the distances -(T-1) .. T-1, T = length."""
        c = self.config
        dev = self.query.device
        rel = torch.arange(-(length - 1), length, device=dev)
        if c.clamp_len > 0:
            rel = rel.clamp(-c.clamp_len, c.clamp_len)
        pe = sinusoid(rel, c.d_model).to(self.query.dtype)
        return [
            layer.r(pe).view(-1, c.n_head, c.d_head).permute(1, 2, 0).contiguous()
            for layer in self.layers
        ]

    # -- the query ---------------------------------------------------------------------------
    def attend(
        self,
        q_pos: torch.Tensor,  # [B, Q] position of each query's target
        keys: list[tuple[torch.Tensor, torch.Tensor]],  # per layer (k, v) [B, H, S, D]
        key_pos: torch.Tensor,  # [B, S] position of each key
        visible: torch.Tensor,  # [B, Q, S] bool: the query sees the key
        tables: list[torch.Tensor],  # from rel_tables(T), T > every |position|
        emb: torch.Tensor,  # [V, d] the target's word embedding
        emb_t: torch.Tensor | None = None,  # [d, V] the same, contiguous (faster on CPU)
    ) -> torch.Tensor:  # [B, Q, V] float32 logits
        c = self.config
        B, Q = q_pos.shape
        T = (tables[0].shape[-1] + 1) // 2
        rel = (q_pos[:, :, None] - key_pos[:, None, :] + T - 1)[:, None]  # [B, 1, Q, S]
        hide = torch.where(visible, 0.0, float("-inf")).to(self.query.dtype)[:, None]  # [B,1,Q,S]
        g = self.query.expand(B, Q, -1)
        for layer, (k, v), table in zip(self.layers, keys, tables):
            q = layer.q(g).view(B, Q, c.n_head, c.d_head).transpose(1, 2)  # [B, H, Q, D]
            bd = rel_scores(q + layer.r_r_bias, table)  # [B, H, Q, 2T-1]
            bd = bd.gather(-1, rel.expand(B, c.n_head, Q, rel.shape[-1]))
            bias = hide + bd * c.d_head**-0.5
            att = F.scaled_dot_product_attention(q + layer.r_w_bias, k, v, attn_mask=bias)
            g = layer.ln1(g + layer.o(att.transpose(1, 2).reshape(B, Q, -1)))
            g = layer.ln2(g + layer.ff2(F.gelu(layer.ff1(g))))
        # [in, out] product: on CPU far faster than F.linear for a few rows (engine_weights)
        return (torch.matmul(g, emb.t() if emb_t is None else emb_t) + self.out_bias).float()

    # -- files -------------------------------------------------------------------------------
    def save(self, folder: str | Path, int8: bool = True) -> None:
        from safetensors.torch import save_file

        from .quantize import quantize

        folder = Path(folder)
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = folder / (WEIGHTS_FILE + ".tmp")
        save_file(quantize(state) if int8 else state, str(tmp), metadata={"format": "pt"})
        tmp.replace(folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")


def load_head(folder: str | Path, device=None, dtype=torch.float32) -> DraftHead | None:
    """The draft head saved beside a model (None if there is none)."""
    from safetensors.torch import load_file

    from .quantize import dequantize

    folder = Path(folder)
    if not (folder / CONFIG_FILE).exists():
        return None
    if not (folder / WEIGHTS_FILE).exists():
        raise ValueError(f"{folder / CONFIG_FILE} exists but {WEIGHTS_FILE} is missing")
    head = DraftHead(HeadConfig(**json.loads((folder / CONFIG_FILE).read_text())))
    head.load_state_dict(dequantize(load_file(str(folder / WEIGHTS_FILE))))
    return head.to(device=device, dtype=dtype).eval().requires_grad_(False)


def reference_draft_logits(
    head: DraftHead,
    content: torch.Tensor,  # [B, L, d] the target's final content states (today's tokens)
    emb: torch.Tensor,  # [V, d] the target's word embedding
    tokens: torch.Tensor,  # [B, L]
    sigma: torch.Tensor,  # [B, L]
    q_rank: torch.Tensor,  # [B, Q] (-1 = padding)
    q_ctx: torch.Tensor,  # [B, Q]
    q_feat: torch.Tensor,  # [B, Q] ranks < q_feat through states, q_feat .. q_ctx-1 as tokens
) -> torch.Tensor:
    """The head's logits computed from scratch: the ground truth for cached implementations.

    Keys: every position twice, once as a state (visible to a query iff its rank < q_feat) and
    once as a token (visible iff q_feat <= rank < q_ctx)."""
    B, L = tokens.shape
    pos = torch.arange(L, device=tokens.device).expand(B, L)
    pos_of_rank = torch.argsort(sigma, -1)
    q_pos = torch.gather(pos_of_rank, 1, q_rank.clamp(min=0))
    u = torch.cat(
        [head.feature_inputs(content), head.token_inputs(F.embedding(tokens, emb))], 1
    )  # [B, 2L, d]
    s = torch.cat([sigma, sigma], 1)[:, None, :]  # [B, 1, 2L] rank of each key
    as_state = torch.arange(2 * L, device=tokens.device) < L
    visible = torch.where(
        as_state, s < q_feat[:, :, None], (s >= q_feat[:, :, None]) & (s < q_ctx[:, :, None])
    )
    visible = visible | (q_rank < 0)[:, :, None]  # padding queries: anything finite
    return head.attend(
        q_pos, head.keys(u), torch.cat([pos, pos], 1), visible, head.rel_tables(L), emb
    )
