"""Orders and mask markup."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import assd
from assd.text import Infill, decode, infills_to_batch, mask_span, parse_markup


@given(st.lists(st.booleans(), min_size=1, max_size=30))
def test_paper_convention(mask):
    sigma, P = assd.order_from_mask(torch.tensor(mask))
    vis = [i for i, m in enumerate(mask) if not m]
    hid = [i for i, m in enumerate(mask) if m]
    assert int(P) == len(vis)
    assert [int(sigma[i]) for i in vis] == list(range(len(vis)))  # prompt first, ascending
    assert [int(sigma[i]) for i in hid] == list(
        range(len(vis), len(mask))
    )  # then masked, ascending


@pytest.mark.parametrize(
    "length, rate, visible",
    [(512, 0.95, 26), (600, 0.01, 595), (10, 0.5, 6), (100, 0.1, 91), (20, 0.3, 15),
     (7, 0.99, 1), (3, 1.0, 1), (1, 0.5, 1), (0, 0.5, 0), (256, 0.25, 193)],
)  # fmt: skip
def test_n_visible_literal_values(length, rate, visible):
    assert assd.n_visible(length, rate) == visible


@given(st.integers(1, 600), st.floats(0.01, 1.0))
def test_visible_count_is_just_over_the_unmasked_fraction(L, rate):
    n = assd.n_visible(L, rate)
    assert 1 <= n <= L
    assert n == L or L * (1 - rate) < n <= L * (1 - rate) + 1 + 1e-9  # the next integer up
    assert assd.n_visible(L, min(1.0, rate + 0.1)) <= n  # more masking, fewer visible
    sigma, mask = assd.random_order(L, rate, torch.Generator().manual_seed(0))
    assert int((~mask).sum()) == n
    assert sorted(sigma.tolist()) == list(range(L))
    assert bool((sigma[~mask] < n).all())  # the prompt takes the first ranks


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_n_visible_refuses_rates_outside_the_unit_interval(bad):
    with pytest.raises(ValueError, match="rate must be a number in"):
        assd.n_visible(10, bad)


def test_paper_setting_is_26_of_512():
    _, mask = assd.random_order(512, 0.95)
    assert int((~mask).sum()) == 26


def test_user_order():
    sigma, P = assd.order_with_masked_order(torch.tensor([False, True, True, True]), [3, 1, 2])
    assert sigma.tolist() == [0, 2, 3, 1] and int(P) == 1


def test_explicit_orders_of_a_ragged_batch():
    # Row 0: length 5, visible {0, 3}, decode 4, 1, 2. Row 1: length 3, visible {1}, decode 2, 0;
    # its positions 3 and 4 are padding (masked, taking the last ranks in position order).
    mask = torch.tensor([[False, True, True, False, True], [True, False, True, True, True]])
    sigma, P = assd.explicit_order(mask, [[4, 1, 2], [2, 0]], length=[5, 3])
    assert sigma.tolist() == [[0, 3, 4, 1, 2], [2, 0, 1, 3, 4]]
    assert P.tolist() == [2, 1]
    with pytest.raises(ValueError, match="row 1 must list every masked position exactly once"):
        assd.explicit_order(mask, [[4, 1, 2], [2, 3]], length=[5, 3])
    with pytest.raises(ValueError, match="one position list per row"):
        assd.explicit_order(mask, [[4, 1, 2]])


def test_explicit_order_is_what_infills_to_batch_does(tiny_model_dir):
    """A drop-in for the text module's explicit orders (ragged rows, padding at the end)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    a = Infill.from_parts(tok, "The cat", 3, " mat.")
    b = parse_markup("[MASK:2] dog", tok)
    orders = [[p for p, m in reversed(list(enumerate(f.mask))) if m] for f in (a, b)]
    batch = infills_to_batch([a, b], order=orders)
    L = batch.tokens.shape[1]
    mask = torch.ones(2, L, dtype=torch.bool)
    for row, f in enumerate((a, b)):
        mask[row, : len(f.mask)] = torch.tensor(f.mask)
    sigma, P = assd.explicit_order(mask, orders, length=batch.length)
    assert torch.equal(sigma, batch.sigma) and torch.equal(P, batch.n_prompt)


