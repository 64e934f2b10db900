"""A fast training forward for XLNet AS-ARMs: both streams in one SDPA call per layer.

Hugging Face's ``XLNetLMHeadModel`` builds [L, L, B] float masks, runs the two streams as
separate einsum attentions and shifts relative scores with reshapes. Under the AS-ARM masks all
of that reduces to one rule per row: row i sees the positions whose rank is below its *limit*.
This module computes the same function (same parameters, same maths, tested to float32 rounding
against Hugging Face) with content rows and query rows stacked as the queries of one
``scaled_dot_product_attention`` per layer, and the relative-position term gathered into its
additive bias.

Shapes: B sequences of L tokens, H heads of size D, d = d_model. Content rows are the L
positions; query rows are the same L positions (prompt rows' outputs are simply not scored).
The module wraps a Hugging Face model, so checkpoints and exports stay in XLNet format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rel_positions(L: int, d_model: int, clamp_len: int, device) -> torch.Tensor:
    """[2L-1, d] float32 sinusoids of the distances -(L-1) .. L-1 (index with i - j + L - 1)."""
    rel = torch.arange(-(L - 1), L, device=device)
    if clamp_len > 0:
        rel = rel.clamp(-clamp_len, clamp_len)
    freq = torch.arange(0, d_model, 2, dtype=torch.int64, device=device).float()
    x = rel.float()[:, None] / torch.pow(10000, freq / d_model)
    return torch.cat([torch.sin(x), torch.cos(x)], -1)


def limits(sigma: torch.Tensor, n_prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row limits (a row sees positions of rank < limit): content rows and query rows, [B, L].

    Content: the prompt sees the prompt; a masked token sees lower ranks and itself.
    Query: a masked position sees lower ranks only (never its own token); prompt query rows are
    never scored, they see the prompt so that no row is empty.
    """
    P = n_prompt[:, None]
    prompt = sigma < P
    return torch.where(prompt, P, sigma + 1), torch.where(prompt, P, sigma)


class FastXLNet(nn.Module):
    """Training forward over a Hugging Face ``XLNetLMHeadModel`` (``.net``), AS-ARM masks only.

    ``forward(tokens, sigma, n_prompt, targets, labels)`` returns the NLL (nats, float32) of
    ``labels`` at every target [N] (N = targets.sum(), row-major order), computing logits for
    target rows only.
    ``query_limit`` [B, L] overrides what each query row sees (the ``parallel`` objective sees
    the prompt only). ``states(...)`` gives the final content and query states instead.
    """

    def __init__(self, net):
        super().__init__()
        cfg = net.config
        if getattr(cfg, "attn_type", "bi") != "bi" or getattr(cfg, "bi_data", False):
            raise ValueError("FastXLNet needs attn_type='bi' and bi_data=False")
        self.net = net
        self.config = cfg

    def forward(
        self,
        tokens: torch.Tensor,  # [B, L]
        sigma: torch.Tensor,  # [B, L]
        n_prompt: torch.Tensor,  # [B]
        targets: torch.Tensor,  # [B, L] bool: positions to score
        labels: torch.Tensor,  # [B, L] the true tokens
        query_limit: torch.Tensor | None = None,  # [B, L]
    ) -> torch.Tensor:  # [N] NLL per target
        _, g = self.states(tokens, sigma, n_prompt, query_limit)
        logits = self.net.lm_loss(self.net.transformer.dropout(g[targets])).float()  # [N, V]
        return F.cross_entropy(logits, labels[targets], reduction="none")

    def states(self, tokens, sigma, n_prompt, query_limit=None):
        """(content [B, L, d], query [B, L, d]) final states of both streams."""
        tr, cfg = self.net.transformer, self.config
        B, L = tokens.shape
        H, D = cfg.n_head, cfg.d_head
        lim_c, lim_q = limits(sigma, n_prompt)
        if query_limit is not None:
            lim_q = query_limit
        lim = torch.cat([lim_c, lim_q], 1)  # [B, 2L]
        hidden = torch.where(sigma[:, None, :] < lim[:, :, None], 0.0, float("-inf"))  # [B,2L,L]
        pos = torch.arange(L, device=tokens.device)
        rel = (pos[:, None] - pos[None, :] + L - 1).repeat(2, 1)  # [2L, L] distance index
        pe = tr.dropout(rel_positions(L, cfg.d_model, cfg.clamp_len, tokens.device))

        h = tr.dropout(tr.word_embedding(tokens))  # [B, L, d]
        g = tr.dropout(tr.mask_emb.reshape(1, 1, -1).expand(B, L, -1))  # [B, L, d]
        x = torch.cat([h, g], 1)  # [B, 2L, d]: content rows, then query rows
        for layer in tr.layer:
            x = _layer(layer, x, pe, rel, hidden, B, L, H, D)
        return x[:, :L], x[:, L:]


def _layer(layer, x, pe, rel, hidden, B, L, H, D):
    a = layer.rel_attn
    d = a.q.shape[0]
    w_q, w_k, w_v = (w.reshape(d, H * D) for w in (a.q, a.k, a.v))
    q = (x @ w_q).view(B, 2 * L, H, D).transpose(1, 2)  # [B, H, 2L, D]
    h = x[:, :L]
    k = (h @ w_k).view(B, L, H, D).transpose(1, 2)  # [B, H, L, D]
    v = (h @ w_v).view(B, L, H, D).transpose(1, 2)
    r = (pe.to(x.dtype) @ a.r.reshape(d, H * D)).view(-1, H, D).permute(1, 2, 0)  # [H, D, 2L-1]
    bd = torch.matmul(q + a.r_r_bias[:, None, :], r)  # [B, H, 2L, 2L-1]
    bd = bd.gather(-1, rel.expand(B, H, 2 * L, L))  # [B, H, 2L, L]: distance i - j
    dt = q.dtype  # the autocast dtype where autocast is on
    bias = (bd * D**-0.5 + hidden[:, None]).to(dt)
    q_w = (q + a.r_w_bias[:, None, :]).to(dt)
    p_drop = a.dropout.p if a.training else 0.0
    att = F.scaled_dot_product_attention(q_w, k.to(dt), v.to(dt), attn_mask=bias, dropout_p=p_drop)
    att = att.transpose(1, 2).reshape(B, 2 * L, H * D)
    att = a.dropout(att @ a.o.reshape(d, H * D).t())
    x = a.layer_norm(att + x)
    return layer.ff(x)
