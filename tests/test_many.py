"""assd.sample_many: continuous batching (rows refilled with new sequences as they finish).

Its exactness is tested in test_sampled.py (20,000 sequences through 63 rows); here: the engine
gives the reference's tokens, results come back complete and in order, bad input is refused.
"""

from __future__ import annotations

import pytest
import torch

import assd
from assd import ASSD, Sequential, make_batch
from assd.backends import ToyASARM, XLNetEngine, XLNetReference
from assd.heads import DraftHead, HeadConfig

SAMPLERS = [
    Sequential(),
    ASSD(k=3),
    ASSD(k=2, one_call=True),
    ASSD(k=2, draft="head"),
    ASSD(k=3, draft="head", verify="block"),
    ASSD(k=3, draft="head", candidates=2),
]


def net_head_and_batch(N=7, L=16, seed=0, V=30, init=0.02):
    from transformers import XLNetConfig, XLNetLMHeadModel

    torch.manual_seed(seed)
    cfg = XLNetConfig(
        vocab_size=V,
        d_model=32,
        n_layer=2,
        n_head=4,
        d_inner=64,
        dropout=0.0,
        initializer_range=init,
    )
    net = XLNetLMHeadModel(cfg).eval()
    head = DraftHead(HeadConfig(d_model=32, vocab_size=V, n_head=2, d_head=16, d_inner=48))
    g = torch.Generator().manual_seed(seed + 1)
    tok = torch.randint(1, V, (N, L), generator=g)
    rows = [assd.random_order(L, 0.5 + 0.4 * (i == 0), g) for i in range(N)]  # row 0 widest
    sigma = torch.stack([r[0] for r in rows])
    n_prompt = torch.stack([(~r[1]).sum() for r in rows])
    length = torch.tensor([L] + [L - (i % 3) for i in range(1, N)])  # ragged rows too
    for i in range(N):  # ragged rows: their padding positions take the last ranks
        if length[i] < L:
            keep = sigma[i, : length[i]].argsort().argsort()
            sigma[i] = torch.cat([keep, torch.arange(length[i], L)])
            n_prompt[i] = min(int(n_prompt[i]), int(length[i]) - 1)
    return net, head, make_batch(tok, sigma, n_prompt, length)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_the_engine_refills_rows_as_the_reference_does(sampler):
    """Same seed -> same tokens on the reference (every call recomputed: the ground truth) and
    on the engine, cached or not, with the round machinery (static buffers) or without: a
    refilled row's cached states of its old sequence must all be forgotten. (A vocabulary of 4
    makes a new sequence's token at a rank often equal the old one's: a cache that judged
    states by tokens alone would then reuse a stale state.)"""
    net, head, batch = net_head_and_batch(N=12, V=4)
    models = [
        XLNetReference(net, forbidden_ids=(0,), head=head),
        XLNetEngine.from_hf(net, forbidden_ids=(0,), head=head),
        XLNetEngine.from_hf(net, forbidden_ids=(0,), head=head, cache=False),
    ]
    outs = []
    for model in models:
        res = assd.sample_many(
            model, batch, sampler, torch.Generator().manual_seed(5), batch_size=3
        )
        outs.append([(r.tokens, r.nfe, r.rounds) for r in res])
    # The engine with whole rounds on static buffers (what CUDA graphs replay), refilled in place.
    eng = models[1]
    res = assd.sample_many(
        eng, batch, sampler, torch.Generator().manual_seed(5), batch_size=3, graphs=True
    )
    outs.append([(r.tokens, r.nfe, r.rounds) for r in res])
    assert all(o == outs[0] for o in outs[1:])


def test_results_are_complete_in_order_and_equal_sample_when_every_row_fits():
    net, head, batch = net_head_and_batch()
    model = XLNetEngine.from_hf(net, forbidden_ids=(0,), head=head)
    s = ASSD(k=2, draft="head")
    res = assd.sample_many(model, batch, s, torch.Generator().manual_seed(2), batch_size=2)
    assert len(res) == batch.size
    for i, r in enumerate(res):
        n, P = int(batch.length[i]), int(batch.n_prompt[i])
        prompt = batch.sigma[i] < P
        assert (
            r.tokens[:n]
            == torch.where(prompt, batch.tokens[i], torch.tensor(r.tokens))[:n].tolist()
        ), "the prompt is kept"
        assert r.n_generated == n - P and r.nfe >= 1 and 0 not in r.tokens[:n]
    # All rows at once (row 0 is the widest, so the order is the batch's): what sample gives.
    whole = assd.sample_many(model, batch, s, torch.Generator().manual_seed(2), batch_size=99)
    plain = assd.sample(model, batch, s, torch.Generator().manual_seed(2), trace=False)
    assert [r.tokens for r in whole] == [r.tokens for r in plain]


