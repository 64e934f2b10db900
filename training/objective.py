"""The AS-ARM training objectives on an XLNet two-stream model.

- ``joint`` (the paper's): teacher-forced joint over the masked ranks. Each masked token is
  predicted from the prompt and the masked tokens of lower rank (their true tokens sit in the
  content stream; the query stream of a target never sees its own token).
- ``parallel``: every masked token conditioned on the prompt only (a conditionally independent
  / mean-field objective, for ablations).

Orders: ``paper`` = random visible subset, then each group left to right (``order_from_mask``);
``random`` = random visible subset, masked positions in a uniformly random order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from assd.backends.xlnet_masks import joint_masks, perm_mask_from_limits
from assd.orders import inverse_order, order_from_mask

OBJECTIVES = ("joint", "parallel")
ORDERS = ("paper", "random")


def sample_orders(
    n_masked: torch.Tensor,
    length: int,
    order: str = "paper",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh order per sequence with exactly ``n_masked[b]`` masked positions.

    n_masked: [B] long. Returns (sigma [B, L] long, n_prompt [B] long); ranks < n_prompt are the
    visible positions, in ascending position order.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    B, L = n_masked.shape[0], length
    # A uniformly random permutation's ranks: the n_masked smallest are the masked positions.
    key_rank = inverse_order(torch.rand(B, L, generator=generator).argsort(-1))  # [B, L]
    mask = key_rank < n_masked[:, None]  # [B, L]
    if order == "paper":
        return order_from_mask(mask)
    pos = torch.arange(L).expand(B, L)
    key = torch.where(mask, L + key_rank, pos)  # visible ascending, then masked in random order
    return inverse_order(key.argsort(-1)), (~mask).sum(-1)


def xlnet_inputs(
    tokens: torch.Tensor, sigma: torch.Tensor, n_prompt: torch.Tensor, objective: str, mask_id: int
) -> dict[str, torch.Tensor]:
    """Model inputs and targets for one batch.

    tokens: [B, L]; sigma: [B, L]; n_prompt: [B]. Returns input_ids [B, L], perm_mask [B, L, L],
    target_mapping [B, M, L] and labels [B, M] (-100 = padding target), M = max masked count.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    perm, tm, tpos = joint_masks(sigma, n_prompt)
    labels = torch.gather(tokens, 1, tpos.clamp(min=0)).masked_fill(tpos < 0, -100)
    if objective == "joint":
        # Every masked token's content is read by the higher ranks: keep the true tokens.
        input_ids = tokens
    else:
        # Everyone sees the prompt only, so no query reads masked content: fill it with <mask>.
        limits = n_prompt[:, None].expand_as(sigma)
        perm = perm_mask_from_limits(sigma, limits)
        input_ids = tokens.masked_fill(sigma >= n_prompt[:, None], mask_id)
    return {"input_ids": input_ids, "perm_mask": perm, "target_mapping": tm, "labels": labels}


def loss_sum(model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of target NLLs in nats, number of targets): the caller chooses the normalisation."""
    out = model(
        input_ids=inputs["input_ids"],
        perm_mask=inputs["perm_mask"],
        target_mapping=inputs["target_mapping"],
        use_mems=False,
    )
    logits = out.logits  # [B, M, V]
    labels = inputs["labels"]  # [B, M]
    nll = F.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum"
    )
    return nll, (labels >= 0).sum()
