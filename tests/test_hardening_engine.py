"""The engine under concurrent load: one engine, many threads, many batch shapes.

The workspace pool is shared by every session of an engine; these tests fail on a pool without
a lock (IndexError in ``_acquire``, or a workspace of another shape handed out).
"""

from __future__ import annotations

import gc
import threading
import time
import warnings

import pytest
import torch

import assd
from assd.backends import XLNetEngine
from assd.model import make_batch

SHAPES = [(b, n) for b in (1, 2, 3) for n in (5, 6, 8, 11)]  # 12 shapes (B, L)


def tiny_net(vocab: int = 24, seed: int = 0):
    from transformers import XLNetConfig, XLNetLMHeadModel

    torch.manual_seed(seed)
    cfg = XLNetConfig(
        vocab_size=vocab,
        d_model=16,
        n_layer=2,
        n_head=2,
        d_inner=32,
        dropout=0.0,
        initializer_range=0.2,
    )
    return XLNetLMHeadModel(cfg).eval()


def run_threads(fn, n: int) -> list[str]:
    """Run fn(i) in n threads at once; returns the errors (repr) they raised."""
    errors: list[str] = []
    start = threading.Barrier(n)

    def body(i):
        try:
            start.wait()
            fn(i)
        except Exception as e:  # collected and reported by the test
            errors.append(f"thread {i}: {e!r}")

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    return errors


@pytest.fixture(autouse=True)
def one_intraop_thread():
    """8 Python threads each running a 2-thread intra-op pool oversubscribe a small CPU badly."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class YieldingList(list):
    """A list that lets other threads run on every read: widens any check-then-act race."""

    def __getitem__(self, i):
        time.sleep(0)
        return super().__getitem__(i)


def test_pool_hands_each_thread_its_own_workspace_of_its_shape():
    engine = XLNetEngine.from_hf(tiny_net(), max_idle=12)
    engine._free = YieldingList()
    in_use: set[int] = set()
    guard = threading.Lock()

    def work(i):
        for j in range(100):
            B, L = SHAPES[(i + j) % len(SHAPES)]
            ws = engine._acquire(B, L)
            assert ws.kv.shape[2] == B and ws.slot_tok.shape == (B, L + 1), "another shape"
            with guard:
                assert id(ws) not in in_use, "a workspace handed to two sessions"
                in_use.add(id(ws))
            time.sleep(0)
            with guard:
                in_use.discard(id(ws))
            engine._release(B, L, ws)

    assert run_threads(work, 8) == []
    assert 0 < len(engine._free) <= 12
    assert len({id(ws) for _, ws in engine._free}) == len(engine._free)


def test_finalizer_inside_the_pool_lock_does_not_deadlock():
    """Garbage collection may end a session while this very thread holds the pool lock."""
    engine = XLNetEngine.from_hf(tiny_net(), max_idle=2)
    ws = engine._acquire(1, 5)
    done = threading.Event()

    def body():
        with engine._pooled():
            engine._release(1, 5, ws)  # what a finalizer run by gc here would do
            assert len(engine._free) == 0  # queued, not pooled while the pool is walked
        done.set()

    t = threading.Thread(target=body)
    t.start()
    t.join(timeout=10)
    assert done.is_set(), "deadlock: _release waited for a lock its own thread holds"
    assert [shape for shape, _ in engine._free] == [(1, 5)]
    assert engine._acquire(1, 5) is ws


def scripted_logits(engine, batch, seed: int) -> list[torch.Tensor]:
    """A fixed sequence of draft and oracle calls on one session; their logits (CPU)."""
    g = torch.Generator().manual_seed(seed)
    s = engine.open(batch)
    tokens, n = batch.tokens.clone(), batch.n_prompt.clone()
    out = []
    for _ in range(2):
        k = torch.minimum(torch.full_like(n, 3), batch.length - n)  # [B] >= 1
        valid = torch.arange(3, device=n.device) < k[:, None]
        r = torch.where(valid, n[:, None] + torch.arange(3, device=n.device), -1)  # [B, 3]
        out.append(s.logits(tokens, n, 0 * n, r, torch.where(valid, n[:, None], -1)))  # draft
        for b in range(batch.size):  # proposals at ranks n .. n+k-1, then the oracle
            for i in range(int(k[b])):
                pos = batch.pos_of_rank[b, n[b] + i]
                tokens[b, pos] = int(torch.randint(engine.vocab_size, (1,), generator=g))
        out.append(s.logits(tokens, n, k, r, r))
        n = n + 2  # commit two ranks
    return [x.cpu() for x in out]


def batch_for(shape, seed: int, V: int, device="cpu"):
    B, L = shape
    g = torch.Generator().manual_seed(seed)
    sig = torch.stack([torch.randperm(L, generator=g) for _ in range(B)])
    tokens = torch.randint(0, V, (B, L), generator=g)
    return make_batch(tokens, sig, 2).to(device)


def concurrent_matches_serial(engine, n_threads: int, rounds: int) -> None:
    """Every thread's logits equal the serial ones for the same (shape, seed)."""
    V = engine.vocab_size
    jobs = [
        (SHAPES[(i + j) % len(SHAPES)], 100 * i + j)
        for i in range(n_threads)
        for j in range(rounds)
    ]
    want = {
        (sh, sd): scripted_logits(engine, batch_for(sh, sd, V, engine.device), sd)
        for sh, sd in jobs
    }

    def work(i):
        for j in range(rounds):
            sh, sd = SHAPES[(i + j) % len(SHAPES)], 100 * i + j
            got = scripted_logits(engine, batch_for(sh, sd, V, engine.device), sd)
            for a, b in zip(got, want[(sh, sd)]):
                assert torch.allclose(a, b, atol=1e-4), (sh, sd, (a - b).abs().max())

    assert run_threads(work, n_threads) == []
    gc.collect()
    assert len(engine._free) <= engine.max_idle and not engine._returned  # memory stays bounded


