"""Seeds derived from several integers, so every random draw is a function of (seed, rank, step...)."""

from __future__ import annotations

import hashlib


def mix_seed(*xs: int) -> int:
    """A 63-bit seed from several integers (distinct tuples -> distinct seeds, in practice)."""
    h = hashlib.blake2b(repr(xs).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)
