"""Exactness, computed: every exact sampler's output distribution equals the sequential joint.

The distribution is computed by ``assd.exact.sampler_distribution``, which runs the samplers'
real ``step`` code with an enumerating Rng (every random choice branched with its probability).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import toy_problems

from assd import ASSD, MeanField, Sequential
from assd.exact import max_abs_difference, sampler_distribution, sequential_joint

TEMPS = st.sampled_from([0.5, 1.0, 1.7])
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(model, batch, sampler, temperature_of_target):
    got = sampler_distribution(model, batch, sampler)
    want = sequential_joint(model, batch, temperature_of_target)
    assert abs(sum(got.values()) - 1) < 1e-9
    assert max_abs_difference(got, want) < 1e-9, sampler


@SETTINGS
@given(toy_problems(), TEMPS)
def test_sequential_is_the_joint(problem, t):
    model, batch, m = problem
    check(model, batch, Sequential(temperature=t), t)


@SETTINGS
@given(toy_problems(), TEMPS, st.data())
def test_paper_assd_is_exact(problem, t, data):
    model, batch, m = problem
    k = data.draw(st.integers(1, m))
    check(model, batch, ASSD(k=k, temperature=t), t)


@SETTINGS
@given(toy_problems(), TEMPS, st.data())
def test_bigram_assd_is_exact(problem, t, data):
    model, batch, m = problem
    k = data.draw(st.integers(1, m))
    check(model, batch, ASSD(k=k, temperature=t, draft="bigram", bonus=data.draw(st.booleans())), t)


@SETTINGS
@given(toy_problems(), TEMPS, st.data())
def test_bonus_assd_is_exact(problem, t, data):
    model, batch, m = problem
    k = data.draw(st.integers(1, m))
    check(model, batch, ASSD(k=k, temperature=t, bonus=True), t)


@SETTINGS
@given(toy_problems(max_outcomes=64), TEMPS, st.data())
def test_one_call_assd_is_exact(problem, t, data):
    model, batch, m = problem
    k = data.draw(st.integers(1, m))
    check(model, batch, ASSD(k=k, temperature=t, one_call=True), t)


@SETTINGS
@given(toy_problems(), st.sampled_from([0.5, 2.0]), st.data())
def test_untempered_oracle_targets_the_t1_joint(problem, t, data):
    model, batch, m = problem
    k = data.draw(st.integers(1, m))
    check(model, batch, ASSD(k=k, temperature=t, untempered_oracle=True), 1.0)


@pytest.mark.parametrize("sampler", [MeanField(k=3), ASSD(k=3, r_atol=0.5)])
def test_inexact_samplers_are_detected(sampler):
    """The enumeration is sharp: unverified parallel decoding and lossy r_atol differ from the joint."""
    import torch

    from assd.backends import ToyASARM
    from assd.model import make_batch
    from assd.orders import order_from_mask

    model = ToyASARM(3, 5, seed=1)
    sigma, P = order_from_mask(torch.tensor([False, True, True, True, True]))
    batch = make_batch(torch.zeros(5, dtype=torch.long), sigma, P)
    got = sampler_distribution(model, batch, sampler)
    assert max_abs_difference(got, sequential_joint(model, batch)) > 1e-3
