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

    def __init__(self, net, pack_queries: bool = True, min_query_rows: int = 0):
        super().__init__()
        self.pack_queries = pack_queries  # False: every position's query row (for comparison)
        # At least this many query rows (query_rows): a run sets its most targets per row here,
        # so every step has one shape and a compiled forward compiles once.
        self.min_query_rows = min_query_rows
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
        """Only the targets' query rows are computed (``query_rows``): at the paper's code
        masking rates (5-25%) that drops most of the query stream, which otherwise doubles
        every layer's rows."""
        if not self.pack_queries:
            _, g = self.states(tokens, sigma, n_prompt, query_limit)
            logits = self.net.lm_loss(self.net.transformer.dropout(g[targets])).float()  # [N, V]
            return F.cross_entropy(logits, labels[targets], reduction="none")
        qpos, valid = query_rows(targets, self.min_query_rows)
        _, g = self.states(tokens, sigma, n_prompt, query_limit, qpos)  # g: [B, M, d]
        if not torch.compiler.is_compiling():
            logits = self.net.lm_loss(self.net.transformer.dropout(g[valid])).float()  # [N, V]
            return F.cross_entropy(logits, labels[targets], reduction="none")
        # Compiled: every padded row is scored and the targets picked last, so that the graph
        # has static shapes (the number of targets changes every step).
        logits = self.net.lm_loss(self.net.transformer.dropout(g)).float()  # [B, M, V]
        nll = F.cross_entropy(
            logits.flatten(0, 1), labels.gather(1, qpos).flatten(), reduction="none"
        )
        return nll[valid.flatten()]

    def states(self, tokens, sigma, n_prompt, query_limit=None, qpos=None):
        """(content [B, L, d], query [B, M, d]) final states of both streams.

        qpos: [B, M] the positions whose query rows to compute (default: all L, M = L).
        """
        tr, cfg = self.net.transformer, self.config
        B, L = tokens.shape
        H, D = cfg.n_head, cfg.d_head
        dev = tokens.device
        lim_c, lim_q = limits(sigma, n_prompt)
        if query_limit is not None:
            lim_q = query_limit
        pos = torch.arange(L, device=dev)
        if qpos is None:
            qpos = pos[None].expand(B, L)
        lim_q = lim_q.gather(1, qpos)  # [B, M]
        M = qpos.shape[1]
        lim = torch.cat([lim_c, lim_q], 1)  # [B, L + M]
        dt = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else None
        dt = dt or tr.word_embedding.weight.dtype
        # [B, L+M, L] in the compute dtype: a float32 mask would promote the whole bias to it
        hidden = torch.where(sigma[:, None, :] < lim[:, :, None], 0.0, float("-inf")).to(dt)
        row_pos = torch.cat([pos[None].expand(B, L), qpos], 1)  # [B, L + M]
        rel = row_pos[:, :, None] - pos[None, None, :] + L - 1  # [B, L+M, L] distance index
        pe = tr.dropout(rel_positions(L, cfg.d_model, cfg.clamp_len, dev))

        h = tr.dropout(tr.word_embedding(tokens))  # [B, L, d]
        g = tr.dropout(tr.mask_emb.reshape(1, 1, -1).expand(B, M, -1))  # [B, M, d]
        x = torch.cat([h, g], 1)  # [B, L + M, d]: content rows, then query rows
        for layer in tr.layer:
            x = _layer(layer, x, pe, rel, hidden, L, H, D)
        return x[:, :L], x[:, L:]


@torch.compiler.disable  # host-side sizing: a compiled forward sees fixed-shape inputs
def query_rows(targets: torch.Tensor, at_least: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(qpos [B, M], valid [B, M]): each row's target positions in ascending order, padded to
    M = the most targets of any row (rounded up to a multiple of L/8: at most 8 shapes, so a
    compiled forward compiles few times), so that
    ``g[valid]`` lists the targets in the row-major order of ``labels[targets]``. Padding rows
    point at non-target positions and are computed but never scored. ``at_least``: pad to at
    least this many rows (fixed shapes)."""
    B, L = targets.shape
    n = targets.sum(1)  # [B]
    step = max(8, L // 8)
    M = min(L, max(1, at_least, -(-int(n.max()) // step) * step))
    qpos = torch.argsort((~targets).to(torch.int8), dim=1, stable=True)[:, :M]  # targets first
    valid = torch.arange(M, device=targets.device)[None] < n[:, None]
    return qpos, valid


def _layer(layer, x, pe, rel, hidden, L, H, D):
    """One XLNet layer over R = L content rows + M query rows; keys and values are the L
    content rows. rel: [B, R, L] distance index into pe's rows; hidden: [B, R, L] 0 / -inf."""
    a = layer.rel_attn
    B, R, d = x.shape
    w_q, w_k, w_v = (w.reshape(d, H * D) for w in (a.q, a.k, a.v))
    q = (x @ w_q).view(B, R, H, D).transpose(1, 2)  # [B, H, R, D]
    h = x[:, :L]
    k = (h @ w_k).view(B, L, H, D).transpose(1, 2)  # [B, H, L, D]
    v = (h @ w_v).view(B, L, H, D).transpose(1, 2)
    r = (pe.to(x.dtype) @ a.r.reshape(d, H * D)).view(-1, H, D).permute(1, 2, 0)  # [H, D, 2L-1]
    bd = torch.matmul(q + a.r_r_bias[:, None, :], r)  # [B, H, R, 2L-1]
    bd = bd.gather(-1, rel[:, None].expand(B, H, R, L))  # [B, H, R, L]: distance i - j
    dt = q.dtype  # the autocast dtype where autocast is on
    bias = (bd * D**-0.5).to(dt) + hidden[:, None]
    q_w = (q + a.r_w_bias[:, None, :]).to(dt)
    p_drop = a.dropout.p if a.training else 0.0
    att = F.scaled_dot_product_attention(q_w, k.to(dt), v.to(dt), attn_mask=bias, dropout_p=p_drop)
    att = att.transpose(1, 2).reshape(B, R, H * D)
    att = a.dropout(att @ a.o.reshape(d, H * D).t())
    x = a.layer_norm(att + x)
    return layer.ff(x)
