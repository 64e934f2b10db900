"""Decoding orders as rank vectors.

An order is a rank vector ``sigma`` of shape [L] (or [B, L]): ``sigma[pos]`` is the step at which
position ``pos`` is decoded. The prompt (visible positions) always takes ranks ``0..P-1``; it is
fully bidirectional among itself. The masked positions take ranks ``P..L-1`` and each one sees
the prompt and the lower ranks only. Every sampler and backend speaks ranks, never XLNet masks.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "ORDERS",
    "n_visible",
    "order_from_mask",
    "explicit_order",
    "order_with_masked_order",
    "shuffle_masked",
    "random_order",
    "random_subset_order",
    "validate_order",
    "inverse_order",
]

# Orders over the masked positions, by name: reading order (the paper's convention) or a
# uniformly random permutation. The library, the demo and training use these names.
ORDERS = ("left-to-right", "random")


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


def explicit_order(
    mask: torch.Tensor | Sequence[bool],
    masked_order: Sequence[Sequence[int]],
    length: torch.Tensor | Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """User-given decoding orders over the masked positions, one list per row.

    mask: [B, L] bool, True = masked. Row b generates the masked positions below ``length[b]``
    (default L) in the order ``masked_order[b]`` lists them (each exactly once); the visible
    positions come first, ascending, and positions >= length[b] (padding) take the last ranks.
    Returns (sigma [B, L] long, n_prompt [B] long).
    """
    mask = _as_mask(mask)
    if mask.dim() != 2:
        raise ValueError(
            f"explicit_order takes a batch: mask must have shape [B, L], got {tuple(mask.shape)}"
        )
    B, L = mask.shape
    if len(masked_order) != B:
        raise ValueError(
            f"masked_order must give one position list per row ({B}), got {len(masked_order)}"
        )
    ends = [L] * B if length is None else [int(n) for n in torch.as_tensor(length).tolist()]
    rows, n_prompt = [], []
    for b, (row, given, end) in enumerate(zip(mask.tolist(), masked_order, ends)):
        visible = [i for i in range(end) if not row[i]]
        masked = [i for i in range(end) if row[i]]
        order = [int(p) for p in given]
        if sorted(order) != masked:
            raise ValueError(
                f"the order of row {b} must list every masked position exactly once "
                f"(masked: {masked}, given: {order})"
            )
        rows.append(visible + order + list(range(end, L)))
        n_prompt.append(len(visible))
    pos_of_rank = torch.tensor(rows, dtype=torch.long, device=mask.device).view(B, L)
    return inverse_order(pos_of_rank), torch.tensor(n_prompt, device=mask.device)


def order_with_masked_order(
    mask: torch.Tensor | Sequence[bool], masked_positions: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A user-given decoding order over the masked positions of one sequence.

    masked_positions lists every masked position once, in the order they should be decoded.
    Returns (sigma [L], n_prompt []). (:func:`explicit_order` for a batch.)
    """
    mask = _as_mask(mask)
    if mask.dim() != 1:
        raise ValueError("order_with_masked_order takes one sequence: mask must have shape [L]")
    sigma, n_prompt = explicit_order(mask[None], [masked_positions])
    return sigma[0], n_prompt[0]


def shuffle_masked(
    sigma: torch.Tensor,
    n_prompt: torch.Tensor,
    n_masked: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A uniformly random decoding order over each row's masked positions.

    sigma: [B, L] ranks; n_prompt: [B]. The positions at ranks n_prompt .. n_prompt+n_masked-1
    (default: every rank >= n_prompt) get their ranks permuted uniformly at random, independently
    per row; every other rank (the prompt, padding after n_masked) stays where it is.
    Returns the new sigma [B, L].
    """
    if sigma.dim() != 2:
        raise ValueError(f"sigma must have shape [B, L], got {tuple(sigma.shape)}")
    B, L = sigma.shape
    P = n_prompt.to(sigma.device)[:, None]
    end = P + (n_masked.to(sigma.device)[:, None] if n_masked is not None else L)
    ranks = torch.arange(L, device=sigma.device).expand(B, L)
    inside = (ranks >= P) & (ranks < end)
    # Sorting the keys keeps ranks outside [P, end) in place (key = rank) and orders the ranks
    # inside by iid uniforms (keys in [P, P+1), below every rank >= end): a uniform permutation.
    # float64 uniforms make ties (which would favour the original order) vanishingly rare.
    dev = generator.device if generator is not None else sigma.device
    u = torch.rand(B, L, generator=generator, dtype=torch.float64, device=dev).to(sigma.device)
    key = torch.where(inside, P + u, ranks.double())
    pos_of_rank = torch.gather(inverse_order(sigma), 1, key.argsort(-1))
    return inverse_order(pos_of_rank)


def n_visible(length: int, rate: float) -> int:
    """How many of ``length`` positions stay visible when a fraction ``rate`` is masked.

    The paper's rule ``int(length * (1 - rate)) + 1`` (a 95% rate on 512 tokens keeps 26), at
    most ``length``: at least one position is always visible.
    """
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be a number in (0, 1], got {rate!r}")
    if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 0:
        raise ValueError(f"length must be an int >= 0, got {length!r}")
    return min(int(length), int(length * (1.0 - float(rate))) + 1)


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

    :func:`n_visible` positions stay visible, chosen uniformly; the rest are decoded left to
    right. Returns (sigma [L], mask [L]).
    """
    return random_subset_order(length, n_visible(length, rate), generator)


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
