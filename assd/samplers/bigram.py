"""Context bigram drafts: propose the next token from the bigrams of the committed text.

No network call: the draft for the position right of a known token ``a`` is the empirical
distribution of what follows ``a`` among the committed adjacent pairs (prompt and decoded text);
without such a pair, the unigram distribution of the committed tokens; without those, uniform
over the tokens that may be generated.
"""

from __future__ import annotations

import torch

from ..probs import allowed
from .state import State


def bigram_draft(
    state: State, tokens: torch.Tensor, rank: torch.Tensor, known: torch.Tensor, vocab_size: int
):
    """Draft distribution [B, V] (float64: counts are exact) for the token at rank [B].

    tokens: [B, L] with ranks < known [B] filled (committed + earlier proposals of this round);
    the pair statistics use committed ranks (< state.n) only.
    """
    B, L = tokens.shape
    dev = tokens.device
    sigma = state.sigma
    pos = torch.gather(state.pos_of_rank, 1, rank.clamp(0, L - 1)[:, None])[:, 0]  # [B]
    left = (pos - 1).clamp(min=0)
    left_known = (pos > 0) & (torch.gather(sigma, 1, left[:, None])[:, 0] < known)
    a = torch.gather(tokens, 1, left[:, None])  # [B, 1]

    committed = sigma < state.n[:, None]  # [B, L]
    pair = committed[:, :-1] & committed[:, 1:]  # [B, L-1]
    match = pair & (tokens[:, :-1] == a) & left_known[:, None]
    follow = tokens[:, 1:].clamp(0, vocab_size - 1)
    counts = torch.zeros(B, vocab_size, device=dev, dtype=torch.float64)
    counts.scatter_add_(1, follow, match.double())

    uni = torch.zeros(B, vocab_size, device=dev, dtype=torch.float64)
    uni.scatter_add_(1, tokens.clamp(0, vocab_size - 1), committed.double())
    ok = allowed(state.forbidden, vocab_size, dev, torch.float64)
    counts, uni = counts * ok, uni * ok
    use = torch.where((counts.sum(-1) > 0)[:, None], counts, uni)
    use = torch.where((use.sum(-1) > 0)[:, None], use, ok.expand(B, -1))
    return use / use.sum(-1, keepdim=True)
