"""Whole-round graphs: replayed rounds give the same tokens as eager rounds for the same seed.

On the CPU the replay machinery runs each round eagerly on the static buffers and random block
(everything but the CUDA capture itself); where CUDA exists the same checks run on real graphs.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import assd
from assd import ASSD, MeanField, Sequential, make_batch
from assd.backends import XLNetEngine
from assd.heads import DraftHead, HeadConfig

SAMPLERS = [
    Sequential(),
    ASSD(k=4),
    ASSD(k=4, bonus=True),
    ASSD(k=3, draft="bigram"),
    ASSD(k=4, one_call=True),
    ASSD(k=4, draft="head"),
    ASSD(k=3, draft="head", verify="block"),
    ASSD(k=3, draft="head", candidates=4),
    ASSD(k=3, temperature=0.7, untempered_oracle=True),
    MeanField(k=3),
]


def engine_and_batch(device="cpu", seed=0, dtype=torch.float32):
    from transformers import XLNetConfig, XLNetLMHeadModel

    torch.manual_seed(seed)
    cfg = XLNetConfig(vocab_size=30, d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0)
    net = XLNetLMHeadModel(cfg).eval().to(device)
    head = DraftHead(HeadConfig(d_model=32, vocab_size=30, n_head=2, d_head=16, d_inner=48))
    g = torch.Generator().manual_seed(seed + 1)
    B, L = 3, 24
    tok = torch.randint(5, 30, (B, L), generator=g)
    rows = [assd.random_order(L, 0.8, g) for _ in range(B)]
    sigma = torch.stack([r[0] for r in rows])
    n_prompt = torch.stack([(~r[1]).sum() for r in rows])
    batch = make_batch(tok, sigma, n_prompt)  # prompts of different sizes: rows end apart
    eng = XLNetEngine.from_hf(net, forbidden_ids=(0, 1), head=head.to(device), dtype=dtype)
    return eng, batch


def run(model, batch, sampler, graphs, device, compile=False):
    """Rounds with fixed shapes (the backend's sync-free mode), replayed or eager."""
    g = torch.Generator(device).manual_seed(11)
    out = []
    rounds = assd.samplers.rounds(
        model, batch, sampler, g, graphs=graphs, sync_free=True, compile=compile
    )
    for state, rec in rounds:
        record = {k: v.tolist() for k, v in vars(rec).items()}  # every field, start too
        out.append((state.tokens.tolist(), state.nfe.tolist(), record))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_replayed_rounds_equal_eager_rounds(sampler, dtype):
    model, batch = engine_and_batch(dtype=dtype)
    eager = run(model, batch, sampler, False, "cpu")
    replayed = run(model, batch, sampler, True, "cpu")
    assert len(eager) > 3  # several rounds replayed
    assert replayed == eager


@pytest.mark.slow
@pytest.mark.parametrize(
    "sampler",
    [
        Sequential(),
        ASSD(k=4, one_call=True),
        ASSD(k=3, draft="head", verify="block"),
        ASSD(k=2, draft="head", candidates=3),
    ],
    ids=lambda s: s.name,
)
def test_compiled_rounds_equal_eager_rounds(sampler):
    """torch.compile'd rounds (fused kernels) give the eager rounds' tokens in float32."""
    model, batch = engine_and_batch()
    eager = run(model, batch, sampler, False, "cpu")
    compiled = run(model, batch, sampler, True, "cpu", compile=True)
    assert len(eager) > 3
    assert [c[:2] for c in compiled] == [e[:2] for e in eager]  # tokens and calls
    for c, e in zip(compiled, eager):  # probabilities to float32 rounding
        for key in ("p_draft", "p_oracle"):
            assert torch.allclose(torch.tensor(c[2][key]), torch.tensor(e[2][key]), atol=1e-5)


@pytest.mark.parametrize(
    "sampler",
    [Sequential(), ASSD(k=3, draft="head", verify="block"), ASSD(k=2, draft="head", candidates=3)],
    ids=lambda s: s.name,
)
def test_reading_flags_every_few_rounds_changes_nothing(sampler):
    """sync_every > 1: rounds after the batch finished are no-ops; same final state."""
    model, batch = engine_and_batch()

    def final(every):
        g = torch.Generator().manual_seed(5)
        run = assd.samplers.rounds(model, batch, sampler, g, graphs=True, sync_every=every)
        states = [st for st, _ in run]
        last = states[-1]
        return len(states), [getattr(last, f).tolist() for f in ("tokens", "nfe", "rounds", "n")]

    n1, want = final(1)
    n4, got = final(4)
    assert got == want
    assert n4 % 4 == 0 and n1 <= n4 < n1 + 4  # stopped at the first read after finishing
    assert assd.sample(model, batch, sampler, torch.Generator().manual_seed(5), trace=False)
    with pytest.raises(ValueError, match="sync_every"):
        next(assd.samplers.rounds(model, batch, sampler, sync_every=0))


def test_a_round_that_cannot_compile_runs_uncompiled(monkeypatch):
    """No compiler (or an op it cannot take): a warning, and the uncompiled round's tokens."""
    from assd.samplers import graphs

    def broken(sampler):
        def step(*a, **kw):
            raise RuntimeError("no C++ compiler found")

        return step

    tries = []
    monkeypatch.setattr(graphs, "compiled_step", lambda s: tries.append(s) or broken(s))
    monkeypatch.setattr(graphs, "_failed", set())
    model, batch = engine_and_batch()
    sampler = ASSD(k=3, draft="head")
    with pytest.warns(UserWarning, match="compiling the round failed.*no C\\+\\+ compiler"):
        got = run(model, batch, sampler, True, "cpu", compile=True)
    assert got == run(model, batch, sampler, False, "cpu")
    # Not tried again for the same round (each try costs a whole compilation): no warning now.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run(model, batch, sampler, True, "cpu", compile=True) == got
    assert len(tries) == 1


def test_compile_needs_the_round_machinery():
    model, batch = engine_and_batch()
    with pytest.raises(ValueError, match="compile=True"):
        next(assd.samplers.rounds(model, batch, Sequential(), graphs=False, compile=True))
    model.compile_rounds = True  # the model's preference: the default, unless graphs are off
    assert next(assd.samplers.rounds(model, batch, Sequential(), graphs=False))


def test_past_the_compile_cap_rounds_run_uncompiled(monkeypatch):
    """Once MAX_COMPILED distinct rounds are compiled, new ones warn and stay uncompiled."""
    from assd.samplers import graphs

    calls = []
    monkeypatch.setattr(graphs, "compiled_step", lambda s: calls.append(s) or s.step)
    monkeypatch.setattr(graphs, "_compiled", {("other", i) for i in range(graphs.MAX_COMPILED)})
    model, batch = engine_and_batch()
    sampler = ASSD(k=2)
    with pytest.warns(UserWarning, match="runs uncompiled"):
        got = run(model, batch, sampler, True, "cpu", compile=True)
    assert not calls and got == run(model, batch, sampler, False, "cpu")


def test_a_broken_row_bound_is_flagged_not_silent():
    """The sync-free engine flags a call that needs more rows than promised (raised at the sync)."""
    model, batch = engine_and_batch()
    s = model.open(batch)
    P = batch.n_prompt
    with s.sync_free(2):
        q = (P + 6)[:, None]
        s.logits(batch.tokens, P + 6, torch.zeros_like(P), q, q)  # 6 new rows > 2
    assert bool(s.errors[0])
    with pytest.raises(ValueError, match="more new rows"):
        s.raise_errors(s.errors.tolist())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_cuda_graph_rounds_equal_eager_rounds(sampler, dtype):
    model, batch = engine_and_batch("cuda", dtype=dtype)
    batch = batch.to("cuda")
    assert run(model, batch, sampler, True, "cuda") == run(model, batch, sampler, False, "cuda")


def other_batch(batch, seed=5):
    """A batch of the same shape with other tokens, orders and prompt sizes."""
    g = torch.Generator().manual_seed(seed)
    B, L = batch.tokens.shape
    rows = [assd.random_order(L, 0.7, g) for _ in range(B)]
    sigma = torch.stack([r[0] for r in rows])
    n_prompt = torch.stack([(~r[1]).sum() for r in rows])
    return make_batch(torch.randint(5, 30, (B, L), generator=g), sigma, n_prompt)


def test_a_session_reads_its_inputs_from_the_workspace():
    """Round graphs are kept per workspace, so a session copies its batch into the workspace's
    buffers (the next session of the shape overwrites them in place) and sees its own values."""
    model, batch = engine_and_batch()
    s1 = model.open(batch)
    ws, bufs = s1.ws, (s1.batch.tokens, s1.pos_of_rank, s1.errors, s1.prompt_tok)
    assert s1.round_graphs is ws.rounds
    assert torch.equal(s1.pos_of_rank, batch.pos_of_rank)
    del s1
    b2 = other_batch(batch)
    s2 = model.open(b2)
    assert s2.ws is ws  # the same workspace, the same buffers, the second batch's values
    assert all(
        a is b for a, b in zip((s2.batch.tokens, s2.pos_of_rank, s2.errors, s2.prompt_tok), bufs)
    )
    assert torch.equal(s2.batch.tokens, b2.tokens) and torch.equal(s2.batch.sigma, b2.sigma)
    assert torch.equal(s2.pos_of_rank, b2.pos_of_rank)
    ranks = torch.arange(b2.tokens.shape[1])
    want = torch.where(ranks < b2.n_prompt[:, None], torch.gather(b2.tokens, 1, b2.pos_of_rank), -1)
    assert torch.equal(s2.prompt_tok, want)


def test_the_last_state_is_not_the_static_buffers():
    """A run's final state survives the next run (the static buffers do not: a kept graph
    reuses them). On the CPU no graph is kept, so the copy is checked directly: the last state
    is not the replayed rounds' static buffers."""
    model, batch = engine_and_batch()
    sampler = ASSD(k=3, draft="head")
    states = [
        s
        for s, _ in assd.samplers.rounds(
            model, batch, sampler, torch.Generator().manual_seed(1), graphs=True
        )
    ]
    last, static = states[-1], states[-2]  # rounds before the last yield the static buffers
    assert len(states) > 3 and states[-3].tokens.data_ptr() == static.tokens.data_ptr()
    assert last.tokens.data_ptr() != static.tokens.data_ptr()
    kept = last.tokens.clone()
    for _ in assd.samplers.rounds(
        model, other_batch(batch), sampler, torch.Generator().manual_seed(2), graphs=True
    ):
        pass
    assert torch.equal(last.tokens, kept)


def test_round_keys_tell_settings_and_shapes_apart():
    from assd.samplers.graphs import round_key

    model, batch = engine_and_batch()
    st = ASSD(k=3).init(batch, model.forbidden_ids, model.vocab_size)
    base = round_key(ASSD(k=3), st, 4, 8, False)
    assert base == round_key(ASSD(k=3), st, 4, 8, False)
    others = [
        round_key(ASSD(k=3, temperature=0.5), st, 4, 8, False),
        round_key(ASSD(k=3), st, 5, 8, False),
        round_key(ASSD(k=3), st, 4, 9, False),
        round_key(ASSD(k=3), st, 4, 8, True),
        round_key(
            ASSD(k=4), ASSD(k=4).init(batch, model.forbidden_ids, model.vocab_size), 4, 8, False
        ),
    ]
    assert all(o != base for o in others)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_a_kept_round_graph_serves_the_next_batch(sampler, monkeypatch):
    """The second batch of a shape replays the graph the first one captured, from its first
    round on (no capture, no eager round), and gets exactly the eager rounds' tokens; so does
    the first again."""
    import assd.samplers.run as run_mod

    model, batch = engine_and_batch("cuda")
    a, b = batch.to("cuda"), other_batch(batch).to("cuda")
    first = run(model, a, sampler, True, "cuda")
    captures = []
    real = run_mod.capture_round
    monkeypatch.setattr(
        run_mod, "capture_round", lambda *x, **k: captures.append(1) or real(*x, **k)
    )
    steps = []
    real_step = type(sampler).step
    monkeypatch.setattr(
        type(sampler), "step", lambda *x, **k: steps.append(1) or real_step(*x, **k)
    )
    kept = run(model, b, sampler, True, "cuda")
    assert not steps, "every round of a kept run is a replay, the first one too"
    assert kept == run(model, b, sampler, False, "cuda")
    assert run(model, a, sampler, True, "cuda") == first
    assert not captures  # both replayed the kept graph


COMPILED = [Sequential(), ASSD(k=4, draft="head"), ASSD(k=3, draft="head", verify="block")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sampler", COMPILED, ids=lambda s: s.name)
def test_a_kept_compiled_round_reads_the_next_batch(sampler, monkeypatch):
    """Compiled rounds are not eager rounds to the bit on a GPU (fused reductions), so the kept
    compiled graph is checked against itself: replayed for batch b, a graph captured from batch
    a gives exactly what a graph captured from b gives."""
    import assd.samplers.run as run_mod

    model, batch = engine_and_batch("cuda")
    a, b = batch.to("cuda"), other_batch(batch).to("cuda")
    run(model, b, sampler, True, "cuda", compile=True)  # captures from b
    captures = []
    real = run_mod.capture_round
    monkeypatch.setattr(
        run_mod, "capture_round", lambda *x, **k: captures.append(1) or real(*x, **k)
    )
    from_b = run(model, b, sampler, True, "cuda", compile=True)
    assert not captures
    model.free_memory()  # drop the workspace and its graphs
    run(model, a, sampler, True, "cuda", compile=True)  # captures from a
    n = len(captures)
    assert run(model, b, sampler, True, "cuda", compile=True) == from_b
    assert len(captures) == n


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_kept_prompt_graph_encodes_the_next_batch_as_eager_code_does():
    """On CUDA a session's prompt encoding replays a graph kept in the workspace (captured by
    the first session of that shape and padded prompt width): the cache it fills for another
    batch equals what eager code fills."""
    model, batch = engine_and_batch("cuda")
    eager, _ = engine_and_batch("cuda")
    eager.graphs = False  # the prompt encoded by plain eager code
    a, b = other_batch(batch, seed=5).to("cuda"), other_batch(batch, seed=6).to("cuda")
    width = [min(-(-int(x.n_prompt.max()) // 8) * 8, 24) for x in (a, b)]
    assert width[0] == width[1], "both batches must share the graph's padded prompt width"
    first = model.open(a)
    ws, key = first.ws, ("prompt", width[0])
    kept = ws.graphs.get(key)
    assert kept is not None, "the first session captured its prompt encoding"
    del first  # its workspace (and the kept graph) serve the next session of this shape
    got, want = model.open(b), eager.open(b)
    assert got.ws is ws and ws.graphs[key] is kept, "the kept graph was replayed, not recaptured"
    for row in range(b.size):
        P = int(b.n_prompt[row])
        assert torch.equal(got.kv[:, :, row, :, :P], want.kv[:, :, row, :, :P])
        assert torch.equal(got.ws.hkv[:, :, row, :, :P], want.ws.hkv[:, :, row, :, :P])
    assert torch.equal(got.prompt_tok, want.prompt_tok)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sampler", SAMPLERS[:6], ids=lambda s: s.name)
def test_a_round_that_grows_its_block_keeps_an_eager_first_round(sampler, monkeypatch):
    """A round reading more uniforms than the block's start draws them piece by piece in an
    eager first round; a replay would draw them at once (other numbers for the seed). So a kept
    graph of such a round replays from the second round only, and the tokens still equal the
    eager run's. (A start of 0 uniforms, the rule before, makes every sampler grow its block.)"""
    import functools

    import assd.samplers.run as run_mod

    monkeypatch.setattr(run_mod, "TorchRng", functools.partial(run_mod.TorchRng, width=0))
    model, batch = engine_and_batch("cuda")
    a, b = batch.to("cuda"), other_batch(batch).to("cuda")
    run(model, a, sampler, True, "cuda")  # captures and keeps the round
    steps = []
    real_step = type(sampler).step
    monkeypatch.setattr(
        type(sampler), "step", lambda *x, **k: steps.append(1) or real_step(*x, **k)
    )
    kept = run(model, b, sampler, True, "cuda")
    assert len(steps) == 1, "the first round eager, every later one a replay"
    assert kept == run(model, b, sampler, False, "cuda")
