"""The engine's forward: XLNet two-stream relative attention over a rank-ordered KV cache.

Every row of a call (a content row to add to the cache, or a query-stream row) attends to a
*prefix* of the cache, because the cache is kept in rank order: slot s holds the keys/values of
the token at rank s. A row with limit ``lim`` sees slots ``< lim``:

- prompt rows: lim = n_prompt (bidirectional prompt, itself included);
- other content rows at rank r: lim = r + 1 (lower ranks and itself: XLNet's content stream);
- query rows (r, c): lim = c (ranks < c; never itself, since c <= r).

So content and query rows are just rows with different limits and positions; one attention per
layer serves both streams. Scores follow XLNet exactly:
``scale * ((q_i + r_w) . k_j + (q_i + r_r) . R[i - j])`` with R the projected sinusoid of the
position distance (see ``engine_weights.rel_tables``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .engine_weights import LayerWeights, XLNetWeights


@dataclass
class Rows:
    """The rows one forward computes: ``n_content`` content rows first, then query rows.

    tok:  [B, I] token id of content rows (query rows: ignored)
    pos:  [B, I] sequence position of the row (for relative distances)
    lim:  [B, I] the row sees cache slots < lim (>= 1 for every row, padding rows too)
    slot: [B, W] cache slot each content row writes its key/value to (padding: the trash slot)
    """

    tok: torch.Tensor
    pos: torch.Tensor
    lim: torch.Tensor
    slot: torch.Tensor
    n_content: int


def forward_rows(
    w: XLNetWeights,
    tables: list[torch.Tensor],  # per layer [H, D, 2T-1], T = table length
    kv: torch.Tensor,  # [n_layer, 2, B, H, S_all, D] cache, written in place at rows.slot
    key_pos: torch.Tensor,  # [B, S_all] sequence position of each cache slot
    rows: Rows,
    span: int,  # attend to slots < span (>= every row's lim)
) -> torch.Tensor:  # [B, I, d] final states: W content rows, then the query rows
    B, I = rows.pos.shape
    W = rows.n_content
    T = (tables[0].shape[-1] + 1) // 2
    is_query = torch.arange(I, device=rows.pos.device) >= W  # [I]
    x = torch.where(is_query[None, :, None], w.mask_emb, F.embedding(rows.tok, w.emb))  # [B, I, d]

    # Shared by every layer: which slots each row sees, and the distance index of each pair.
    ks = torch.arange(span, device=rows.pos.device)
    mask = torch.zeros((B, 1, I, span), dtype=x.dtype, device=x.device)  # 0 seen, -inf hidden
    mask.masked_fill_((ks >= rows.lim[:, :, None])[:, None], float("-inf"))
    rel = rows.pos[:, :, None] - key_pos[:, None, :span] + (T - 1)  # [B, I, S]
    rel = rel[:, None].expand(B, w.n_head, I, span)
    b_idx = torch.arange(B, device=rows.pos.device)[:, None]
    for lw, table, kv_l in zip(w.layers, tables, kv):
        x = _layer(w, lw, table, kv_l, x, W, rows.slot, b_idx, mask, rel, span)
    return x


def _layer(w, lw: LayerWeights, table, kv_l, x, W, slot, b_idx, mask, rel, span):
    B, I, _ = x.shape
    H, D = w.n_head, w.d_head
    # Content rows: q, k, v; their k, v join the cache before attending (they see themselves).
    qkv = F.linear(x[:, :W], lw.w_qkv).view(B, W, 3, H, D)
    kv_l[:, b_idx, :, slot] = qkv[:, :, 1:]  # [B, W, 2, H, D] into [2, B, H, S, D]
    q_g = F.linear(x[:, W:], lw.w_qkv[: H * D]).view(B, I - W, H, D)  # query rows: q only
    q = torch.cat([qkv[:, :, 0], q_g], 1).transpose(1, 2)  # [B, H, I, D]

    # Position term as an additive bias: (q + r_r) . R[i - j], gathered from all distances.
    scale = D**-0.5
    bd = torch.matmul(q + lw.r_r_bias, table).gather(-1, rel)  # [B, H, I, S]
    bias = torch.add(mask, bd, alpha=scale)  # one kernel: masked, scaled position term
    k, v = kv_l[0][:, :, :span], kv_l[1][:, :, :span]  # [B, H, S, D]
    att = F.scaled_dot_product_attention(q + lw.r_w_bias, k, v, attn_mask=bias)  # scale 1/sqrt(D)
    att = att.transpose(1, 2).reshape(B, I, H * D)
    x = F.layer_norm(x + F.linear(att, lw.w_o), (w.d_model,), *lw.ln1, eps=w.eps)
    ff = F.linear(w.act(F.linear(x, *lw.ff1)), *lw.ff2)
    return F.layer_norm(x + ff, (w.d_model,), *lw.ln2, eps=w.eps)


def lm_head(w: XLNetWeights, h: torch.Tensor) -> torch.Tensor:
    """[..., d] -> [..., V] logits in float32 (tied embedding + bias)."""
    return F.linear(h, w.emb, w.lm_bias).float()
