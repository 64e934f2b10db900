"""Draft heads: ASSD with head drafts is exact; the engine's cached head equals the reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import toy_problems

import assd
from assd import ASSD, make_batch, sample
from assd.backends import XLNetEngine, XLNetReference
from assd.exact import max_abs_difference, sampler_distribution, sequential_joint
from assd.heads import DraftHead, HeadConfig, load_head

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(toy_problems(max_outcomes=64), st.sampled_from([0.5, 1.0, 1.7]), st.data())
def test_head_assd_is_exact(problem, t, data):
    model, batch, m = problem
    model.has_draft_head = True
    k = data.draw(st.integers(1, m))
    got = sampler_distribution(model, batch, ASSD(k=k, temperature=t, draft="head"))
    want = sequential_joint(model, batch, t)
    assert abs(sum(got.values()) - 1) < 1e-9
    assert max_abs_difference(got, want) < 1e-9


@SETTINGS
@given(toy_problems(max_outcomes=64), st.sampled_from([0.7, 1.0]), st.data())
def test_head_assd_with_an_adaptive_draft_length_is_exact(problem, t, data):
    """stop_below: drafting stops after an unlikely proposal. The computed distribution of the
    real step code (every draw enumerated) equals the sequential joint, with token and block
    verification and with token trees."""
    model, batch, m = problem
    model.has_draft_head = True
    k = data.draw(st.integers(1, m))
    tau = data.draw(st.sampled_from([0.2, 0.5, 0.9]))
    form = data.draw(st.sampled_from([{}, {"verify": "block"}, {"candidates": 2}]))
    sampler = ASSD(k=k, temperature=t, draft="head", stop_below=tau, **form)
    got = sampler_distribution(model, batch, sampler)
    want = sequential_joint(model, batch, t)
    assert abs(sum(got.values()) - 1) < 1e-9
    assert max_abs_difference(got, want) < 1e-9


def test_an_adaptive_draft_length_drafts_fewer_and_keeps_the_call_bound():
    from assd.backends.toy import ToyASARM

    model = ToyASARM(4, 9, seed=3, draft_head=True)
    sigma, P = assd.order_from_mask(torch.tensor([False] + [True] * 8))
    batch = make_batch(torch.zeros(64, 9, dtype=torch.long), sigma.expand(64, 9), P.expand(64))
    heads = {}
    for tau in (0.0, 0.6):
        sampler = ASSD(k=4, draft="head", stop_below=tau)
        res = sample(model, batch, sampler, torch.Generator().manual_seed(0))
        for r in res:
            assert r.n_generated == 8 and r.nfe <= 8  # a target call commits >= 1 token
            assert all(len(t.drafted) <= 4 for t in r.trace)
        heads[tau] = sum(r.draft_calls for r in res) / sum(r.rounds for r in res)
    assert heads[0.6] < heads[0.0]  # fewer head calls a round


@SETTINGS
@given(toy_problems(max_outcomes=64), st.sampled_from([0.7, 1.0]), st.data())
def test_head_assd_with_k_from_the_running_acceptance_is_exact(problem, t, data):
    """adapt_k: each row's k follows its running acceptance. The computed distribution of the
    real step code (every draw enumerated, so every history of acceptances) equals the
    sequential joint, with token and block verification, token trees and stop_below."""
    model, batch, m = problem
    model.has_draft_head = True
    k = data.draw(st.integers(1, m))
    thr = data.draw(st.sampled_from([0.3, 0.5, 0.8]))
    form = data.draw(
        st.sampled_from([{}, {"verify": "block"}, {"candidates": 2}, {"stop_below": 0.3}])
    )
    sampler = ASSD(k=k, temperature=t, draft="head", adapt_k=thr, **form)
    got = sampler_distribution(model, batch, sampler)
    want = sequential_joint(model, batch, t)
    assert abs(sum(got.values()) - 1) < 1e-9
    assert max_abs_difference(got, want) < 1e-9


def test_adaptive_k_follows_the_running_acceptance():
    from assd.samplers.drafts import adaptive_k, running_acceptance
    from assd.samplers.speculative import Verdict
    from assd.samplers.state import ACCEPT_PRIOR, ACCEPT_RATE

    acc = torch.tensor([0.9, 0.6, 0.3, 0.0, 1.0])
    # 0.9: 0.9 0.81 0.73 0.66 0.59 -> 5; 0.6: 0.6 0.36 -> 2 at 0.3; 0.3 -> 1 (at 0.3: 0.3 >= 0.3)
    assert adaptive_k(acc, 0.3, 5).tolist() == [5, 2, 1, 1, 5]
    assert adaptive_k(acc, 0.95, 5).tolist() == [1, 1, 1, 1, 5]  # never below one
    assert adaptive_k(acc, 0.3, 2).tolist() == [2, 2, 1, 1, 2]  # never above k
    # The estimate moves towards the mean of min(1, p/q) over the verified proposals only.
    sigma, P = assd.order_from_mask(torch.tensor([False] + [True] * 5))
    batch = make_batch(torch.zeros(3, 6, dtype=torch.long), sigma.expand(3, 6), P.expand(3))
    state = ASSD(k=3, draft="head", adapt_k=0.5).init(batch, (), 4)
    assert torch.allclose(state.accept, torch.full((3,), ACCEPT_PRIOR))
    state.next_k = torch.tensor([2, 0, 3])
    px = torch.tensor([[0.2, 0.9, 0.5], [0.1, 0.1, 0.1], [0.4, 0.4, 0.1]])
    qx = torch.tensor([[0.4, 0.3, 0.5], [0.5, 0.5, 0.5], [0.2, 0.8, 0.2]])
    z = torch.zeros(3, dtype=torch.long)
    new = running_acceptance(state, Verdict(z, z, z, px, qx))
    obs = torch.tensor([(0.5 + 1.0) / 2, ACCEPT_PRIOR, (1.0 + 0.5 + 0.5) / 3])
    assert torch.allclose(new, ACCEPT_PRIOR + ACCEPT_RATE * (obs - ACCEPT_PRIOR))


def test_k_from_the_running_acceptance_drafts_by_row_and_keeps_the_call_bound():
    from assd.backends.toy import ToyASARM

    model = ToyASARM(4, 9, seed=3, draft_head=True)
    sigma, P = assd.order_from_mask(torch.tensor([False] + [True] * 8))
    batch = make_batch(torch.zeros(64, 9, dtype=torch.long), sigma.expand(64, 9), P.expand(64))
    heads, sizes = {}, {}
    for thr in (0.0, 0.5):
        sampler = ASSD(k=4, draft="head", adapt_k=thr)
        res = sample(model, batch, sampler, torch.Generator().manual_seed(0))
        for r in res:
            assert r.n_generated == 8 and r.nfe <= 8  # a target call commits >= 1 token
        heads[thr] = sum(r.draft_calls for r in res) / sum(r.rounds for r in res)
        sizes[thr] = {len(t.drafted) for r in res for t in r.trace[1:]}
    assert heads[0.5] < heads[0.0]  # fewer head calls a round
    assert len(sizes[0.5] - {0}) > 1  # rows and rounds draft different numbers of proposals


def test_stop_below_is_checked():
    with pytest.raises(ValueError, match="stop_below.*draft='head'"):
        ASSD(k=3, stop_below=0.5)
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="stop_below must lie in"):
            ASSD(k=3, draft="head", stop_below=bad)
    assert ASSD(k=3, draft="head", stop_below=0.25).name == "assd-head+stop0.25(k=3)"
    with pytest.raises(ValueError, match="adapt_k.*draft='head'"):
        ASSD(k=3, adapt_k=0.5)
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="adapt_k must lie in"):
            ASSD(k=3, draft="head", adapt_k=bad)
    assert ASSD(k=3, draft="head", adapt_k=0.4).name == "assd-head+adapt0.4(k=3)"


def test_head_rounds_cost_one_target_call_and_count_head_calls_apart():
    from assd.backends.toy import ToyASARM

    model = ToyASARM(4, 7, seed=3, draft_head=True)
    sigma, P = assd.order_from_mask(torch.tensor([False, True, True, True, True, True, False]))
    batch = make_batch(torch.zeros(16, 7, dtype=torch.long), sigma.expand(16, 7), P.expand(16))
    res = sample(model, batch, ASSD(k=3, draft="head"), torch.Generator().manual_seed(0))
    for r in res:
        assert r.n_generated == 5
        assert r.nfe == r.rounds <= 5  # one target call per round, >= 1 token per round
        assert r.draft_calls == sum(t.draft_calls for t in r.trace) > 0
    assert any(r.nfe < 5 for r in res)  # some proposals were accepted


def test_a_model_without_head_is_refused_clearly():
    from assd.backends.toy import ToyASARM

    model = ToyASARM(3, 4)
    sigma, P = assd.order_from_mask(torch.tensor([False, True, True, True]))
    batch = make_batch(torch.zeros(4, dtype=torch.long), sigma, P)
    with pytest.raises(ValueError, match="has none"):
        sample(model, batch, ASSD(k=2, draft="head"))


# -- the XLNet head: engine (cached) vs reference (recomputed) ------------------------------------
def tiny_xlnet_with_head(seed=0):
    from transformers import XLNetConfig, XLNetLMHeadModel

    torch.manual_seed(seed)
    cfg = XLNetConfig(vocab_size=40, d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0)
    net = XLNetLMHeadModel(cfg).eval()
    head = DraftHead(HeadConfig(d_model=32, vocab_size=40, n_head=2, d_head=16, d_inner=48))
    with torch.no_grad():  # non-trivial parameters everywhere (biases are zero at init)
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net, head.eval()


def random_batch(B=3, L=14, seed=1):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(5, 40, (B, L), generator=g)
    rows = [assd.random_order(L, 0.7, g) for _ in range(B)]
    sigma = torch.stack([r[0] for r in rows])
    n_prompt = torch.stack([(~r[1]).sum() for r in rows])
    return make_batch(tok, sigma, n_prompt)


def test_engine_draft_logits_equal_the_reference():
    net, head = tiny_xlnet_with_head()
    batch = random_batch()
    ref = XLNetReference(net, head=head).open(batch)
    eng = XLNetEngine.from_hf(net, head=head, graphs=False).open(batch)
    B, L = batch.tokens.shape
    P = batch.n_prompt
    # A target call computes the states of ranks < P + 3 (committed P + 1, two proposals, and
    # the query of rank P + 3 reads them all).
    n, m = P + 1, torch.full_like(P, 2)
    q = (P + 3)[:, None]
    eng.logits(batch.tokens, n, m, q, q)
    for f_off, c_off, r_off in [(0, 0, 0), (0, 1, 2), (1, 3, 3), (3, 3, 4), (2, 4, 6)]:
        qf, qc, qr = (P + f_off)[:, None], (P + c_off)[:, None], (P + r_off)[:, None]
        qr = torch.where(qr < L, qr, -1)
        want = ref.draft_logits(batch.tokens, qr, qc, qf)
        got = eng.draft_logits(batch.tokens, qr, qc, qf)
        ok = qr >= 0
        assert torch.allclose(got[ok], want[ok], atol=1e-4), (f_off, c_off, r_off)
    # Several queries at once, each with its own (rank, context, feature boundary).
    qr = torch.stack([P + 3, P + 4, P + 5], 1)
    qc = torch.stack([P + 1, P + 4, P + 2], 1)
    qf = torch.stack([P + 1, P + 2, P], 1)
    assert torch.allclose(
        eng.draft_logits(batch.tokens, qr, qc, qf),
        ref.draft_logits(batch.tokens, qr, qc, qf),
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="not valid"):  # states above P + 3 were never computed
        eng.draft_logits(batch.tokens, (P + 6)[:, None], (P + 5)[:, None], (P + 5)[:, None])


@pytest.mark.parametrize(
    "B, sampler",
    [
        (4, ASSD(k=3, draft="head")),
        (4, ASSD(k=3, draft="head", stop_below=0.05)),  # rows stop at different steps
        (1, ASSD(k=3, draft="head", stop_below=0.9)),  # all stop: the engine skips the call
        (4, ASSD(k=3, draft="head", adapt_k=0.4)),  # k per row from the running acceptance
    ],
    ids=lambda x: getattr(x, "name", str(x)),
)
def test_head_sampling_gives_identical_tokens_on_engine_and_reference(B, sampler):
    net, head = tiny_xlnet_with_head(seed=2)
    batch = random_batch(B=B, L=12, seed=3)
    out = []
    for model in (XLNetReference(net, head=head), XLNetEngine.from_hf(net, head=head)):
        res = sample(model, batch, sampler, torch.Generator().manual_seed(5), trace=False)
        out.append([(r.tokens, r.nfe, r.draft_calls) for r in res])
    assert out[0] == out[1]


def test_head_files_round_trip_and_load_beside_the_model(tmp_path):
    from assd.loading import wrap

    net, head = tiny_xlnet_with_head()
    head.save(tmp_path, int8=False)
    back = load_head(tmp_path)
    for (name, a), b in zip(head.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name
    head.save(tmp_path, int8=True)  # int8 with per-channel scales: close, not equal
    q8 = load_head(tmp_path)
    w, w8 = head.layers[0].ff1.weight, q8.layers[0].ff1.weight
    assert 0 < (w - w8).abs().max() <= w.abs().amax(1).max() / 127
    assert load_head(tmp_path / "nothing") is None
    assert wrap(net, (), None, "engine", head=q8).has_draft_head
    assert not wrap(net, (), None, "reference").has_draft_head


def test_train_head_learns_and_installs_beside_the_target(tmp_path):
    """One command after a target's training: the head's acceptance rises and its files land."""
    pytest.importorskip("accelerate")
    from training.model import build_model, export
    from training.tokenizer import save, train_bpe
    from training.train_head import main as train_head

    words = "the a cat dog sat ran on under mat tree red big small and".split()
    docs = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(60)) for i in range(80)]
    (tmp_path / "train.txt").write_text("\n".join(docs) + "\n")
    save(train_bpe(docs, vocab_size=300), tmp_path / "tok")
    from training.tokenizer import load as load_tok

    tok = load_tok(str(tmp_path / "tok"))
    torch.manual_seed(0)
    export(build_model(tok, "tiny"), tok, tmp_path / "target", 32, "float32")
    summary = train_head(
        [
            str(tmp_path / "target"),
            "--data",
            str(tmp_path / "train.txt"),
            "--seq-len",
            "32",
            "--batch-size",
            "8",
            "--max-steps",
            "60",
            "--eval-every",
            "60",
            "--eval-chunks",
            "8",
            "--lr",
            "3e-3",
            "--warmup-steps",
            "5",
            "--k",
            "3",
            "--out",
            str(tmp_path / "head"),
            "--install",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    first = train_head(
        [
            str(tmp_path / "target"),
            "--data",
            str(tmp_path / "train.txt"),
            "--seq-len",
            "32",
            "--batch-size",
            "8",
            "--max-steps",
            "1",
            "--eval-every",
            "1",
            "--eval-chunks",
            "8",
            "--k",
            "3",
            "--out",
            str(tmp_path / "head0"),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert summary["val_acceptance"] > first["val_acceptance"] + 0.05
    assert len(summary["val_by_distance"]) == 4  # distances 0..k
    # --init-head with --max-steps 0 evaluates a saved head as it is (the int8 file, so close to
    # the float head's figure, not equal); a head of another vocabulary is refused by name
    common = [str(tmp_path / "target"), "--data", str(tmp_path / "train.txt"), "--seq-len", "32"]
    common += ["--batch-size", "8", "--eval-chunks", "8", "--k", "3", "--device", "cpu"]
    again = train_head(
        [*common, "--init-head", str(tmp_path / "head"), "--max-steps", "0", "--no-progress"]
        + ["--out", str(tmp_path / "head_eval")]
    )
    assert again["steps"] == 0
    assert abs(again["val_acceptance"] - summary["val_acceptance"]) < 0.02
    assert again["val_acceptance"] > first["val_acceptance"] + 0.04
    assert (
        (tmp_path / "head_eval" / "head_metrics.csv").read_text().splitlines()[1].startswith("0,")
    )
    # a warm start trains on from the loaded head (not from scratch: its first figure is high)
    warm = train_head(
        [*common, "--init-head", str(tmp_path / "head"), "--max-steps", "3", "--eval-every", "1"]
        + ["--lr", "1e-4", "--warmup-steps", "1", "--out", str(tmp_path / "head_warm")]
        + ["--no-progress"]
    )
    assert warm["steps"] == 3 and warm["val_acceptance"] > first["val_acceptance"] + 0.04
    PROSE = Path(assd.__file__).parent / "pretrained" / "prose"
    with pytest.raises(
        SystemExit, match="--init-head .*vocab 8192, clamp_len -1; the target has d_model 32"
    ):
        train_head([*common, "--init-head", str(PROSE), "--max-steps", "0"])
    lm = assd.load(str(tmp_path / "target"), device="cpu")
    assert lm.model.has_draft_head
    batch = make_batch(torch.randint(6, 300, (24,)), torch.arange(24), 4)
    res = sample(lm.model, batch, ASSD(k=3, draft="head"), torch.Generator().manual_seed(0))
    assert res[0].n_generated == 20 and res[0].draft_calls > 0
