"""Hostile and careless inputs get a ValueError/TypeError that names the argument (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import assd
from assd.backends import ToyASARM, XLNetEngine, XLNetReference
from assd.model import check_mask_id, make_batch
from assd.rng import generator


def one_row(mask):
    sigma, P = assd.order_from_mask(torch.tensor(mask))
    return torch.tensor([0, 1, 2, 0, 1][: len(mask)]), sigma, P


@pytest.mark.parametrize("bad", [2.5, 2.0, True, torch.tensor(1.5), np.float64(1.0), "2", None])
def test_n_prompt_must_be_a_whole_number(bad):
    tokens, sigma, _ = one_row([False, False, True, True])
    with pytest.raises(TypeError, match="n_prompt must be an int"):
        make_batch(tokens, sigma, bad)


def test_counts_that_are_whole_numbers_pass():
    tokens, sigma, _ = one_row([False, False, True, True])
    for ok in (2, np.int64(2), torch.tensor(2), torch.tensor([2], dtype=torch.int32), [2]):
        b = make_batch(tokens, sigma, ok)
        assert b.n_prompt.tolist() == [2] and b.n_prompt.dtype == torch.long
    with pytest.raises(ValueError, match="n_prompt must fit in int64"):
        make_batch(tokens, sigma, 10**30)
    with pytest.raises(TypeError, match="length must be an int"):
        make_batch(tokens, sigma, 2, length=torch.tensor([3.5]))


def test_sigma_must_be_integer():
    tokens, sigma, P = one_row([False, True, True])
    with pytest.raises(TypeError, match="sigma must be an integer tensor"):
        make_batch(tokens, sigma.float(), P)


def test_empty_batches():
    with pytest.raises(ValueError, match="batch is empty"):
        make_batch(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="sequences are empty"):
        make_batch(torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, dtype=torch.long), 0)
    empty = assd.Batch(*(torch.zeros(0, 3, dtype=torch.long),) * 2, *(torch.zeros(0).long(),) * 2)
    with pytest.raises(ValueError, match="batch is empty"):
        assd.sample(ToyASARM(3, 3), empty, assd.ASSD(k=2))


def test_placeholder_ids_outside_the_vocabulary():
    """Masked positions may hold any placeholder id, but a valid one (a backend may embed it)."""
    tokens, sigma, P = one_row([False, True, True])
    tokens[2] = -1
    make_batch(tokens, sigma, P)  # no vocabulary given: nothing to check against
    with pytest.raises(ValueError, match="masked and padding positions must lie in"):
        make_batch(tokens, sigma, P, vocab_size=3)
    with pytest.raises(ValueError, match="masked and padding positions"):
        assd.sample(ToyASARM(3, 3), make_batch(tokens, sigma, P), assd.Sequential())


def test_prompt_with_the_mask_token():
    tokens, sigma, P = one_row([False, False, True, True])  # prompt: positions 0, 1
    make_batch(tokens, sigma, P, mask_id=2)  # the mask id at a masked position is fine
    tokens[1] = 2
    with pytest.raises(ValueError, match=r"mask token \(id 2\) at row 0, position 1"):
        make_batch(tokens, sigma, P, mask_id=2)
    make_batch(tokens, sigma, P)  # without a mask id nothing is checked


@pytest.mark.parametrize(
    "mask_id, err, match",
    [(True, TypeError, "mask_id must be an int"), (1.0, TypeError, "mask_id must be an int"),
     (-1, ValueError, "mask_id must lie in"), (3, ValueError, r"vocab_size=3\)")],
)  # fmt: skip
def test_mask_id_itself_is_checked(mask_id, err, match):
    with pytest.raises(err, match=match):
        check_mask_id(mask_id, 3)
    tokens, sigma, P = one_row([False, True, True])
    with pytest.raises(err, match=match):
        make_batch(tokens, sigma, P, vocab_size=3, mask_id=mask_id)


def test_backends_carry_a_mask_id():
    from conftest import make_tiny_xlnet

    net = make_tiny_xlnet(20)
    assert ToyASARM(3, 4).mask_id is None
    assert XLNetReference(net).mask_id is None and XLNetEngine.from_hf(net).mask_id is None
    assert XLNetReference(net, mask_id=5).mask_id == 5
    assert XLNetEngine.from_hf(net, mask_id=np.int64(5)).mask_id == 5
    with pytest.raises(ValueError, match="vocab_size=20"):
        XLNetEngine.from_hf(net, mask_id=20)


def test_seed_helper():
    assert generator(0).initial_seed() == 0
    assert generator(2**63 - 1).initial_seed() == 2**63 - 1
    assert generator(np.int64(7), device="cpu").initial_seed() == 7
    a, b = torch.rand(4, generator=generator(123)), torch.rand(4, generator=generator(123))
    assert torch.equal(a, b) and not torch.equal(a, torch.rand(4, generator=generator(124)))
    for bad in (10**30, 2**63, -1):
        with pytest.raises(ValueError, match=r"seed must lie in \[0, 2\*\*63\)"):
            generator(bad)
    for bad in (True, 2.5, "3", None):
        with pytest.raises(TypeError, match="seed must be an int"):
            generator(bad)
