"""The engine's forward: XLNet two-stream relative attention over a rank-ordered KV cache.

Every row of a call (a content row to add to the cache, or a query-stream row) attends to a
*prefix* of the cache, because the cache is kept in rank order: slot s holds the keys/values of
the token at rank s. A row with limit ``lim`` sees slots ``< lim``:

- prompt rows: lim = n_prompt (bidirectional prompt, itself included);
- other content rows at rank r: lim = r + 1 (lower ranks and itself: XLNet's content stream);
- query rows (r, c): lim = c (ranks < c; never itself, since c <= r).

So content and query rows are just rows with different limits and positions; one attention per
layer serves both streams. Token-tree nodes (``assd.model.Tree``) are content rows whose keys
and values stay in the call (they are not in rank order: several may share a rank); every row
also sees the nodes its ``see`` mask names (a node: its path; a query reading a node: that
node's path). Scores follow XLNet exactly:
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

    tok:  [B, I] token id of content and node rows (query rows: ignored)
    pos:  [B, I] sequence position of the row (for relative distances)
    lim:  [B, I] the row sees cache slots < lim (>= 1 for every row, padding rows too)
    slot: [B, W] cache slot each content row writes its key/value to (padding: the trash slot)
    see:  [B, I, N] the row also sees node row j (N = n_nodes; None when there are none)
    Rows are ordered: W = n_content cached content rows, N = n_nodes tree-node rows, queries.
    """

    tok: torch.Tensor
    pos: torch.Tensor
    lim: torch.Tensor
    slot: torch.Tensor
    n_content: int
    n_nodes: int = 0
    see: torch.Tensor | None = None


def forward_rows(
    w: XLNetWeights,
    tables: list[torch.Tensor],  # per layer [H, D, 2T-1], T = table length
    kv: torch.Tensor,  # [n_layer, 2, B, H, S_all, D] cache, written in place at rows.slot
    key_pos: torch.Tensor,  # [B, S_all] sequence position of each cache slot
    rows: Rows,
    span: int,  # attend to slots < span (>= every row's lim)
) -> torch.Tensor:  # [B, I, d] final states: W content rows, then the query rows
    B, I = rows.pos.shape
    W, N = rows.n_content, rows.n_nodes
    T = (tables[0].shape[-1] + 1) // 2
    is_query = torch.arange(I, device=rows.pos.device) >= W + N  # [I]
    x = torch.where(is_query[None, :, None], w.mask_emb, F.embedding(rows.tok, w.emb))  # [B, I, d]

    # Shared by every layer: which keys each row sees (cache slots < span, then the call's
    # tree nodes), and the distance index of each pair.
    ks = torch.arange(span, device=rows.pos.device)
    hidden = ks >= rows.lim[:, :, None]  # [B, I, S]
    k_pos = key_pos[:, :span]
    if N:
        hidden = torch.cat([hidden, ~rows.see], 2)  # [B, I, S + N]
        k_pos = torch.cat([k_pos, rows.pos[:, W : W + N]], 1)
    mask = torch.zeros(hidden[:, None].shape, dtype=x.dtype, device=x.device)  # 0 seen
    mask.masked_fill_(hidden[:, None], float("-inf"))
    rel = rows.pos[:, :, None] - k_pos[:, None, :] + (T - 1)  # [B, I, S (+ N)]
    rel = rel[:, None].expand(B, w.n_head, I, rel.shape[-1])
    b_idx = torch.arange(B, device=rows.pos.device)[:, None]
    for lw, table, kv_l in zip(w.layers, tables, kv):
        x = _layer(w, lw, table, kv_l, x, W, N, rows.slot, b_idx, mask, rel, span)
    return x


def _layer(w, lw: LayerWeights, table, kv_l, x, W, N, slot, b_idx, mask, rel, span):
    B, I, _ = x.shape
    H, D = w.n_head, w.d_head
    # Content rows: q, k, v; their k, v join the cache before attending (they see themselves).
    # Tree-node rows (next N): the same, but their k, v stay in this call.
    qkv = torch.matmul(x[:, : W + N], lw.w_qkv).view(B, W + N, 3, H, D)
    kv_l[:, b_idx, :, slot] = qkv[:, :W, 1:]  # [B, W, 2, H, D] into [2, B, H, S, D]
    q_g = torch.matmul(x[:, W + N :], lw.w_q).view(B, I - W - N, H, D)  # query rows: q only
    q = torch.cat([qkv[:, :, 0], q_g], 1).transpose(1, 2)  # [B, H, I, D]

    # Position term as an additive bias: (q + r_r) . R[i - j], gathered from all distances.
    scale = D**-0.5
    bd = rel_scores(q + lw.r_r_bias, table).gather(-1, rel)  # [B, H, I, S (+ N)]
    bias = torch.add(mask, bd, alpha=scale)  # one kernel: masked, scaled position term
    k, v = kv_l[0][:, :, :span], kv_l[1][:, :, :span]  # [B, H, S, D]
    if N:
        node_k, node_v = qkv[:, W:, 1].transpose(1, 2), qkv[:, W:, 2].transpose(1, 2)
        k, v = torch.cat([k, node_k], 2), torch.cat([v, node_v], 2)  # [B, H, S + N, D]
    att = F.scaled_dot_product_attention(q + lw.r_w_bias, k, v, attn_mask=bias)  # scale 1/sqrt(D)
    att = att.transpose(1, 2).reshape(B, I, H * D)
    x = F.layer_norm(x + torch.matmul(att, lw.w_o), (w.d_model,), *lw.ln1, eps=w.eps)
    ff = torch.matmul(w.act(torch.matmul(x, lw.ff1[0]) + lw.ff1[1]), lw.ff2[0]) + lw.ff2[1]
    return F.layer_norm(x + ff, (w.d_model,), *lw.ln2, eps=w.eps)


def rel_scores(q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """q [B, H, I, D] against every distance's positional key, table [H, D, T2] -> [B, H, I, T2].

    One batched product over heads: ``torch.matmul`` would broadcast the table over B and copy
    it on every call."""
    B, H, I, D = q.shape
    out = torch.bmm(q.transpose(0, 1).reshape(H, B * I, D), table)  # [H, B*I, T2]
    return out.view(H, B, I, -1).transpose(0, 1)


def lm_head(w: XLNetWeights, h: torch.Tensor) -> torch.Tensor:
    """[..., d] -> [..., V] logits in float32 (tied embedding + bias)."""
    return (torch.matmul(h, w.emb_t) + w.lm_bias).float()