def test_threads_decoding_many_shapes_match_serial_results():
    concurrent_matches_serial(XLNetEngine.from_hf(tiny_net(), max_idle=3), n_threads=8, rounds=4)


def test_threads_sampling_on_one_engine():
    """8 threads x 12 shapes through assd.sample: the same tokens as one thread alone."""
    engine = XLNetEngine.from_hf(tiny_net(), max_idle=4)
    V = engine.vocab_size

    def run(sh, sd):
        b = batch_for(sh, sd, V)
        res = assd.sample(engine, b, assd.ASSD(k=3), torch.Generator().manual_seed(sd), trace=False)
        return [r.tokens for r in res]

    want = {i: run(SHAPES[i % 12], i) for i in range(24)}

    def work(i):
        for j in (i, i + 8, i + 16):
            assert run(SHAPES[j % 12], j) == want[j]

    assert run_threads(work, 8) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on a GPU machine)")
def test_cuda_graph_engine_under_concurrent_load():
    """The CUDA-graph path: captures and replays from 8 threads at once, 12 shapes."""
    net = tiny_net().cuda()
    engine = XLNetEngine.from_hf(net, max_idle=6)
    assert engine.graphs and engine.static_shapes
    eager = XLNetEngine.from_hf(net, graphs=False, static_shapes=False)
    for sh, sd in [((1, 5), 0), ((3, 11), 1)]:  # graphs agree with eager decoding
        b = batch_for(sh, sd, engine.vocab_size, "cuda")
        for a, c in zip(scripted_logits(engine, b, sd), scripted_logits(eager, b, sd)):
            assert torch.allclose(a, c, atol=1e-4)
    concurrent_matches_serial(engine, n_threads=8, rounds=4)
    graphs = [g for _, ws in engine._free for g in ws.graphs.values()]
    assert graphs and all(g is not None for g in graphs), "no graph captured (or a capture failed)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on a GPU machine)")
def test_cuda_round_graphs_from_threads_match_serial():
    """Whole-round captures from 4 threads at once (one capture at a time, others keep
    replaying): the tokens of one thread alone, and no capture falls back to eager rounds."""
    engine = XLNetEngine.from_hf(tiny_net().cuda(), max_idle=8)
    V = engine.vocab_size

    def run(sh, sd):
        b = batch_for(sh, sd, V, "cuda")
        g = torch.Generator("cuda").manual_seed(sd)
        return [r.tokens for r in assd.sample(engine, b, assd.ASSD(k=3), g, trace=False)]

    want = {i: run(SHAPES[i % 12], i) for i in range(12)}

    def work(i):
        for j in (i, i + 4, i + 8):
            assert run(SHAPES[j % 12], j) == want[j]

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="round capture failed")  # raise, not fall back
        assert run_threads(work, 4) == []
