"""Randomness for samplers, behind two operations.

Samplers draw every random choice through an ``Rng``: a categorical draw and the speculative
acceptance test (the index of the first rejection). ``TorchRng`` uses a ``torch.Generator``;
``assd.exact`` swaps in an enumerating Rng that walks every outcome of the *same* sampler code,
which is how the exactness tests compute a sampler's output distribution exactly.

``generator(seed)`` builds the seeded ``torch.Generator`` callers pass to ``assd.sample``, with a
clear error for seeds that ``torch.Generator.manual_seed`` would reject or silently wrap.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from typing import Protocol

import torch

MAX_SEED = 2**63  # seeds lie in [0, MAX_SEED): one signed 64-bit word


def generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default: the CPU) seeded with ``seed``.

    seed: an int in [0, 2**63) (bools and floats are refused: they are almost always a mistake).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"seed must be an int in [0, 2**63), got {type(seed).__name__} {seed!r:.40}"
        )
    if not 0 <= int(seed) < MAX_SEED:
        raise ValueError(f"seed must lie in [0, 2**63) (a non-negative 63-bit int), got {seed}")
    g = torch.Generator(device=device if device is not None else "cpu")
    return g.manual_seed(int(seed))


class Rng(Protocol):
    def categorical(self, probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """probs [B, S, V] (rows sum to 1 where valid), valid [B, S] -> samples [B, S] (0 if invalid)."""
        ...

    def first_rejection(self, accept: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """accept [B, K] acceptance probabilities, count [B] how many are tested ->
        [B] number accepted before the first rejection (count if none), testing in order."""
        ...


ROUND_WIDTH = 64  # uniforms per row a round's block starts with (rounds rarely read more)


class TorchRng:
    """Draws with a ``torch.Generator``, one block of uniforms per round.

    Each round reads its uniforms from one block [B, width] drawn at the start of the round
    (``start_round``). The block starts ROUND_WIDTH wide, more than the rounds of every sampler
    in the round-graph tests read; a round that reads more (large k with token trees) grows it
    piece by piece, and the grown width is used in every later round, since a sampler's rounds
    consume fixed shapes. So an eager round and a replayed CUDA graph of the same round read the
    same numbers, the first round too unless it grew the block (``grown``): the graph path gives
    the same tokens as the eager path for the same seed.
    """

    def __init__(self, generator: torch.Generator | None = None, width: int = ROUND_WIDTH):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                "(assd.rng.generator(seed) makes one from an int seed)"
            )
        self.generator = generator
        self.initial = self.width = width  # uniforms per row per round
        self.block: torch.Tensor | None = None  # [B, >= width] this round's uniforms
        self.used = 0
        self.frozen = False  # True while a round is captured: the block may not grow

    @property
    def grown(self) -> bool:
        """Did a round read more than the starting width (so the first round drew in pieces)?"""
        return self.width > self.initial

    def draw(self, shape, device) -> torch.Tensor:
        """Fresh uniforms [shape] float32 from the generator, on ``device``."""
        g = self.generator
        u = torch.rand(shape, generator=g, device=g.device if g is not None else device)
        return u.to(device)

    def start_round(self, batch_size: int, device) -> None:
        self.used = 0
        self.block = self.draw((batch_size, self.width), device)

    def _uniform(self, shape, like: torch.Tensor) -> torch.Tensor:
        B, n = shape[0], math.prod(shape[1:])
        if self.block is None or self.block.shape[0] != B:  # used outside the sampling loop
            self.start_round(B, like.device)
        if self.used + n > self.block.shape[1]:
            if self.frozen:
                raise RuntimeError("a captured round asked for more random numbers than its block")
            extra = self.draw((B, self.used + n - self.block.shape[1]), like.device)
            self.block = torch.cat([self.block, extra], 1)
            self.width = max(self.width, self.block.shape[1])
        u = self.block[:, self.used : self.used + n].reshape(shape)
        self.used += n
        return u.to(like.dtype)

    def categorical(self, probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # Inverse CDF: one uniform per draw, works on any device and batch shape.
        cdf = probs.cumsum(-1)
        u = self._uniform(probs.shape[:-1], probs) * cdf[..., -1]
        idx = torch.searchsorted(cdf, u.unsqueeze(-1), right=True).squeeze(-1)
        idx = idx.clamp(max=probs.shape[-1] - 1)
        # Never return a zero-probability token: u can round up to the total, past the last
        # token with mass; then take that token (the first index where the cdf reaches its
        # total). A search, not an argmax: Triton cannot compile an argmax over a 32k vocabulary
        # at batch 1 ("NYI TritonSplitDimKernel reductions").
        bad = torch.gather(probs, -1, idx.unsqueeze(-1)).squeeze(-1) <= 0
        last = torch.searchsorted(cdf, cdf[..., -1:].contiguous(), right=False).squeeze(-1)
        idx = torch.where(bad, last.clamp(max=probs.shape[-1] - 1), idx)
        return torch.where(valid, idx, 0)

    def first_rejection(self, accept: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        K = accept.shape[1]
        u = self._uniform(accept.shape, accept)
        tested = torch.arange(K, device=accept.device) < count[:, None]
        rejected = (u >= accept) & tested
        first = torch.where(rejected, torch.arange(K, device=accept.device), K).min(-1).values
        return torch.minimum(first, count)


def mix_seed(*xs: int) -> int:
    """A 63-bit seed from several integers: the one seeding convention of the project.

    Every random draw of training and evaluation is seeded by ``mix_seed(run seed, indices...,
    purpose tag)``: distinct tuples give distinct, well-mixed seeds (no arithmetic such as
    ``seed * 1_000_003 + i`` whose streams can collide)."""
    h = hashlib.blake2b(repr(xs).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)
