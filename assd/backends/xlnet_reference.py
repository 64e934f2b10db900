"""Reference backend: Hugging Face ``XLNetLMHeadModel`` driven through ``perm_mask``.

This recomputes the whole sequence on every call, exactly as the paper's code does. It is the
ground truth the fast engine is tested against, and it runs any XLNet-format checkpoint.
"""

from __future__ import annotations

import torch

from ..masks import natural_limits, perm_mask_from_limits, target_mapping
from ..model import Batch, check_mask_id, check_queries, logits_by_paths, write_rows


def group_queries(
    sigma: torch.Tensor, q_rank: torch.Tensor, q_ctx: torch.Tensor
) -> list[list[list[int]]]:
    """Split each row's queries into groups that one XLNet forward can answer.

    XLNet has one query row and one mask row per position, so a group may hold each position
    once, and a query whose context stops short of its own rank (c < r) must not have its
    content read by another query of the group (every other context in the group <= r).
    Returns groups[b][g] = list of query indices.
    """
    out: list[list[list[int]]] = []
    for r_row, c_row in zip(q_rank.tolist(), q_ctx.tolist()):
        groups: list[list[int]] = []
        meta: list[tuple[set[int], int, int]] = []  # (ranks, max ctx, min rank of short queries)
        for qi, (r, c) in enumerate(zip(r_row, c_row)):
            if r < 0:
                continue
            for g, (ranks, max_c, min_short) in enumerate(meta):
                if r in ranks or c > min_short or (c < r and max_c > r):
                    continue
                groups[g].append(qi)
                meta[g] = (ranks | {r}, max(max_c, c), min(min_short, r) if c < r else min_short)
                break
            else:
                groups.append([qi])
                meta.append(({r}, c, r if c < r else 1 << 60))
        out.append(groups)
    return out


class XLNetReference:
    """The AS-ARM protocol over a ``transformers.XLNetLMHeadModel``."""

    needs_prompt = True

    def __init__(
        self,
        model,
        forbidden_ids: tuple[int, ...] = (),
        max_length: int | None = None,
        *,
        mask_id: int | None = None,
        head=None,
    ):
        self.net = model.eval()
        p = next(model.parameters())
        self.head = None if head is None else head.to(device=p.device, dtype=p.dtype)
        self.vocab_size = int(model.config.vocab_size)
        self.forbidden_ids = tuple(int(i) for i in forbidden_ids)
        self.max_length = max_length
        self.mask_id = check_mask_id(mask_id, self.vocab_size)  # prompts must not contain it

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def has_draft_head(self) -> bool:
        return self.head is not None

    def open(self, batch: Batch) -> _ReferenceSession:
        return _ReferenceSession(self, batch.to(self.device))


class _ReferenceSession:
    def __init__(self, model: XLNetReference, batch: Batch):
        self.model, self.batch = model, batch
        self.pos_of_rank = batch.pos_of_rank
        self.limits = natural_limits(batch.sigma, batch.n_prompt)  # [B, L]

    supports_tree = True  # by plain calls, one per query that reads a node (the ground truth)

    def refill(self, rows, batch) -> None:
        """New sequences in rows [R]: every call recomputes from the batch (the ground truth)."""
        write_rows(self.batch, rows, batch.to(self.batch.tokens.device))
        self.pos_of_rank = self.batch.pos_of_rank
        self.limits = natural_limits(self.batch.sigma, self.batch.n_prompt)

    @torch.no_grad()
    def logits(self, tokens, n, m, q_rank, q_ctx, tree=None):
        if tree is not None:
            return logits_by_paths(self.logits, self.batch, tokens, n, m, q_rank, q_ctx, tree)
        check_queries(self.batch, n, m, q_rank, q_ctx)
        B, L = tokens.shape
        Q = q_rank.shape[1]
        out = torch.zeros(B, Q, self.model.vocab_size, device=tokens.device)
        groups = group_queries(self.batch.sigma, q_rank, q_ctx)
        for g in range(max((len(gs) for gs in groups), default=0)):
            idx = [gs[g] if g < len(gs) else [] for gs in groups]
            G = max(len(i) for i in idx)
            qi = torch.full((B, G), -1, dtype=torch.long, device=tokens.device)
            for b, ii in enumerate(idx):
                qi[b, : len(ii)] = torch.tensor(ii, dtype=torch.long)
            valid = qi >= 0
            r = torch.where(valid, torch.gather(q_rank, 1, qi.clamp(min=0)), 0)
            c = torch.gather(q_ctx, 1, qi.clamp(min=0))
            pos = torch.where(valid, torch.gather(self.pos_of_rank, 1, r), -1)
            limits = self.limits.clone()
            bi, gi = valid.nonzero(as_tuple=True)
            limits[bi, pos[bi, gi]] = c[bi, gi]
            perm = perm_mask_from_limits(self.batch.sigma, limits).to(self._dtype)
            tm = target_mapping(pos, L).to(self._dtype)
            logits = self.model.net(
                input_ids=tokens, perm_mask=perm, target_mapping=tm, use_mems=False
            ).logits  # [B, G, V]
            out[bi, qi[bi, gi]] = logits[bi, gi].float()
        return out

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.net.parameters()).dtype

    @torch.no_grad()
    def draft_logits(self, tokens, q_rank, q_ctx, q_feat):
        """The draft head's logits, every input recomputed from scratch (the ground truth)."""
        from ..heads import reference_draft_logits

        head = self.model.head
        if head is None:
            raise ValueError("this model has no draft head (load a model that ships one)")
        valid = q_rank >= 0
        b = self.batch
        if bool(
            (valid & ((q_feat > q_ctx) | (q_ctx > q_rank) | (q_feat < b.n_prompt[:, None]))).any()
        ):
            raise ValueError("draft queries need n_prompt <= q_feat <= q_ctx <= q_rank")
        perm = perm_mask_from_limits(b.sigma, self.limits).to(self._dtype)
        content = self.model.net.transformer(
            input_ids=tokens, perm_mask=perm, use_mems=False
        ).last_hidden_state  # [B, L, d]: the content stream (no target_mapping)
        emb = self.model.net.transformer.word_embedding.weight
        return reference_draft_logits(head, content, emb, tokens, b.sigma, q_rank, q_ctx, q_feat)
