"""AS-ARM attention masks in XLNet's ``perm_mask`` / ``target_mapping`` form.

Visibility is one number per position, its *limit*: position i sees position j iff
``sigma[j] < limit[i]`` (XLNet's content stream also always sees itself). The natural limits are
``n_prompt`` for prompt positions (bidirectional prompt) and ``sigma[i]`` for the others (each
decoded token sees the prompt and the lower ranks). A query ``(rank r, context c)`` at position
``p`` sets ``limit[p] = c``.

Not a backend: the XLNet reference backend builds its attention from these, and so can any code
that runs a Hugging Face XLNet on AS-ARM orders (training, scripts).
"""

from __future__ import annotations

import torch


def natural_limits(sigma: torch.Tensor, n_prompt: torch.Tensor) -> torch.Tensor:
    """[B, L] limits of the paper's masks: prompt sees the prompt, others see lower ranks."""
    P = n_prompt[:, None]
    return torch.where(sigma < P, P.expand_as(sigma), sigma)


def perm_mask_from_limits(sigma: torch.Tensor, limits: torch.Tensor) -> torch.Tensor:
    """[B, L, L] float, XLNet convention: perm_mask[b, i, j] = 1 means i does NOT attend to j."""
    return (sigma[:, None, :] >= limits[:, :, None]).float()


def target_mapping(positions: torch.Tensor, length: int) -> torch.Tensor:
    """[B, Q, L] one-hot rows; positions [B, Q] (-1 = padding row, mapped to nothing)."""
    tm = torch.zeros(*positions.shape, length, device=positions.device)
    valid = positions >= 0
    tm[valid.nonzero(as_tuple=True) + (positions[valid],)] = 1.0
    return tm


def joint_masks(sigma: torch.Tensor, n_prompt: torch.Tensor, length: torch.Tensor | None = None):
    """Teacher-forced joint (the paper's training objective and the oracle over all ranks).

    Returns (perm_mask [B, L, L], target_mapping [B, M, L], target_pos [B, M]) where the M rows
    are the masked positions in rank order (padded with -1 where a row has fewer).
    """
    B, L = sigma.shape
    limits = natural_limits(sigma, n_prompt)
    pos_of_rank = torch.argsort(sigma, dim=-1)
    end = length if length is not None else torch.full_like(n_prompt, L)
    M = int((end - n_prompt).max())
    ranks = n_prompt[:, None] + torch.arange(M, device=sigma.device)
    valid = ranks < end[:, None]
    pos = torch.gather(pos_of_rank, 1, ranks.clamp(max=L - 1))
    pos = torch.where(valid, pos, -1)
    return perm_mask_from_limits(sigma, limits), target_mapping(pos, L), pos
