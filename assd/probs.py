"""Logits to sampling distributions, shared by every sampler."""

from __future__ import annotations

import functools

import torch


def to_probs(
    logits: torch.Tensor, temperature: float, forbidden_ids: tuple[int, ...] = ()
) -> torch.Tensor:
    """softmax(logits / T) with forbidden tokens removed *before* normalising.

    logits [..., V] -> probs [..., V] in float32 (float64 stays float64).
    """
    x = logits.double() if logits.dtype == torch.float64 else logits.float()
    if temperature != 1:  # x / 1 is x: one kernel less per call at T = 1
        x = x / temperature
    if forbidden_ids:
        x = x + forbidden_bias(forbidden_ids, x.shape[-1], x.device, x.dtype)
    return torch.softmax(x, dim=-1)


def log_probs(
    logits: torch.Tensor, temperature: float, forbidden_ids: tuple[int, ...] = ()
) -> torch.Tensor:
    """log of :func:`to_probs`, computed as a log-softmax (no float32 underflow to -inf)."""
    x = logits.double() if logits.dtype == torch.float64 else logits.float()
    if temperature != 1:  # x / 1 is x: one kernel less per call at T = 1
        x = x / temperature
    if forbidden_ids:
        x = x + forbidden_bias(forbidden_ids, x.shape[-1], x.device, x.dtype)
    return torch.log_softmax(x, dim=-1)


@functools.lru_cache(maxsize=32)
def forbidden_bias(
    ids: tuple[int, ...], V: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """[V] with -inf at the forbidden ids (ids >= V do not exist and are ignored), 0 elsewhere.

    Built once per (ids, V, device, dtype): the one definition of which tokens may be generated.
    Built on ``device`` with scalar fills, no host-to-device copy: a compiled round traces
    through this cache, and a copy from pageable host memory cannot be captured in a CUDA graph.
    """
    bias = torch.zeros(V, dtype=dtype, device=device)
    for i in sorted({i for i in ids if 0 <= i < V}):
        bias[i] = float("-inf")
    return bias


def allowed(ids: tuple[int, ...], V: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[V] 1 for tokens that may be generated, 0 for forbidden ones."""
    return (forbidden_bias(ids, V, device, dtype) == 0).to(dtype)


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(p - q, 0)) along the last dim; falls back to p where p and q coincide.

    The fallback only matters where rejection had probability zero (p <= q everywhere means
    p == q), so it never changes the output distribution.
    """
    r = (p - q).clamp(min=0)
    total = r.sum(-1, keepdim=True)
    return torch.where(total > 0, r / total.clamp(min=torch.finfo(r.dtype).tiny), p)
