"""Checks of sampler settings, with errors that name the argument and the fix."""

from __future__ import annotations

import math

MAX_K = 1024  # far beyond any useful number of proposals per round (3-10 are typical)


def check_k(k) -> None:
    if not isinstance(k, int) or isinstance(k, bool):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k (tokens drafted per round) must be >= 1, got {k}")
    if k > MAX_K:
        raise ValueError(
            f"k={k} proposals per round is more than any useful setting (at most {MAX_K}; "
            "3-10 are typical): use a smaller k"
        )


def check_temperature(t) -> None:
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        raise TypeError(f"temperature must be a number, got {type(t).__name__}")
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(
            f"temperature must be a finite number > 0, got {t} "
            "(use a small value such as 0.1 for near-greedy, 1.0 for the model's own distribution)"
        )
