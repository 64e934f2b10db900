"""Hypothesis strategies for toy AS-ARM infilling problems (small enough to enumerate)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from assd.backends import ToyASARM
from assd.model import make_batch
from assd.orders import order_with_masked_order


@st.composite
def toy_problems(draw, max_outcomes: int = 128, needs_prompt: bool = False):
    """-> (model, batch of one sequence, number of masked tokens). V^m <= max_outcomes."""
    V = draw(st.integers(2, 4))
    L = draw(st.integers(2, 7))
    max_m = 1
    while V ** (max_m + 1) <= max_outcomes and max_m + 1 <= L:
        max_m += 1
    m = draw(st.integers(1, min(max_m, L - 1 if needs_prompt else L)))
    masked = draw(st.permutations(range(L)))[:m]  # also the decoding order over masked positions
    mask = torch.zeros(L, dtype=torch.bool)
    mask[list(masked)] = True
    forbidden = draw(st.sampled_from([(), (V - 1,)])) if V >= 3 else ()
    model = ToyASARM(V, L, seed=draw(st.integers(0, 10_000)), forbidden_ids=forbidden)
    allowed = [t for t in range(V) if t not in forbidden]
    tokens = torch.tensor([draw(st.sampled_from(allowed)) for _ in range(L)])
    sigma, n_prompt = order_with_masked_order(mask, list(masked))
    return model, make_batch(tokens, sigma, n_prompt), m
