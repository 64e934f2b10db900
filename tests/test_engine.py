"""The fast engine against the Hugging Face reference: logits, KV cache, samplers (CPU, float32)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import assd
from assd.backends import XLNetEngine, XLNetReference
from assd.likelihood import log_likelihood
from assd.model import Batch, make_batch, one_call_queries

ATOL = 1e-4  # float32, the bound


def tiny_net(data, vocab: int | None = None):
    from transformers import XLNetConfig, XLNetLMHeadModel

    d_model = data.draw(st.sampled_from([16, 24, 32]), label="d_model")
    n_head = data.draw(st.sampled_from([h for h in (1, 2, 4) if d_model % h == 0]), label="n_head")
    cfg = XLNetConfig(
        vocab_size=vocab or data.draw(st.integers(10, 50), label="vocab"),
        d_model=d_model,
        n_layer=data.draw(st.integers(1, 3), label="n_layer"),
        n_head=n_head,
        d_inner=data.draw(st.sampled_from([32, 64]), label="d_inner"),
        ff_activation=data.draw(st.sampled_from(["gelu", "relu"]), label="act"),
        clamp_len=data.draw(st.sampled_from([-1, 3]), label="clamp_len"),
        initializer_range=0.2,  # large enough that attention and positions matter to the logits
        dropout=0.0,
    )
    torch.manual_seed(data.draw(st.integers(0, 10_000), label="seed"))
    net = XLNetLMHeadModel(cfg).eval()
    with torch.no_grad():  # non-trivial biases so that every term of the attention is exercised
        for layer in net.transformer.layer:
            for p in (layer.rel_attn.r_w_bias, layer.rel_attn.r_r_bias):
                p.normal_(0, 0.5)
        net.transformer.mask_emb.normal_(0, 0.5)
    return net


def ragged_batch(data, V: int) -> Batch:
    """B rows of length <= L each with its own order, prompt size and (ragged) length."""
    B = data.draw(st.integers(1, 3), label="B")
    L = data.draw(st.integers(2, 12), label="L")
    sig, P, lengths = [], [], []
    for _ in range(B):
        n = data.draw(st.integers(2, L), label="length")
        perm = data.draw(st.permutations(range(n)), label="order")
        sig.append(list(perm) + list(range(n, L)))  # padding ranks at the end positions
        P.append(data.draw(st.integers(1, n - 1), label="n_prompt"))
        lengths.append(n)
    tokens = torch.randint(0, V, (B, L))
    return make_batch(tokens, torch.tensor(sig), torch.tensor(P), torch.tensor(lengths))


def random_call(data, batch: Batch, lo: torch.Tensor):
    """A valid call: n >= lo, proposals m, and a query set with repeats and short contexts."""
    B = batch.size
    n, m, qs = [], [], []
    for b in range(B):
        P, end = int(batch.n_prompt[b]), int(batch.length[b])
        nb = data.draw(st.integers(max(P, int(lo[b])), end - 1), label="n")
        kind = data.draw(st.sampled_from(["random", "draft", "oracle", "one_call"]), label="kind")
        if kind == "random":
            mb = data.draw(st.integers(0, end - nb), label="m")
            q = data.draw(
                st.lists(
                    st.integers(nb, end - 1).flatmap(
                        lambda r, P=P, top=nb + mb: st.tuples(
                            st.just(r), st.integers(P, min(r, top))
                        )
                    ),
                    min_size=0 if B > 1 else 1,
                    max_size=10,
                ),
                label="queries",
            )
        else:  # the sets the samplers send, with k proposals
            k = data.draw(st.integers(1, 4), label="k")
            mb = 0 if kind == "draft" else min(k, end - nb)
            q = sampler_queries(kind, nb, k, mb, end)
        n.append(nb)
        m.append(mb)
        qs.append(q)
    Q = max(1, max(len(q) for q in qs))
    q_rank = torch.full((B, Q), -1)
    q_ctx = torch.full((B, Q), -1)
    for b, q in enumerate(qs):
        for i, (r, c) in enumerate(q):
            q_rank[b, i], q_ctx[b, i] = r, c
    return torch.tensor(n), torch.tensor(m), q_rank, q_ctx


def sampler_queries(kind: str, n: int, k: int, m: int, end: int) -> list[tuple[int, int]]:
    """Draft: (n+i, n); oracle (+ next): (n+i, n+i); one-call: oracle, next, and the next
    round's drafts (``assd.model.one_call_queries``). Ranks past the end are dropped."""
    if kind == "draft":
        q = [(n + i, n) for i in range(k)]
    else:
        q = [(n + i, n + i) for i in range(m + 1)]
        if kind == "one_call":
            t = torch.tensor
            rank, ctx = one_call_queries(t([n]), k, t([m]), t([True]), t([end]))
            q += [(r, c) for r, c in zip(rank[0].tolist(), ctx[0].tolist()) if r >= 0]
    return [(r, c) for r, c in q if r < end]


