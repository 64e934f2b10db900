"""Block verification: exact (enumerated), the paper's worked example, never worse than tokens."""

from __future__ import annotations

import itertools

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import toy_problems

from assd import ASSD
from assd.exact import max_abs_difference, sampler_distribution, sequential_joint
from assd.samplers.speculative import block_accept

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(toy_problems(max_outcomes=64), st.sampled_from([0.5, 1.0, 1.7]), st.data())
def test_block_verification_is_exact_for_every_drafter(problem, t, data):
    model, batch, m = problem
    model.has_draft_head = True
    k = data.draw(st.integers(1, m))
    form = data.draw(st.sampled_from(["self", "bigram", "head", "one-call"]))
    s = ASSD(
        k=k,
        temperature=t,
        draft="self" if form == "one-call" else form,
        one_call=form == "one-call",
        bonus=data.draw(st.booleans()),
        verify="block",
    )
    got = sampler_distribution(model, batch, s)
    assert abs(sum(got.values()) - 1) < 1e-9
    assert max_abs_difference(got, sequential_joint(model, batch, t)) < 1e-9


class Recorder:
    """An Rng that records the acceptance probabilities block_accept tests and keeps none."""

    def first_rejection(self, accept, count):
        self.accept, self.count = accept.clone(), count.clone()
        return torch.zeros_like(count)


def expected_kept(p, q, x):
    """E[kept] of block verification for fixed drafts x [K], from its recorded coins."""
    K = x.shape[0]
    px, qx = p[torch.arange(K), x], q[torch.arange(K), x]
    rec = Recorder()
    block_accept(p[None], q[None], (px / qx)[None], torch.tensor([K]), rec)
    keep = 1 - rec.accept[0]  # position t keeps prefix K - t with this probability
    reach, total = 1.0, 0.0
    for t in range(K):
        total += reach * float(keep[t]) * (K - t)
        reach *= 1 - float(keep[t])
    return total


def expected_kept_tokens(p, q, x):
    K = x.shape[0]
    ratio = (p[torch.arange(K), x] / q[torch.arange(K), x]).clamp(max=1)
    return float(sum(torch.cumprod(ratio, 0)))


def test_the_papers_worked_example_keeps_11_ninths():
    """Sun et al.'s example: target (1/3, 2/3), draft (2/3, 1/3), two drafts, context-free:
    token verification keeps 10/9 drafts in expectation, block verification 11/9."""
    p = torch.tensor([[1 / 3, 2 / 3]] * 2, dtype=torch.float64)
    q = torch.tensor([[2 / 3, 1 / 3]] * 2, dtype=torch.float64)
    block = token = 0.0
    for x in itertools.product(range(2), repeat=2):
        prob = float(q[0, x[0]] * q[1, x[1]])
        block += prob * expected_kept(p, q, torch.tensor(x))
        token += prob * expected_kept_tokens(p, q, torch.tensor(x))
    assert abs(token - 10 / 9) < 1e-12
    assert abs(block - 11 / 9) < 1e-12


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 3), st.integers(1, 3), st.integers(0, 10**6))
def test_block_verification_never_keeps_fewer_than_token_verification(V, K, seed):
    """Averaged over the draft blocks (context-free rows), block >= token in expectation."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(K, V, generator=g, dtype=torch.float64) + 0.05
    q = torch.rand(K, V, generator=g, dtype=torch.float64) + 0.05
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    block = token = 0.0
    for x in itertools.product(range(V), repeat=K):
        xt = torch.tensor(x)
        prob = float(q[torch.arange(K), xt].prod())
        block += prob * expected_kept(p, q, xt)
        token += prob * expected_kept_tokens(p, q, xt)
    assert block >= token - 1e-12
