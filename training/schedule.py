"""Schedules: the masking-rate range and the learning rate, both pure functions of the step.

Being stateless they need nothing in a checkpoint but the step, so a resumed run follows the
same schedule as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MaskSchedule:
    """Masking rate range: starts at ``[start, start]`` and widens linearly to
    ``[final_min, final_max]`` over ``warmup_steps``; rates are drawn stratified in the range.

    Early in training the model sees a moderate, fixed rate (an easy, dense signal); later it
    sees everything from nearly-complete infilling to nearly-unconditional generation.
    """

    start: float = 0.15
    final_min: float = 0.05
    final_max: float = 0.95
    warmup_steps: int = 1000

    def __post_init__(self):
        for name in ("start", "final_min", "final_max"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"mask {name} must lie in (0, 1], got {v}")
        if self.final_min > self.final_max:
            raise ValueError(
                f"mask final_min {self.final_min} must not exceed final_max {self.final_max}"
            )
        if self.warmup_steps < 0:
            raise ValueError(f"mask warmup_steps must be >= 0, got {self.warmup_steps}")

    def range_at(self, step: int) -> tuple[float, float]:
        t = 1.0 if self.warmup_steps == 0 else min(1.0, step / self.warmup_steps)
        lo = self.start + t * (self.final_min - self.start)
        hi = self.start + t * (self.final_max - self.start)
        return lo, hi

    def sample(self, step: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n] rates, one in each of n equal strata of the range (lower variance than iid), shuffled."""
        lo, hi = self.range_at(step)
        u = (torch.arange(n) + torch.rand(n, generator=generator)) / n
        u = u[torch.randperm(n, generator=generator)]
        return lo + (hi - lo) * u


def n_masked_of(rates: torch.Tensor, length: int) -> torch.Tensor:
    """[B] rates -> [B] masked counts in [1, length - 1] (at least one visible, one to predict)."""
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}")
    return (rates * length).round().long().clamp(1, length - 1)


def lr_at(
    step: int, peak: float, warmup_steps: int, max_steps: int, final_ratio: float = 0.0
) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then linear decay to ``final_ratio * peak``
    at ``max_steps``. ``step`` counts optimizer steps already taken (0 = the first)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return peak * (1.0 - t * (1.0 - final_ratio))