def fill(batch: Batch, tokens: torch.Tensor, upto: torch.Tensor, V: int) -> torch.Tensor:
    """Copy of tokens with fresh random tokens at ranks prompt .. upto-1 (proposals)."""
    fresh = torch.randint(0, V, tokens.shape)
    change = (batch.sigma >= batch.n_prompt[:, None]) & (batch.sigma < upto[:, None])
    return torch.where(change, fresh, tokens)


def assert_close(got, want, valid):
    err = (got - want).abs().amax(-1)[valid]
    assert err.numel() == 0 or float(err.max()) <= ATOL, float(err.max())


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_one_call_matches_reference(data):
    """Any query set (repeated ranks, contexts short of their rank) in one forward."""
    net = tiny_net(data)
    V = net.config.vocab_size
    batch = ragged_batch(data, V)
    n, m, q_rank, q_ctx = random_call(data, batch, batch.n_prompt)
    tokens = fill(batch, batch.tokens, n + m, V)
    want = XLNetReference(net).open(batch).logits(tokens, n, m, q_rank, q_ctx)
    for static in (False, True):  # True: the padded fixed shapes that CUDA graphs replay
        engine = XLNetEngine.from_hf(net, static_shapes=static)
        got = engine.open(batch).logits(tokens, n, m, q_rank, q_ctx)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert_close(got, want, q_rank >= 0)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_cached_calls_match_fresh_sessions(data):
    """A multi-call session (states reused, proposals changed or kept) == a fresh session per call."""
    net = tiny_net(data)
    V = net.config.vocab_size
    batch = ragged_batch(data, V)
    engine = XLNetEngine.from_hf(net)
    session = engine.open(batch)
    tokens, lo = batch.tokens.clone(), batch.n_prompt.clone()
    for _ in range(data.draw(st.integers(1, 5), label="calls")):
        if bool((lo >= batch.length).any()):
            break
        n, m, q_rank, q_ctx = random_call(data, batch, lo)
        # Committed ranks (< lo) stay; above them keep every token, change all, or change one.
        how = data.draw(st.sampled_from(["keep", "all", "one"]), label="proposals")
        uncommitted = batch.sigma >= lo[:, None]
        if how == "all":
            tokens = torch.where(uncommitted, fill(batch, tokens, n + m, V), tokens)
        elif how == "one":
            rank = lo + torch.randint(0, 3, lo.shape)
            one = batch.sigma == rank[:, None]
            tokens = torch.where(one, (tokens + 1) % V, tokens)
        got = session.logits(tokens, n, m, q_rank, q_ctx)
        want = engine.open(batch).logits(tokens, n, m, q_rank, q_ctx)
        assert_close(got, want, q_rank >= 0)
        lo = n


