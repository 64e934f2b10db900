"""The protocol's helpers: batch checks against a model, the query sets samplers send."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import assd
from assd.backends import ToyASARM
from assd.model import (
    check_queries,
    checked_batch,
    draft_queries,
    make_batch,
    one_call_queries,
    oracle_queries,
)
from assd.samplers.drafts import OneCallDraft, Proposals
from assd.samplers.state import init_state


def one_row(mask, tokens=None):
    sigma, P = assd.order_from_mask(torch.tensor(mask))
    tokens = torch.zeros(len(mask), dtype=torch.long) if tokens is None else torch.tensor(tokens)
    return assd.Batch(tokens[None], sigma[None], P[None], torch.tensor([len(mask)]))


def test_checked_batch_applies_the_models_rules():
    model = ToyASARM(3, 4, needs_prompt=True)
    b = checked_batch(model, one_row([False, True, True]))
    assert b.tokens.device == model.device and b.n_prompt.tolist() == [1]
    with pytest.raises(TypeError, match="batch must be an assd.Batch, got tuple"):
        checked_batch(model, (b.tokens, b.sigma))
    with pytest.raises(ValueError, match="exceeds the model's maximum of 4"):
        checked_batch(model, one_row([False, True, True, True, True]))
    with pytest.raises(ValueError, match="vocab_size=3"):
        checked_batch(model, one_row([False, True], tokens=[5, 0]))
    with pytest.raises(ValueError, match="needs at least one visible"):
        checked_batch(model, one_row([True, True]))
    model.mask_id = 2  # a model with a mask token: the prompt must not contain it
    with pytest.raises(ValueError, match="the prompt contains the mask token"):
        checked_batch(model, one_row([False, True], tokens=[2, 0]))
    with pytest.raises(ValueError, match="the prompt contains the mask token"):
        assd.log_likelihood(model, one_row([False, True], tokens=[2, 0]))  # the same checks


def test_query_sets_literal_values():
    t = torch.tensor
    rank, ctx = draft_queries(t([2, 4]), 3, t([6, 5]))
    assert rank.tolist() == [[2, 3, 4], [4, -1, -1]] and ctx.tolist() == [[2, 2, 2], [4, -1, -1]]
    rank, ctx = oracle_queries(t([2, 4]), 3, t([6, 5]))
    assert rank.tolist() == [[2, 3, 4], [4, -1, -1]] and ctx.tolist() == rank.tolist()
    # One-call, n=2, k=2, one proposal this round (kk=1), length 6. Outcome a=0: the token at
    # rank 2 is drawn, drafts of ranks 3, 4 given ranks < 2; a=1: ranks 4, 5 given ranks < 3;
    # a=2 cannot happen with one proposal.
    rank, ctx = one_call_queries(t([2]), 2, t([1]), t([True]), t([6]))
    assert rank.tolist() == [[3, 4, 4, 5, -1, -1]] and ctx.tolist() == [[2, 2, 3, 3, -1, -1]]
    rank, _ = one_call_queries(t([2]), 2, t([2]), t([True]), t([5]))  # rank 5 is past the end
    assert rank.tolist() == [[3, 4, 4, -1, -1, -1]]
    rank, _ = one_call_queries(t([2]), 2, t([2]), t([False]), t([6]))  # a finished row
    assert rank.tolist() == [[-1] * 6]


def test_one_call_queries_are_what_the_one_call_sampler_sends():
    B, L, K = 4, 9, 3
    sigma = torch.stack(
        [torch.randperm(L, generator=torch.Generator().manual_seed(b)) for b in range(B)]
    )
    batch = make_batch(
        torch.zeros(B, L, dtype=torch.long),
        sigma,
        torch.tensor([1, 2, 3, 2]),
        torch.tensor([9, 9, 9, 9]),
    )
    sampler = assd.ASSD(k=K, one_call=True)
    state = init_state(batch, (), 5, K, carried=True)
    for n, kk in [
        ([1, 2, 3, 2], [0, 0, 0, 0]),
        ([3, 6, 8, 9], [3, 2, 1, 0]),
        ([5, 7, 3, 4], [1, 2, 3, 3]),
    ]:
        st = replace(state, n=torch.tensor(n))
        z = torch.zeros(B, dtype=torch.long)
        props = Proposals(
            torch.zeros(B, K, dtype=torch.long),
            torch.zeros(B, K, 5),
            torch.tensor(kk),
            st.active,
            z,
            z,
        )
        want = OneCallDraft().extra_queries(sampler, st, props)
        got = one_call_queries(st.n, K, props.k, st.active, st.end)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        # and they respect the protocol (proposals n .. n+kk-1 filled in)
        check_queries(batch, st.n, props.k, *got)