def test_bad_input_is_refused_with_the_fix(monkeypatch):
    model = ToyASARM(4, 8, seed=1)
    batch = make_batch(torch.zeros(2, 8, dtype=torch.long), torch.arange(8).repeat(2, 1), 2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
            assd.sample_many(model, batch, Sequential(), batch_size=bad)

    class NoRefill(ToyASARM):
        def open(self, b):
            session = super().open(b)
            session.refill = None
            return session

    steps = []
    real = Sequential.step
    monkeypatch.setattr(Sequential, "step", lambda *a, **k: steps.append(1) or real(*a, **k))
    with pytest.raises(TypeError, match="cannot take new sequences"):
        assd.sample_many(NoRefill(4, 8, seed=1), batch, Sequential(), batch_size=1)
    assert len(steps) == 1, "refused after the first round, not when the first row finishes"


@pytest.mark.parametrize("backend", ["engine", "engine-uncached"])
def test_a_refilled_row_forgets_its_old_sequence(backend):
    """Row 0 first holds sequence A (its proposals' states get cached), then takes sequence C:
    the same tokens and order but another prompt token, so every cached state of A's proposals
    matches C's tokens yet was computed from A's prompt. The refilled session must answer as a
    fresh session on C does (the reference: every call recomputed)."""
    # Large initial weights: each state depends strongly on the tokens it attends to.
    net, head, batch = net_head_and_batch(N=2, L=10, V=8, init=0.3)
    a = assd.model.rows_of(batch, torch.tensor([0, 1]))
    c_tok = a.tokens.clone()
    first_prompt_pos = int((a.sigma[0] == 0).nonzero())
    c_tok[0, first_prompt_pos] = c_tok[0, first_prompt_pos] % 7 + 1  # another prompt token
    c = make_batch(c_tok[:1], a.sigma[:1], a.n_prompt[:1], a.length[:1])
    eng = XLNetEngine.from_hf(net, forbidden_ids=(0,), head=head, cache=backend == "engine")
    ref = XLNetReference(net, forbidden_ids=(0,), head=head)
    n = a.n_prompt.clone()
    m = torch.minimum(torch.tensor(3), a.length - n)
    # ranks n .. n+3 (within the row), each given the ranks below it
    q_rank = torch.stack([torch.minimum(n + i, n + m - 1 + (i == 3)) for i in range(4)], 1)
    q_rank = torch.minimum(q_rank, a.length[:, None] - 1)
    q_ctx = torch.minimum(q_rank, (n + m)[:, None])
    session = eng.open(a)
    session.logits(a.tokens, n, m, q_rank, q_ctx)  # caches the states of A's proposals
    session.refill(torch.tensor([0]), c)
    after = make_batch(torch.cat([c_tok[:1], a.tokens[1:]]), a.sigma, a.n_prompt, a.length)
    got = session.logits(after.tokens, n, m, q_rank, q_ctx)
    want = ref.open(after).logits(after.tokens, n, m, q_rank, q_ctx)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    d_got = session.draft_logits(after.tokens, q_rank, q_ctx, n[:, None].expand_as(q_rank))
    d_want = ref.open(after).draft_logits(after.tokens, q_rank, q_ctx, n[:, None].expand_as(q_rank))
    assert torch.allclose(d_got, d_want, atol=1e-5), (d_got - d_want).abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sampler", SAMPLERS[:5], ids=lambda s: s.name)
def test_refilled_rows_in_cuda_graph_rounds_equal_eager_rounds(sampler):
    """On CUDA the refills write into the static buffers that replayed round graphs read (at
    the default sync_every: the host queues rounds ahead of the device between its reads)."""
    net, head, batch = net_head_and_batch(N=12)
    eng = XLNetEngine.from_hf(net.cuda(), forbidden_ids=(0,), head=head.cuda())
    batch = batch.to("cuda")
    out = []
    for graphs in (True, False):
        g = torch.Generator("cuda").manual_seed(3)
        res = assd.sample_many(eng, batch, sampler, g, batch_size=5, graphs=graphs)
        out.append([(r.tokens, r.nfe) for r in res])
    assert out[0] == out[1]


@pytest.mark.parametrize("sampler", [Sequential(), ASSD(k=2, draft="head")], ids=lambda s: s.name)
@pytest.mark.parametrize("batch_size,sync_every", [(4, 8), (1, 3)])
def test_refills_every_sync_every_rounds_and_the_widest_sequence_last(
    sampler, batch_size, sync_every
):
    """Rows are refilled only at the host reads every sync_every rounds, on static buffers with
    round graphs (the engine) and eager (the reference, which reads the host every round: it
    must neither refill earlier nor stop while sequences wait, even when every row finished
    between two reads), so both give the same tokens for a seed; the widest sequence is the
    batch's last (sample_many takes it first, for the width k): every sequence comes back once,
    finished (never collected while its row still ran), in the batch's order."""
    net, head, batch = net_head_and_batch(N=9)
    flip = torch.arange(batch.size - 1, -1, -1)  # the widest row (0) last
    batch = assd.model.rows_of(batch, flip)
    eng = XLNetEngine.from_hf(net, forbidden_ids=(0,), head=head)
    ref = XLNetReference(net, forbidden_ids=(0,), head=head)
    kw = dict(batch_size=batch_size, sync_every=sync_every)
    res = assd.sample_many(eng, batch, sampler, torch.Generator().manual_seed(4), graphs=True, **kw)
    want = assd.sample_many(ref, batch, sampler, torch.Generator().manual_seed(4), **kw)
    assert [(r.tokens, r.nfe) for r in res] == [(r.tokens, r.nfe) for r in want]
    for i, r in enumerate(res):
        prompt = batch.sigma[i] < batch.n_prompt[i]
        assert torch.equal(torch.tensor(r.tokens)[prompt], batch.tokens[i][prompt])
        assert r.n_generated == int(batch.length[i] - batch.n_prompt[i])
        # collected once finished, not early: every token took its calls
        if isinstance(sampler, Sequential):
            assert r.nfe == r.n_generated
        else:
            assert r.nfe * (sampler.k + 1) >= r.n_generated and r.nfe >= 1
