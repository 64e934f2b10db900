"""Bad input gets a clear, specific error."""

from __future__ import annotations

import pytest
import torch

import assd
from assd import ASSD, MeanField, Sequential, make_batch
from assd.backends import ToyASARM
from assd.text import MarkupError, parse_markup


def batch_of(mask):
    sigma, P = assd.order_from_mask(torch.tensor(mask))
    return torch.zeros(len(mask), dtype=torch.long), sigma, P


def test_no_masked_position():
    with pytest.raises(ValueError, match="nothing to generate"):
        make_batch(*batch_of([False, False, False]))


def test_everything_masked_when_model_needs_prompt():
    with pytest.raises(ValueError, match="at least one visible"):
        make_batch(*batch_of([True, True]), needs_prompt=True)
    make_batch(*batch_of([True, True]))  # fine for models that need no prompt


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one(k):
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        ASSD(k=k)
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        MeanField(k=k)


def test_k_wrong_type():
    with pytest.raises(TypeError, match="k must be an int"):
        ASSD(k=2.5)


@pytest.mark.parametrize("t", [0.0, -1.0, float("inf"), float("nan")])
def test_temperature_not_positive_and_finite(t):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        ASSD(temperature=t)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        Sequential(temperature=t)


def test_absurd_k_is_refused_and_large_k_allocates_only_what_can_matter():
    with pytest.raises(ValueError, match="k=1000000000 proposals per round"):
        ASSD(k=10**9)
    # k far beyond the masked count: shapes are capped at the 3 tokens to generate.
    model = ToyASARM(3, 4)
    tokens, sigma, P = batch_of([False, True, True, True])
    sampler = ASSD(k=1000, one_call=True)
    state = sampler.init(make_batch(tokens, sigma, P), (), 3)
    assert state.k == 3 and tuple(state.next_q.shape) == (1, 3, 3)
    res = assd.sample(
        model, make_batch(tokens, sigma, P), sampler, torch.Generator().manual_seed(0)
    )
    assert res[0].n_generated == 3 and res[0].nfe <= 3


def test_bad_sampler_options():
    with pytest.raises(ValueError, match="draft must be one of"):
        ASSD(draft="trigram")
    with pytest.raises(ValueError, match="r_atol"):
        ASSD(r_atol=1.5)
    with pytest.raises(ValueError, match="one_call"):
        ASSD(one_call=True, draft="bigram")


def test_sequence_longer_than_model_allows():
    model = ToyASARM(3, 4)
    tokens, sigma, P = batch_of([False, True, True, True, True])
    with pytest.raises(ValueError, match="exceeds the model's maximum of 4"):
        assd.sample(model, make_batch(tokens, sigma, P), Sequential())


def test_token_ids_outside_vocabulary():
    model = ToyASARM(3, 4)
    tokens, sigma, P = batch_of([False, True, True, True])
    tokens[0] = 7
    with pytest.raises(ValueError, match=r"vocab_size=3"):
        assd.sample(model, make_batch(tokens, sigma, P), Sequential())


def test_mismatched_batch_shapes():
    tokens, sigma, P = batch_of([False, True, True])
    with pytest.raises(ValueError, match="must match tokens shape"):
        make_batch(tokens, sigma[:2], P)
    with pytest.raises(ValueError, match="n_prompt must have shape"):
        make_batch(tokens.expand(2, 3), sigma.expand(2, 3), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="length must have shape"):
        make_batch(tokens, sigma, P, torch.tensor([3, 3]))


def test_orders_that_are_not_permutations():
    tokens, _, P = batch_of([False, True, True])
    with pytest.raises(ValueError, match="not a permutation"):
        make_batch(tokens, torch.tensor([0, 1, 1]), P)
    with pytest.raises(ValueError, match="not a permutation"):
        make_batch(tokens, torch.tensor([0, 1, 3]), P)
    with pytest.raises(ValueError, match="every masked position exactly once"):
        assd.order_with_masked_order(torch.tensor([False, True, True]), [1, 1])


def test_wrong_types():
    with pytest.raises(TypeError, match="integer tensor"):
        make_batch(torch.zeros(3), torch.arange(3), 1)
    with pytest.raises(TypeError, match="bool tensor"):
        assd.order_from_mask(torch.tensor([0, 1, 1]))


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("no masks here", "nothing to fill"),
        ("broken [MASK:] markup", "malformed"),
        ("broken [MASK:x] markup", "malformed"),
        ("unclosed [MASK:3", "malformed"),
        ("zero [MASK:0] tokens", "n >= 1"),
    ],
)
def test_markup_that_does_not_parse(tiny_model_dir, text, match):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(MarkupError, match=match):
        parse_markup(text, tok)
