"""The AS-ARM training objectives on an XLNet two-stream model.

- ``joint`` (the paper's): teacher-forced joint over the masked ranks. Each masked token is
  predicted from the prompt and the masked tokens of lower rank (their true tokens sit in the
  content stream; the query stream of a target never sees its own token).
- ``parallel``: every masked token conditioned on the prompt only (a conditionally independent
  / mean-field objective, for ablations).

Orders (``assd.orders.ORDERS``): a random visible subset, then ``left-to-right`` (the paper's
convention: each group in reading order, ``order_from_mask``) or ``random`` (the masked
positions in a uniformly random order, ``shuffle_masked``). ``paper`` is accepted for
``left-to-right`` (the name earlier runs used).

Loss weighting (how the per-target NLLs of a batch are averaged):
- ``token``: every masked token counts the same (a sequence with more masked tokens, i.e. a
  higher masking rate, weighs more). The embedded models were trained this way.
- ``sequence``: each sequence's mean NLL counts the same, whatever its masking rate. This is the
  paper's ``scale_by_none`` (its micro-batches share one rate and are averaged with equal weight).
"""

from __future__ import annotations

import torch

from assd.orders import ORDERS, inverse_order, order_from_mask, shuffle_masked

from .fast_model import FastXLNet

OBJECTIVES = ("joint", "parallel")
ORDER_ALIASES = {"paper": "left-to-right"}
WEIGHTINGS = ("token", "sequence")


def order_name(order: str) -> str:
    """The library's name of an order (``paper`` -> ``left-to-right``); ValueError if unknown."""
    name = ORDER_ALIASES.get(order, order)
    if name not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return name


def sample_orders(
    n_masked: torch.Tensor,
    length: int,
    order: str = "left-to-right",
    generator: torch.Generator | None = None,
    spans: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh order per sequence with exactly ``n_masked[b]`` masked positions.

    n_masked: [B] long. spans: [B] bool, rows whose masked positions form one contiguous span at
    a uniformly random offset (what infilling a line, a sentence or a function asks for) instead
    of a uniformly random subset. Returns (sigma [B, L] long, n_prompt [B] long); ranks <
    n_prompt are the visible positions, in ascending position order.
    """
    name = order_name(order)
    B, L = n_masked.shape[0], length
    # A uniformly random permutation's ranks: the n_masked smallest are the masked positions.
    key_rank = inverse_order(torch.rand(B, L, generator=generator).argsort(-1))  # [B, L]
    mask = key_rank < n_masked[:, None]  # [B, L]
    if spans is not None:
        start = (torch.rand(B, generator=generator) * (L - n_masked + 1)).long()  # [B]
        pos = torch.arange(L)
        span = (pos >= start[:, None]) & (pos < (start + n_masked)[:, None])
        mask = torch.where(spans[:, None], span, mask)
    sigma, n_prompt = order_from_mask(mask)
    if name == "random":
        sigma = shuffle_masked(sigma, n_prompt, generator=generator)
    return sigma, n_prompt


def target_nll(
    model: FastXLNet,
    tokens: torch.Tensor,  # [B, L]
    sigma: torch.Tensor,  # [B, L]
    n_prompt: torch.Tensor,  # [B]
    objective: str,
    mask_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL of every masked token [N] in nats, row index of each [N])."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    targets = sigma >= n_prompt[:, None]  # [B, L]
    query_limit = None
    inputs = tokens
    if objective == "parallel":
        # Everyone sees the prompt only, so no query reads masked content: fill it with <mask>.
        query_limit = n_prompt[:, None].expand_as(sigma)
        inputs = tokens.masked_fill(targets, mask_id)
    nll = model(inputs, sigma, n_prompt, targets, tokens, query_limit)
    return nll, targets.nonzero()[:, 0]


def weighted_loss(
    nll: torch.Tensor, rows: torch.Tensor, n_rows: int, weighting: str = "token"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss sum, weight): the batch loss is sum / weight; sums and weights add across batches.

    token: (sum of NLLs, number of targets). sequence: (sum over rows of each row's mean NLL,
    number of rows with a target).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"loss weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "token":
        return nll.sum(), torch.tensor(float(nll.numel()), device=nll.device)
    count = torch.zeros(n_rows, device=nll.device).index_add_(0, rows, torch.ones_like(nll))
    per_row = torch.zeros(n_rows, device=nll.device).index_add_(0, rows, nll)
    has = count > 0
    return (per_row[has] / count[has]).sum(), has.sum().float()
