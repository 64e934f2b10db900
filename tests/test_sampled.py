"""Exactness, sampled: the real batched sampler (TorchRng) against the exact joint, Pearson's
chi-square test.

Fixed seeds make the test deterministic; the threshold p > 1e-4 leaves room for honest samplers
while unverified parallel decoding is rejected by the same test.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from scipy.stats import chisquare

from assd import ASSD, MeanField, Sequential, make_batch, sample, sample_many
from assd.backends import ToyASARM
from assd.exact import sequential_joint
from assd.orders import order_from_mask, order_with_masked_order

N = 20_000


def ragged_batch():
    """Half the rows: length 6, prompt {0, 3}, left-to-right. Other half: length 5, custom order."""
    L = 6
    mask_a = torch.tensor([False, True, True, False, True, True])
    sig_a, p_a = order_from_mask(mask_a)
    mask_b = torch.tensor([True, False, True, True, True])
    sig_b, p_b = order_with_masked_order(mask_b, [4, 0, 3, 2])
    sig_b = torch.cat([sig_b, torch.tensor([5])])  # padding position 5 takes the last rank
    tok_a = torch.tensor([1, 0, 0, 2, 0, 0])
    tok_b = torch.tensor([0, 2, 0, 0, 0, 0])
    rows = [(tok_a, sig_a, p_a, L), (tok_b, sig_b, p_b, 5)]
    t, s, p, n = zip(*[rows[i % 2] for i in range(N)])
    return make_batch(torch.stack(t), torch.stack(s), torch.stack(p), torch.tensor(n)), rows


def chi_square_pvalue(counts: Counter, joint: dict) -> float:
    """Pearson chi-square p-value, pooling outcomes with expected count < 5."""
    n = sum(counts.values())
    obs, exp, pool_o, pool_e = [], [], 0.0, 0.0
    for k, p in joint.items():
        if p * n >= 5:
            obs.append(counts.get(k, 0))
            exp.append(p * n)
        else:
            pool_o += counts.get(k, 0)
            pool_e += p * n
    pool_o += sum(c for k, c in counts.items() if k not in joint)  # impossible outcomes
    if pool_e > 0 or pool_o > 0:
        obs.append(pool_o)
        exp.append(max(pool_e, 1e-9))
    return float(chisquare(obs, exp).pvalue)


def pvalues(sampler, seed, draft_head: bool = False, many: int | None = None):
    """many: sample through ``many`` rows refilled as they finish (assd.sample_many)."""
    model = ToyASARM(3, 6, seed=7, draft_head=draft_head)
    batch, rows = ragged_batch()
    g = torch.Generator().manual_seed(seed)
    if many is None:
        results = sample(model, batch, sampler, g, trace=False)
    else:
        results = sample_many(model, batch, sampler, g, batch_size=many)
    out = []
    for parity, (tok, sig, p, n) in enumerate(rows):
        one = make_batch(tok[:n], sig[:n], p)
        joint = sequential_joint(model, one, sampler.temperature)
        gen = [i for i in range(n) if sig[i] >= p]
        counts = Counter(tuple(results[b].tokens[i] for i in gen) for b in range(parity, N, 2))
        out.append(chi_square_pvalue(counts, joint))
    return out


EXACT = [
    Sequential(),
    ASSD(k=3),
    ASSD(k=4, temperature=0.7),
    ASSD(k=3, draft="bigram"),
    ASSD(k=3, bonus=True),
    ASSD(k=3, one_call=True),
]


@pytest.mark.parametrize("sampler", EXACT, ids=lambda s: s.name)
def test_exact_samplers_pass(sampler):
    assert min(pvalues(sampler, seed=1234)) > 1e-4


@pytest.mark.parametrize("sampler", [MeanField(k=4), ASSD(k=4, r_atol=0.9)], ids=lambda s: s.name)
def test_inexact_sampler_is_rejected(sampler):
    assert min(pvalues(sampler, seed=1234)) < 1e-4


def test_head_drafts_with_an_adaptive_draft_length_pass():
    """ASSD(draft="head", stop_below=): drafting stops after an unlikely proposal."""
    sampler = ASSD(k=3, draft="head", stop_below=0.4)
    assert min(pvalues(sampler, seed=4321, draft_head=True)) > 1e-4


def test_head_drafts_with_k_from_the_running_acceptance_pass():
    """ASSD(draft="head", adapt_k=): each row's k follows its running acceptance."""
    sampler = ASSD(k=3, draft="head", adapt_k=0.4)
    assert min(pvalues(sampler, seed=4321, draft_head=True)) > 1e-4


MANY = [
    Sequential(),
    ASSD(k=3),
    ASSD(k=3, one_call=True),
    ASSD(k=2, draft="head"),
    ASSD(k=3, draft="head", verify="block"),
    ASSD(k=3, draft="head", adapt_k=0.4),  # per-row running state: reset when a row is refilled
]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", MANY, ids=lambda s: s.name)
def test_continuous_batching_keeps_samplers_exact(sampler):
    """assd.sample_many: 20,000 sequences through 63 rows (odd: a row alternates between the two problems), each refilled as it finishes."""
    draft_head = getattr(sampler, "draft", "") == "head"
    assert min(pvalues(sampler, seed=99, draft_head=draft_head, many=63)) > 1e-4


@pytest.mark.slow
def test_continuous_batching_does_not_hide_an_inexact_sampler():
    assert min(pvalues(MeanField(k=4), seed=99, many=63)) < 1e-4