def test_shuffle_masked_permutes_only_the_masked_ranks():
    # Row 0: 2 prompt ranks, 4 masked. Row 1: 1 prompt rank, 2 masked, 3 padding ranks.
    sigma0 = torch.tensor([[3, 0, 5, 2, 1, 4], [1, 0, 2, 3, 4, 5]])
    P, M = torch.tensor([2, 1]), torch.tensor([4, 2])
    g = torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(200):
        sigma = assd.shuffle_masked(sigma0, P, M, generator=g)
        for b in range(2):
            kept = (sigma0[b] < P[b]) | (sigma0[b] >= P[b] + M[b])  # prompt and padding
            assert torch.equal(sigma[b][kept], sigma0[b][kept])
            assert sorted(sigma[b].tolist()) == list(range(6))
        seen.add(tuple(sigma[0].tolist()))
    assert len(seen) == 24  # every order of row 0's 4 masked positions turns up
    again = assd.shuffle_masked(sigma0, P, M, generator=torch.Generator().manual_seed(3))
    first = assd.shuffle_masked(sigma0, P, M, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, first)  # a function of the generator
    everything = assd.shuffle_masked(sigma0[:1], P[:1], generator=torch.Generator().manual_seed(1))
    assert torch.equal(everything[0][sigma0[0] < 2], sigma0[0][sigma0[0] < 2])


def test_shuffle_masked_is_uniform():
    """3 masked positions: each of the 6 orders with probability 1/6 (chi-square, fixed seed)."""
    from collections import Counter

    from scipy.stats import chisquare

    n = 6000
    sigma0 = torch.tensor([[0, 2, 1, 3, 4]]).expand(n, 5)
    sigma = assd.shuffle_masked(
        sigma0, torch.full((n,), 2), generator=torch.Generator().manual_seed(5)
    )
    counts = Counter(tuple(r) for r in sigma[:, 2:].tolist())
    assert len(counts) == 6 and chisquare(list(counts.values())).pvalue > 1e-4


CODE = 'def f(x):\n    """Doc."""\n\tif x:\n        return [MASK:3]\n    return None\n'


def test_markup_round_trips_code_whitespace(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    inf = parse_markup(CODE, tok)
    assert inf.n_masked == 3
    text = decode(tok, [t for t, m in zip(inf.ids, inf.mask) if not m])
    assert text == CODE.replace(" [MASK:3]", "")  # the space before a mask joins the span
    single = parse_markup("a [MASK] b \\[MASK] c", tok)
    assert single.n_masked == 1
    assert "[MASK]" in decode(tok, [t for t, m in zip(single.ids, single.mask) if not m])


def test_mask_span_keeps_token_count(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "The cat sat on the mat."
    out = mask_span(tok, text, 4, 11)
    n = len(tok(" cat sat", add_special_tokens=False)["input_ids"])  # with the space before it
    assert out == f"The [MASK:{n}] on the mat."


def test_ragged_batch_and_random_order(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    a = Infill.from_parts(tok, "The cat", 4, " mat.")
    b = parse_markup("[MASK:2] dog", tok)
    batch = infills_to_batch([a, b], order="random", generator=torch.Generator().manual_seed(1))
    assert batch.length.tolist() == [len(a.ids), len(b.ids)]
    assert batch.n_prompt.tolist() == [len(a.ids) - 4, len(b.ids) - 2]
    # masked positions take the ranks right after the prompt; padding takes the last ones
    for row, inf in enumerate([a, b]):
        masked = [i for i, m in enumerate(inf.mask) if m]
        assert sorted(batch.sigma[row, masked].tolist()) == list(
            range(len(inf.ids) - inf.n_masked, len(inf.ids))
        )
