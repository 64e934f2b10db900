"""Decoding orders as rank vectors.

An order is a rank vector ``sigma`` of shape [L] (or [B, L]): ``sigma[pos]`` is the step at which
position ``pos`` is decoded. The prompt (visible positions) always takes ranks ``0..P-1``; it is
fully bidirectional among itself. The masked positions take ranks ``P..L-1`` and each one sees
the prompt and the lower ranks only. Every sampler and backend speaks ranks, never XLNet masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "order_from_mask",
    "order_with_masked_order",
    "random_order",
    "random_subset_order",
    "validate_order",
    "inverse_order",
]


def _as_mask(mask: torch.Tensor | Sequence[bool]) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = masked), got dtype {mask.dtype}")
    if mask.dim() not in (1, 2):
        raise ValueError(f"mask must have shape [L] or [B, L], got {tuple(mask.shape)}")
    return mask


def order_from_mask(mask: torch.Tensor | Sequence[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's convention: visible positions first, then masked, each group left to right.

    mask: [L] or [B, L] bool, True = masked (to be generated).
    Returns (sigma [same shape] long, n_prompt [] or [B] long).
    """
    mask = _as_mask(mask)
    # A stable sort of the key (masked, position) puts visible positions first, both ascending.
    L = mask.shape[-1]
    key = mask.long() * L + torch.arange(L, device=mask.device)
    pos_of_rank = key.argsort(dim=-1)
    sigma = inverse_order(pos_of_rank)
    n_prompt = (~mask).sum(-1)
    return sigma, n_prompt


def order_with_masked_order(
    mask: torch.Tensor | Sequence[bool], masked_positions: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A user-given decoding order over the masked positions of one sequence.

    masked_positions lists every masked position once, in the order they should be decoded.
    Returns (sigma [L], n_prompt []).
    """
    mask = _as_mask(mask)
    if mask.dim() != 1:
        raise ValueError("order_with_masked_order takes one sequence: mask must have shape [L]")
    want = sorted(int(p) for p in masked_positions)
    have = torch.nonzero(mask).flatten().tolist()
    if want != have:
        raise ValueError(
            "masked_positions must list every masked position exactly once "
            f"(masked: {have}, given: {list(masked_positions)})"
        )
    visible = torch.nonzero(~mask).flatten().tolist()
    pos_of_rank = torch.tensor(visible + [int(p) for p in masked_positions], dtype=torch.long)
    return inverse_order(pos_of_rank).to(mask.device), torch.tensor(
        len(visible), device=mask.device
    )


def random_subset_order(
    length: int, n_visible: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniformly random visible subset of size n_visible, then the paper's convention.

    Returns (sigma [L], mask [L] bool with True = masked).
    """
    if not 0 <= n_visible <= length:
        raise ValueError(f"n_visible must be in [0, length={length}], got {n_visible}")
    perm = torch.randperm(length, generator=generator)
    mask = torch.ones(length, dtype=torch.bool)
    mask[perm[:n_visible]] = False
    sigma, _ = order_from_mask(mask)
    return sigma, mask


def random_order(
    length: int, rate: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's evaluation setting: mask a fraction ``rate`` of positions at random.

    ``int(L * (1 - rate)) + 1`` positions stay visible (so a 95% rate on 512 tokens keeps 26),
    chosen uniformly; the rest are decoded left to right. Returns (sigma [L], mask [L]).
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    n_visible = min(length, int(length * (1.0 - rate)) + 1)
    return random_subset_order(length, n_visible, generator)


def inverse_order(perm: torch.Tensor) -> torch.Tensor:
    """Inverse permutation along the last dim (sigma <-> pos_of_rank)."""
    inv = torch.empty_like(perm)
    idx = torch.arange(perm.shape[-1], device=perm.device).expand_as(perm)
    inv.scatter_(-1, perm, idx)
    return inv


def validate_order(
    sigma: torch.Tensor, n_prompt: torch.Tensor, length: torch.Tensor | None = None
) -> None:
    """Raise ValueError unless every row of sigma is a permutation of 0..L-1 and n_prompt fits.

    sigma: [B, L]; n_prompt: [B]; length: [B] (ranks >= length are padding).
    """
    if sigma.dim() != 2:
        raise ValueError(f"sigma must have shape [B, L], got {tuple(sigma.shape)}")
    B, L = sigma.shape
    if sigma.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"sigma must be an integer tensor, got {sigma.dtype}")
    if L == 0:
        raise ValueError("sequences must have at least one position")
    ok = (sigma.min() >= 0) and (sigma.max() < L)
    if ok:
        ok = bool((sigma.sort(-1).values == torch.arange(L, device=sigma.device)).all())
    if not ok:
        raise ValueError(
            "sigma is not a permutation of 0..L-1 in every row (each rank must appear once)"
        )
    if n_prompt.shape != (B,):
        raise ValueError(f"n_prompt must have shape [B]={B}, got {tuple(n_prompt.shape)}")
    end = length if length is not None else torch.full_like(n_prompt, L)
    if bool((n_prompt < 0).any()) or bool((n_prompt > end).any()):
        raise ValueError("n_prompt must lie in [0, length] for every row")
