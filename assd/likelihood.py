"""Exact log-likelihood of completed infills under an AS-ARM, in one teacher-forced call."""

from __future__ import annotations

import torch

from .model import ASARM, Batch, make_batch
from .probs import to_probs


@torch.no_grad()
def log_likelihood(
    model: ASARM, batch: Batch, temperature: float = 1.0, per_token: bool = False
) -> torch.Tensor:
    """log p(masked tokens | prompt) along each row's order: [B] (or [B, M] per rank if per_token).

    ``batch.tokens`` must hold the completed tokens at the masked positions. The distribution is
    the one the samplers target: forbidden tokens removed, temperature applied.
    """
    batch = make_batch(
        batch.tokens, batch.sigma, batch.n_prompt, batch.length,
        vocab_size=model.vocab_size, max_length=model.max_length, needs_prompt=model.needs_prompt,
    ).to(model.device)  # fmt: skip
    sigma_masked = batch.sigma >= batch.n_prompt[:, None]
    gen = batch.tokens[sigma_masked & (batch.sigma < batch.length[:, None])]
    if bool(((gen < 0) | (gen >= model.vocab_size)).any()):
        raise ValueError("completed tokens must be valid ids in [0, vocab_size)")
    M = int((batch.length - batch.n_prompt).max())
    ranks = batch.n_prompt[:, None] + torch.arange(M, device=batch.tokens.device)
    valid = ranks < batch.length[:, None]
    q = torch.where(valid, ranks, -1)
    n = batch.n_prompt
    logits = model.open(batch).logits(batch.tokens, n, batch.length - n, q, q)  # [B, M, V]
    logp = to_probs(logits, temperature, model.forbidden_ids).double().log()
    pos = torch.gather(batch.pos_of_rank, 1, ranks.clamp(max=batch.tokens.shape[1] - 1))
    tok = torch.gather(batch.tokens, 1, pos)
    lp = torch.gather(logp, -1, tok.unsqueeze(-1)).squeeze(-1)
    lp = torch.where(valid, lp, torch.zeros_like(lp))
    return lp if per_token else lp.sum(-1)
