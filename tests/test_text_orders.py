"""Orders and mask markup."""

from __future__ import annotations

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


@given(st.integers(1, 600), st.floats(0.01, 1.0))
def test_random_order_visible_count(L, rate):
    sigma, mask = assd.random_order(L, rate, torch.Generator().manual_seed(0))
    assert int((~mask).sum()) == min(L, int(L * (1 - rate)) + 1)
    assert sorted(sigma.tolist()) == list(range(L))
    assert bool((sigma[~mask] < int((~mask).sum())).all())


def test_paper_setting_is_26_of_512():
    _, mask = assd.random_order(512, 0.95)
    assert int((~mask).sum()) == 26


def test_user_order():
    sigma, P = assd.order_with_masked_order(torch.tensor([False, True, True, True]), [3, 1, 2])
    assert sigma.tolist() == [0, 2, 3, 1] and int(P) == 1


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