def test_cache_reuses_accepted_proposals():
    """Proposals whose tokens survive are not recomputed; a changed token invalidates what follows."""
    net = _fixed_net()
    L = 10
    batch = make_batch(torch.randint(0, 20, (L,)), torch.arange(L), 2)
    s = XLNetEngine.from_hf(net).open(batch)
    tok = batch.tokens.clone()
    one = torch.tensor
    s.logits(tok, one([2]), one([4]), one([[2, 3, 4, 5]]), one([[2, 3, 4, 5]]))
    assert s.rows_computed == 3  # ranks 2..4 (no query needs the content of rank 5)
    s.logits(tok, one([4]), one([0]), one([[4]]), one([[4]]))  # two accepted, nothing to compute
    assert s.rows_computed == 3
    tok[0, 3] = (tok[0, 3] + 1) % 20  # rank 3 resampled: ranks 3.. are stale
    s.logits(tok, one([4]), one([2]), one([[4, 5]]), one([[4, 5]]))
    assert s.rows_computed == 3 + 2  # ranks 3, 4
    # States above the last call's reach were computed before rank 3 changed: never reused.
    s.logits(tok, one([2]), one([7]), one([[8]]), one([[8]]))  # ranks 5..7 computed
    tok[0, 4] = (tok[0, 4] + 1) % 20
    s.logits(tok, one([2]), one([3]), one([[5]]), one([[5]]))  # recomputes rank 4 only
    assert s.rows_computed == 5 + 3 + 1
    args = (tok, one([2]), one([7]), one([[8, 9]]), one([[8, 9]]))
    want = XLNetReference(net).open(batch).logits(*args)
    assert_close(s.logits(*args), want, torch.ones(1, 2, dtype=torch.bool))
    assert s.rows_computed == 5 + 3 + 1 + 4  # ranks 5..8


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_likelihood_matches_reference(data):
    net = tiny_net(data)
    batch = ragged_batch(data, net.config.vocab_size)
    want = log_likelihood(XLNetReference(net), batch, per_token=True)
    got = log_likelihood(XLNetEngine.from_hf(net), batch, per_token=True)
    assert torch.allclose(got, want, atol=1e-4)


SAMPLERS = [
    assd.Sequential(),
    assd.MeanField(k=2),
    assd.ASSD(k=3),
    assd.ASSD(k=3, bonus=True),
    assd.ASSD(k=2, one_call=True),
    assd.ASSD(k=3, draft="bigram"),
]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_samplers_same_tokens_as_reference(sampler, data):
    """Same torch.Generator seed -> same tokens on reference, cached engine and uncached engine."""
    net = tiny_net(data, vocab=data.draw(st.integers(4, 12), label="vocab"))
    batch = ragged_batch(data, net.config.vocab_size)
    seed = data.draw(st.integers(0, 2**31), label="sampling seed")
    models = [
        XLNetReference(net, forbidden_ids=(0,)),
        XLNetEngine.from_hf(net, forbidden_ids=(0,)),
        XLNetEngine.from_hf(net, forbidden_ids=(0,), cache=False),
        XLNetEngine.from_hf(net, forbidden_ids=(0,), static_shapes=True),
        XLNetEngine.from_hf(net, forbidden_ids=(0,), reuse_proposals=False),
    ]
    outs = []
    for model in models:
        res = assd.sample(model, batch, sampler, torch.Generator().manual_seed(seed))
        outs.append([(r.tokens, r.nfe) for r in res])
    assert all(o == outs[0] for o in outs[1:])


def _fixed_net():
    from conftest import make_tiny_xlnet

    return make_tiny_xlnet(20, seed=3)


def test_engine_protocol_and_memory():
    net = _fixed_net()
    engine = XLNetEngine.from_hf(net, forbidden_ids=(1,), max_length=64)
    assert isinstance(engine, assd.ASARM)
    assert engine.vocab_size == 20 and engine.needs_prompt and engine.forbidden_ids == (1,)
    batch = make_batch(torch.randint(0, 20, (2, 12)), torch.arange(12).repeat(2, 1), 3)
    s = engine.open(batch)
    assert isinstance(s, assd.Session) and s.vocab_size == 20
    # 2 layers x (key, value) x B=2 x 2 heads x 16 slots (12 + 1 spare, rounded up to 8) x
    # d_head 16 x 4 bytes (float32)
    assert s.cache_bytes == 16_384
    one = engine.open(make_batch(torch.randint(0, 20, (1, 12)), torch.arange(12)[None], 3))
    assert one.cache_bytes == 8_192  # half the rows, half the bytes
    longer = engine.open(
        make_batch(torch.randint(0, 20, (2, 15)), torch.arange(15).repeat(2, 1), 3)
    )
    assert longer.cache_bytes == 16_384  # 15 + 1 slots still fit in 16
    longest = engine.open(
        make_batch(torch.randint(0, 20, (2, 16)), torch.arange(16).repeat(2, 1), 3)
    )
    assert longest.cache_bytes == 24_576  # 16 + 1 slots: 24


