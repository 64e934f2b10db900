"""TorchRng.categorical at the edges: a uniform that rounds up to the total mass."""

from __future__ import annotations

import torch

from assd.rng import TorchRng


def _rng_with(u: float, B: int = 1, S: int = 1) -> TorchRng:
    rng = TorchRng(torch.Generator().manual_seed(0))
    rng.start_round(B, torch.device("cpu"))
    rng.block = torch.full((B, S), u)  # the draws' uniforms
    return rng


def test_a_uniform_at_the_total_gives_the_last_token_with_mass():
    """u * total can round up to the total: the search then runs past the last token with
    mass (here onto zero-probability tokens); the draw must take the last token with mass."""
    probs = torch.tensor([[[0.2, 0.3, 0.5, 0.0, 0.0]]])
    got = _rng_with(1.0).categorical(probs, torch.tensor([[True]]))
    assert got.tolist() == [[2]]
    # Unnormalised rows (the sibling draws use them) and mass in the middle only.
    probs = torch.tensor([[[0.0, 0.7, 0.0, 0.1, 0.0, 0.0]]])
    assert _rng_with(1.0).categorical(probs, torch.tensor([[True]])).tolist() == [[3]]


def test_ordinary_uniforms_follow_the_cdf():
    probs = torch.tensor([[[0.2, 0.0, 0.3, 0.5]]])
    for u, want in [(0.0, 0), (0.19, 0), (0.2, 2), (0.49, 2), (0.5, 3), (0.999, 3)]:
        assert _rng_with(u).categorical(probs, torch.tensor([[True]])).tolist() == [[want]], u
    assert _rng_with(0.5).categorical(probs, torch.tensor([[False]])).tolist() == [[0]]


def test_a_round_block_starts_wide_and_grows_only_past_its_start():
    """Rounds read their uniforms from one block that starts ROUND_WIDTH wide, so a round that
    reads fewer draws exactly what a replayed graph of it draws (one block of that width)."""
    from assd.rng import ROUND_WIDTH

    g = torch.Generator().manual_seed(3)
    rng = TorchRng(g)
    rng.start_round(2, torch.device("cpu"))
    assert rng.block.shape == (2, ROUND_WIDTH) and not rng.grown
    first = rng._uniform((2, 10), torch.zeros(1))
    want = torch.rand((2, ROUND_WIDTH), generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, want[:, :10]), "the round's uniforms come from the one block"
    rng._uniform((2, ROUND_WIDTH), torch.zeros(1))  # past the start: the block grows
    assert rng.grown and rng.width == ROUND_WIDTH + 10
    rng.start_round(2, torch.device("cpu"))
    assert rng.block.shape == (2, ROUND_WIDTH + 10), "later rounds draw the grown width at once"
