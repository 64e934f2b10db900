"""Exact log-likelihood of completed infills under an AS-ARM, in one teacher-forced call."""

from __future__ import annotations

import torch

from .model import ASARM, Batch, checked_batch, oracle_queries
from .probs import log_probs


@torch.no_grad()
def log_likelihood(
    model: ASARM, batch: Batch, temperature: float = 1.0, per_token: bool = False
) -> torch.Tensor:
    """log p(masked tokens | prompt) along each row's order: [B] float64 (or [B, M] per rank,
    M = the most tokens a row generates, 0 past a row's end, if per_token).

    ``batch.tokens`` must hold the completed tokens at the masked positions. The distribution is
    the one the samplers target: forbidden tokens removed, temperature applied. Computed as a
    log-softmax, so a token of tiny probability gets its finite log-probability (a completion
    with a forbidden token gets -inf).
    """
    batch = checked_batch(model, batch)
    n = batch.n_prompt
    M = int((batch.length - n).max())
    q, _ = oracle_queries(n, M, batch.length)  # [B, M]: rank n+i given ranks < n+i
    logits = model.open(batch).logits(batch.tokens, n, batch.length - n, q, q)  # [B, M, V]
    logp = log_probs(logits, temperature, model.forbidden_ids)  # [B, M, V]
    valid = q >= 0
    pos = torch.gather(batch.pos_of_rank, 1, q.clamp(min=0))  # [B, M]
    tok = torch.gather(batch.tokens, 1, pos)
    lp = torch.gather(logp, -1, tok.unsqueeze(-1)).squeeze(-1).double()
    lp = torch.where(valid, lp, torch.zeros_like(lp))
    return lp if per_token else lp.sum(-1)