def test_bad_input():
    net = _fixed_net()
    with pytest.raises(TypeError, match="dtype"):
        XLNetEngine.from_hf(net, dtype="bfloat16")
    net.config.attn_type = "uni"
    with pytest.raises(ValueError, match="attn_type"):
        XLNetEngine.from_hf(net)
    net.config.attn_type = "bi"
    batch = make_batch(torch.randint(0, 20, (8,)), torch.arange(8), 2)
    s = XLNetEngine.from_hf(net).open(batch)
    tok = batch.tokens.clone()
    tok[0, 0] = (tok[0, 0] + 1) % 20
    with pytest.raises(ValueError, match="prompt"):
        s.logits(
            tok, torch.tensor([2]), torch.tensor([0]), torch.tensor([[2]]), torch.tensor([[2]])
        )
    with pytest.raises(ValueError, match="context"):
        s.logits(
            batch.tokens,
            torch.tensor([2]),
            torch.tensor([0]),
            torch.tensor([[3]]),
            torch.tensor([[3]]),
        )


def test_half_precision_runs_and_stays_close():
    """bfloat16 and float16 weights run (CPU here, GPU in the benchmark) and stay near float32."""
    net = _fixed_net()
    batch = make_batch(torch.randint(0, 20, (10,)), torch.randperm(10), 3)
    q = torch.tensor([[3, 4, 5]])
    args = (batch.tokens, torch.tensor([3]), torch.tensor([3]), q, torch.tensor([[3, 3, 5]]))
    f32 = XLNetEngine.from_hf(net).open(batch).logits(*args)
    for dtype in (torch.bfloat16, torch.float16):
        half = XLNetEngine.from_hf(net, dtype=dtype).open(batch).logits(*args)
        assert half.dtype == torch.float32 and torch.isfinite(half).all()
        assert (half - f32).abs().max() < 0.1


def test_workspaces_are_reused_only_after_a_session_ends():
    import gc

    net = _fixed_net()
    engine = XLNetEngine.from_hf(net)
    b1 = make_batch(torch.randint(0, 20, (10,)), torch.randperm(10), 3)
    b2 = make_batch(torch.randint(0, 20, (10,)), torch.randperm(10), 2)
    args = (torch.tensor([4]), torch.tensor([2]), torch.tensor([[4, 5]]), torch.tensor([[4, 5]]))
    s1, s2 = engine.open(b1), engine.open(b2)
    assert s1.kv.data_ptr() != s2.kv.data_ptr()
    want = XLNetReference(net).open(b1).logits(b1.tokens, *args)
    assert_close(s1.logits(b1.tokens, *args), want, torch.ones(1, 2, dtype=torch.bool))
    ptr, s2_bytes = s2.kv.data_ptr(), s2.cache_bytes
    del s2
    gc.collect()
    s3 = engine.open(b1)
    assert s3.kv.data_ptr() == ptr  # the ended session's buffers, overwritten by the new prompt
    assert_close(s3.logits(b1.tokens, *args), want, torch.ones(1, 2, dtype=torch.bool))
    del s1, s3
    gc.collect()
    assert engine.idle_bytes == 2 * s2_bytes
    engine.free_memory()
    assert engine.idle_bytes == 0
    # At most max_idle ended workspaces are kept, whatever the shapes seen.
    engine.max_idle = 1
    for L in (6, 7, 8):
        s = engine.open(make_batch(torch.randint(0, 20, (L,)), torch.randperm(L), 2))
        del s
        gc.collect()
    assert len(engine._free) == 1 and engine.idle_bytes > 0


def test_from_pretrained_local_dir(tiny_model_dir):
    """A save_pretrained directory (safetensors) loads without a conversion step."""
    from transformers import XLNetLMHeadModel

    engine = XLNetEngine.from_pretrained(tiny_model_dir, forbidden_ids=(0, 1), max_length=64)
    net = XLNetLMHeadModel.from_pretrained(tiny_model_dir).eval()
    V = net.config.vocab_size
    assert engine.vocab_size == V and engine.forbidden_ids == (0, 1) and engine.max_length == 64
    batch = make_batch(torch.randint(0, V, (12,)), torch.randperm(12), 4)
    args = (
        batch.tokens,
        torch.tensor([5]),
        torch.tensor([3]),
        torch.tensor([[5, 6, 8]]),
        torch.tensor([[5, 4, 8]]),
    )
    want = XLNetReference(net).open(batch).logits(*args)
    assert_close(engine.open(batch).logits(*args), want, torch.ones(1, 3, dtype=torch.bool))
