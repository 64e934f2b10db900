"""Training package: schedules, orders, objectives, data, tokenizer, and a tiny end-to-end run."""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import json
import lzma
import math
import random

import pytest
import torch

from assd import make_batch
from assd.backends import XLNetReference
from assd.orders import ORDERS
from training.config import parse
from training.data import ChunkStream, pack, read_texts, tokenize
from training.fast_model import FastXLNet, query_rows
from training.model import build_model
from training.objective import sample_orders, target_nll, weighted_loss
from training.schedule import MaskSchedule, lr_at, n_masked_of
from training.tokenizer import SPECIAL_TOKENS, eod_id, load, save, train_bpe
from training.train import main as train_main
from training.train import plan_steps

WORDS = "the a cat dog sat ran on under mat tree quickly slowly red big small and".split()


def _docs(n: int, seed: int = 0) -> list[str]:
    """Prose-like and code-like documents (newlines, indentation, tabs, trailing spaces)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 3 == 2:
            name = rng.choice(WORDS)
            out.append(f"def {name}_{i}(x):\n    if x:\n\treturn x  \n    return {name!r}\n")
        else:
            out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + ".\n")
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    docs = _docs(240)
    path = d / "train.jsonl.xz"
    with lzma.open(path, "wt", encoding="utf-8") as f:
        for t in docs:
            f.write(json.dumps({"text": t, "title": "x"}) + "\n")
    tok = train_bpe(docs, vocab_size=320)
    save(tok, d / "tok")
    return {"dir": d, "path": str(path), "docs": docs, "tok": str(d / "tok")}


# ---------------------------------------------------------------- schedules


def test_mask_schedule_warms_up_linearly_to_the_final_range():
    s = MaskSchedule(start=0.15, final_min=0.05, final_max=0.95, warmup_steps=100)
    assert s.range_at(0) == pytest.approx((0.15, 0.15))
    assert s.range_at(50) == pytest.approx((0.10, 0.55))
    assert s.range_at(100) == pytest.approx((0.05, 0.95))
    assert s.range_at(10_000) == pytest.approx((0.05, 0.95))


def test_mask_rates_are_stratified_within_the_range():
    s = MaskSchedule(0.15, 0.05, 0.95, warmup_steps=10)
    g = torch.Generator().manual_seed(0)
    for step, n in [(0, 7), (5, 16), (10, 32)]:
        r = s.sample(step, n, g)
        lo, hi = s.range_at(step)
        assert r.shape == (n,) and bool(((r >= lo - 1e-7) & (r <= hi + 1e-7)).all())
        strata = ((r.sort().values - lo) / max(hi - lo, 1e-12) * n).floor().clamp(max=n - 1)
        if hi > lo:  # exactly one rate in each of the n equal strata
            assert strata.tolist() == list(range(n))
    assert n_masked_of(torch.tensor([0.0, 0.5, 1.0]), 10).tolist() == [1, 5, 9]
    with pytest.raises(ValueError, match="final_min"):
        MaskSchedule(0.15, 0.9, 0.1)


def test_lr_warms_up_then_decays_linearly():
    assert lr_at(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, 110) == pytest.approx(0.5)
    assert lr_at(110, 1.0, 10, 110, final_ratio=0.1) == pytest.approx(0.1)


# ---------------------------------------------------------------- orders and objectives


@pytest.mark.parametrize("order", ["left-to-right", "random"])
def test_orders_put_the_prompt_first_in_ascending_position(order):
    g = torch.Generator().manual_seed(1)
    L = 24
    n_masked = torch.tensor([1, 5, 12, 23, 17, 8])
    sigma, n_prompt = sample_orders(n_masked, L, order, g)
    assert n_prompt.tolist() == (L - n_masked).tolist()
    masked_in_order = []
    for b in range(len(n_masked)):
        assert sorted(sigma[b].tolist()) == list(range(L))
        pos = torch.argsort(sigma[b])  # positions in rank order
        P = int(n_prompt[b])
        assert pos[:P].tolist() == sorted(pos[:P].tolist())  # visible group ascending
        if order == "left-to-right":
            assert pos[P:].tolist() == sorted(pos[P:].tolist())  # masked group ascending
        masked_in_order.append(pos[P:].tolist())
    if order == "random":  # not always left to right
        assert any(m != sorted(m) for m in masked_in_order)
    with pytest.raises(ValueError, match="order"):
        sample_orders(n_masked, L, "zigzag", g)


def test_order_names_are_the_librarys_and_paper_is_an_alias():
    assert ORDERS == ("left-to-right", "random")
    a = sample_orders(torch.tensor([3, 5]), 9, "paper", torch.Generator().manual_seed(7))
    b = sample_orders(torch.tensor([3, 5]), 9, "left-to-right", torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert parse([]).order == "left-to-right"


def test_random_orders_cover_every_permutation_of_the_masked_positions_evenly():
    """3 masked positions of 5: each of the 3! decoding orders about 1/6 of the time."""
    from collections import Counter

    from scipy.stats import chisquare

    g = torch.Generator().manual_seed(11)
    sigma, n_prompt = sample_orders(torch.full((6000,), 3), 5, "random", g)
    pos = sigma.argsort(-1)[:, 2:]  # masked positions in decoding order
    masked = pos.sort(-1).values
    relative = (pos[:, :, None] == masked[:, None, :]).float().argmax(-1)  # order as a permutation
    counts = Counter(tuple(r) for r in relative.tolist())
    assert len(counts) == 6
    assert chisquare(list(counts.values())).pvalue > 1e-4


def test_fresh_random_subsets_per_sequence():
    g = torch.Generator().manual_seed(2)
    sigma, n_prompt = sample_orders(torch.full((64,), 6), 12, "left-to-right", g)
    masks = {tuple((sigma[b] >= n_prompt[b]).tolist()) for b in range(64)}
    assert len(masks) > 50


@pytest.fixture(scope="module")
def tiny(corpus):
    tok = load(corpus["tok"])
    torch.manual_seed(0)
    return build_model(tok, "tiny").eval(), tok


@pytest.mark.parametrize("objective", ["joint", "parallel"])
@pytest.mark.parametrize("order", ["left-to-right", "random"])
def test_objective_matches_the_reference_backend(tiny, objective, order):
    """The fast training forward gives the same per-target NLLs as the ASARM protocol's queries
    on Hugging Face's XLNet: joint = chain rule (context = own rank), parallel = prompt only."""
    model, tok = tiny
    g = torch.Generator().manual_seed(3)
    B, L = 3, 14
    x = torch.randint(len(SPECIAL_TOKENS), len(tok), (B, L), generator=g)
    sigma, n_prompt = sample_orders(torch.tensor([4, 9, 13]), L, order, g)
    with torch.no_grad():
        nll, rows = target_nll(FastXLNet(model), x, sigma, n_prompt, objective, tok.mask_token_id)
    assert rows.bincount().tolist() == [4, 9, 13]

    M = 13
    q_rank = n_prompt[:, None] + torch.arange(M)
    q_rank = torch.where(q_rank < L, q_rank, -1)
    q_ctx = q_rank if objective == "joint" else torch.where(q_rank >= 0, n_prompt[:, None], -1)
    batch = make_batch(x, sigma, n_prompt)
    session = XLNetReference(model).open(batch)
    ref = session.logits(x, n_prompt, L - n_prompt, q_rank, q_ctx).log_softmax(-1)
    pos = torch.gather(batch.pos_of_rank, 1, q_rank.clamp(min=0))
    ref_lp = ref.gather(-1, torch.gather(x, 1, pos)[..., None])[..., 0]
    # target_nll lists targets in position order; the reference in rank order: compare per row.
    for b in range(B):
        mine = nll[rows == b]
        order_pos = pos[b][q_rank[b] >= 0]
        theirs = -ref_lp[b][q_rank[b] >= 0][order_pos.argsort()]
        assert torch.allclose(mine, theirs, atol=1e-5)


def test_parallel_objective_ignores_masked_tokens_and_joint_reads_them(tiny):
    model, tok = tiny
    fast = FastXLNet(model)
    g = torch.Generator().manual_seed(4)
    x = torch.randint(len(SPECIAL_TOKENS), len(tok), (2, 12), generator=g)
    sigma, n_prompt = sample_orders(torch.tensor([5, 8]), 12, "left-to-right", g)
    masked = sigma >= n_prompt[:, None]
    y = torch.where(masked, torch.roll(x, 1, 1), x)  # other content at the masked positions
    with torch.no_grad():  # the labels stay x: only what the model could read changes
        par_x = fast(
            x.masked_fill(masked, tok.mask_token_id),
            sigma,
            n_prompt,
            masked,
            x,
            n_prompt[:, None].expand_as(sigma),
        )
        par_y = fast(
            y.masked_fill(masked, tok.mask_token_id),
            sigma,
            n_prompt,
            masked,
            x,
            n_prompt[:, None].expand_as(sigma),
        )
        joint_x = fast(x, sigma, n_prompt, masked, x)
        joint_y = fast(y, sigma, n_prompt, masked, x)
    assert torch.equal(par_x, par_y)  # the parallel objective never reads masked content
    assert not torch.allclose(joint_x, joint_y)  # the joint objective does (teacher forcing)
    with pytest.raises(ValueError, match="objective"):
        target_nll(fast, x, sigma, n_prompt, "causal", 0)


def test_packed_query_rows_equal_every_row(tiny):
    """The forward computes only the targets' query rows (padded to the most targets of a row,
    or to ``min_query_rows``): the same NLLs as computing every position's query row."""
    model, tok = tiny
    g = torch.Generator().manual_seed(5)
    B, L = 4, 16
    x = torch.randint(len(SPECIAL_TOKENS), len(tok), (B, L), generator=g)
    sigma, n_prompt = sample_orders(torch.tensor([1, 3, 7, 15]), L, "random", g)
    targets = sigma >= n_prompt[:, None]
    with torch.no_grad():
        full = FastXLNet(model, pack_queries=False)(x, sigma, n_prompt, targets, x)
        packed = FastXLNet(model)(x, sigma, n_prompt, targets, x)
        padded = FastXLNet(model, min_query_rows=12)(x, sigma, n_prompt, targets, x)
    assert torch.allclose(packed, full, atol=1e-5) and torch.allclose(padded, full, atol=1e-5)
    qpos, valid = query_rows(targets, 12)
    assert qpos.shape == (B, 16) and valid.sum(1).tolist() == [1, 3, 7, 15]
    assert query_rows(targets[:3])[0].shape == (3, 8)  # 7 targets at most, in steps of 8
    for b in range(B):  # each row's targets, ascending, then padding
        assert qpos[b][valid[b]].tolist() == targets[b].nonzero()[:, 0].tolist()


def test_loss_weightings():
    nll = torch.tensor([1.0, 3.0, 2.0, 2.0, 2.0, 8.0])
    rows = torch.tensor([0, 0, 2, 2, 2, 2])
    total, weight = weighted_loss(nll, rows, 3, "token")
    assert float(total / weight) == pytest.approx(18.0 / 6)
    total, weight = weighted_loss(nll, rows, 3, "sequence")  # rows 0 and 2: means 2.0 and 3.5
    assert float(total / weight) == pytest.approx(2.75)
    with pytest.raises(ValueError, match="weighting"):
        weighted_loss(nll, rows, 3, "rate")


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trips_whitespace_exactly(corpus):
    tok = load(corpus["tok"])  # saved in Hugging Face format, reloaded through AutoTokenizer
    assert tok.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == list(SPECIAL_TOKENS)
    assert tok.mask_token == "<mask>" and eod_id(tok) == SPECIAL_TOKENS.index("<eod>")
    assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)
    texts = [
        "def f(x):\n    if x:\n\t\treturn  x   \n\n\n    return None\n",
        "  leading and trailing  \r\n windows\r\nline\n",
        "unicode: café — naïve ü 東京 😀\ttab\n",
        "x = [1 ,2 , 3 ] ; y = ' . '  \n" + " " * 17 + "deep\n",
    ]
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == t


CODE = [
    "def f(x):\n    if x:\n        return x\n\n    return None\n",
    "class A:\n    def g(self):\n        pass\n\n\ndef h():\n    return [1, 2]\n",
] * 40


def test_split_newline_tokenizer_cuts_at_line_starts_like_one_piece():
    """A prompt that ends at a line start (every single-line infilling task) must tokenize as
    it does inside the whole text. GPT-2's rule glues "\n\n" to the next line's indentation,
    so the plain tokenizer fails this; the split-newline one passes, and still round-trips."""
    text = CODE[0] + CODE[1]
    lines = text.splitlines(keepends=True)
    for split, should_match in ((False, False), (True, True)):
        tok = train_bpe(CODE, vocab_size=300, split_newlines=split)

        def ids(t, tok=tok):
            return tok(t, add_special_tokens=False)["input_ids"]

        whole = ids(text)
        matches = [
            ids("".join(lines[:i])) + ids("".join(lines[i:])) == whole for i in range(1, len(lines))
        ]
        assert all(matches) == should_match
        assert tok.decode(whole) == text
    assert tok.convert_ids_to_tokens(ids("\n\n    x"))[:2] == ["Ċ", "Ċ"]  # each newline alone


# ---------------------------------------------------------------- data


def test_readers_agree_and_shards_are_disjoint(corpus, tmp_path):
    docs = corpus["docs"]
    assert list(read_texts(corpus["path"], use_datasets=False)) == docs
    if importlib.util.find_spec("datasets") is not None:  # the `train` extra
        assert list(read_texts(corpus["path"], use_datasets=True)) == docs
    txt = tmp_path / "lines.txt.gz"
    with gzip.open(txt, "wt", encoding="utf-8") as f:
        f.write("one\ntwo\nthree\n")
    assert [t.strip() for t in read_texts(str(txt), use_datasets=False)] == ["one", "two", "three"]
    shards = [
        list(read_texts(corpus["path"], rank=r, world=3, use_datasets=False)) for r in range(3)
    ]
    assert sorted(sum(shards, [])) == sorted(docs) and all(shards)
    assert not set(shards[0]) & set(shards[1])
    with pytest.raises(ImportError, match="datasets"):
        next(read_texts("openwebtext", use_datasets=False))


def test_pack_joins_documents_with_eod():
    docs = [
        torch.tensor([1, 2, 3]).numpy(),
        torch.tensor([4]).numpy(),
        torch.tensor([5, 6]).numpy(),
    ]
    chunks = pack(docs, eod=0, seq_len=4)
    assert chunks.tolist() == [[1, 2, 3, 0], [4, 0, 5, 6]]  # the final eod is the dropped remainder


def test_chunk_stream_is_deterministic_and_visits_every_chunk():
    chunks = torch.arange(40).view(10, 4)
    a, b = ChunkStream(chunks, 3, seed=5, rank=0), ChunkStream(chunks, 3, seed=5, rank=0)
    assert torch.equal(a.batch(7), b.batch(7))
    first = torch.cat([a.batch(c) for c in range(4)])[:10, 0]  # one epoch = 10 rows
    assert sorted(first.tolist()) == list(range(0, 40, 4))
    assert not torch.equal(ChunkStream(chunks, 3, seed=5, rank=1).batch(0), a.batch(0))


def test_tokenize_then_pack_round_trips(corpus):
    tok = load(corpus["tok"])
    docs = corpus["docs"][:5]
    chunks = pack(tokenize(tok, docs, batch=2), eod_id(tok), seq_len=8)
    text = tok.decode(chunks.flatten().tolist())
    assert text.startswith(docs[0] + "<eod>" + docs[1])


# ---------------------------------------------------------------- end to end


def _rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _metrics(path) -> dict[int, float]:
    return {int(r["step"]): float(r["train_loss"]) for r in _rows(path)}


def test_plan_steps_fits_the_budget():
    # 100 s budget, 10 s gone at step 30, 0.1 s a step: 90 s left, 90% of it = 810 steps.
    assert plan_steps(30, 10.0, 0.1, 100.0, 10_000) == 30 + 810
    assert plan_steps(30, 10.0, 0.1, 100.0, 500) == 500  # never past --max-steps
    assert plan_steps(30, 120.0, 0.1, 100.0, 10_000) == 31  # already late: one more step
    assert plan_steps(30, 10.0, 0.0, 100.0, 777) == 777  # no measurable time: --max-steps
    assert plan_steps(0, 0.0, 2.0, 60.0, 10_000) == 27  # int(0.9 * 60 / 2)


def test_train_learns_and_resumes_exactly(corpus, tmp_path):
    pytest.importorskip("accelerate")  # the `train` extra
    common = [
        "--data", corpus["path"], "--tokenizer", corpus["tok"], "--val-every-doc", "10",
        "--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--lr", "3e-3",
        "--warmup-steps", "5", "--mask-warmup-steps", "10", "--max-steps", "30",
        "--log-every", "1", "--eval-every", "100", "--sample-every", "100", "--n-samples", "1",
        "--sample-len", "16", "--save-every", "25", "--eval-chunks", "8", "--no-progress",
        "--precision", "no",
    ]  # fmt: skip
    a = tmp_path / "a"
    summary = train_main(common + ["--out", str(a), "--export", str(a / "export")])
    losses = _metrics(a / "metrics.csv")
    assert summary["steps"] == 30 and sorted(losses) == list(range(1, 31))
    early = sum(losses[s] for s in range(1, 6)) / 5
    late = sum(losses[s] for s in range(26, 31)) / 5
    assert late < early - 0.5, (early, late)
    assert summary["final_val_loss"] < early
    with open(a / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and int(rows[0]["nfe"]) >= 1 and int(rows[0]["generated"]) >= 1

    rows = _rows(a / "metrics.csv")  # one epoch count for every row: micro-batches consumed
    ratios = {round(float(r["epoch"]) / int(r["step"]), 3) for r in rows if int(r["step"]) >= 10}
    assert len(ratios) == 1 and [r["val_loss"] != "" for r in rows] == [False] * 29 + [True]

    b = tmp_path / "b"
    train_main(common + ["--out", str(b), "--resume", str(a / "checkpoints" / "step_0000025")])
    resumed = _metrics(b / "metrics.csv")
    assert sorted(resumed) == list(range(26, 31))
    for s in range(26, 31):
        assert abs(resumed[s] - losses[s]) < 1e-6, (s, resumed[s], losses[s])

    # Resuming into the run's own folder: steps 26..30 again, each row once.
    train_main(common + ["--out", str(a), "--resume", str(a / "checkpoints" / "step_0000025")])
    steps = [int(r["step"]) for r in _rows(a / "metrics.csv")]
    assert steps == list(range(1, 31))
    assert all(abs(_metrics(a / "metrics.csv")[s] - losses[s]) < 1e-6 for s in range(1, 31))
    assert sorted({int(r["step"]) for r in _rows(a / "samples.csv")}) == [30]

    from transformers import AutoTokenizer, XLNetLMHeadModel

    net = XLNetLMHeadModel.from_pretrained(str(a / "export"))
    assert net.config.assd_max_length == 32
    assert AutoTokenizer.from_pretrained(str(a / "export")).mask_token == "<mask>"

    # Fine-tuning an XLNet-format checkpoint (its own tokenizer) starts where it left off.
    common_ft = [x for x in common if x != corpus["tok"] and x != "--tokenizer"]
    c = tmp_path / "c"
    ft = train_main(common_ft + ["--init", str(a / "export"), "--out", str(c), "--max-steps", "2"])
    assert (
        _metrics(c / "metrics.csv")[1] < early - 0.5 and ft["parameters"] == summary["parameters"]
    )


def test_config_flags_and_bad_options(corpus, tmp_path):
    pytest.importorskip("accelerate")
    cfg = parse(["--data", "x.jsonl", "--max-time", "12.5", "--no-progress", "--export-best"])
    assert cfg.max_time == 12.5 and cfg.progress is False and cfg.export_best is True
    assert cfg.max_docs is None
    with pytest.raises(ValueError, match="objective"):
        train_main(["--data", corpus["path"], "--objective", "causal", "--out", str(tmp_path)])


def test_int8_export_loads_through_assd_and_stays_close(tiny, tmp_path):
    """int8 weights with per-channel scales: about half the bytes of float16, the same model up to
    quantisation error, dequantised by assd.load (which the embedded models rely on)."""
    model, tok = tiny
    from assd.loading import load as assd_load
    from assd.quantize import dequantize, quantize
    from training.model import export

    export(model, tok, tmp_path / "f32", 32, "float32")
    export(model, tok, tmp_path / "i8", 32, "int8")
    size = {w: (tmp_path / w / "model.safetensors").stat().st_size for w in ("f32", "i8")}
    assert size["i8"] < 0.4 * size["f32"]
    ref = assd_load(str(tmp_path / "f32"), backend="reference", device="cpu")
    q8 = assd_load(str(tmp_path / "i8"), backend="reference", device="cpu")
    a, b = ref.model.net.state_dict(), q8.model.net.state_dict()
    for name, t in a.items():
        err = (b[name] - t).abs().max() / t.abs().max().clamp(min=1e-12)
        assert err <= (1 / 127 if t.dim() >= 2 and t.numel() >= 1024 else 1e-7), name
    assert torch.equal(b["lm_loss.weight"], b["transformer.word_embedding.weight"])  # tied
    # Per-channel: a channel of tiny weights keeps its own scale (not the tensor's maximum).
    w = torch.randn(64, 128)
    w[3] *= 1e-3
    back = dequantize(quantize({"m": w}))["m"]
    assert (back[3] - w[3]).abs().max() <= w[3].abs().max() / 127  # one step of its own scale
    with pytest.raises(ValueError, match="weights must be"):
        export(model, tok, tmp_path / "x", 32, "int4")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(corpus, tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2`` (on a machine without GPUs: two CPU
    processes over gloo), batch 4 each, against one process with batch 8.

    Exact: both ranks hold the same parameters at the end, they read disjoint document shards
    that together are the one-process training set, each trains on its own shard's batches (the
    first-batch hashes), the token count is the same. Statistical: the loss curve. The data
    differ (each rank packs and shuffles its own shard), so the curves agree only as two seeds
    of the one-process run do: every 10-step mean of the training loss and the validation loss
    (a protocol that does not depend on the number of processes) must lie within twice the
    largest gap between one-process runs with seeds 0 and 1, plus 0.02.
    """
    import re
    import shutil
    import subprocess
    from pathlib import Path

    pytest.importorskip("accelerate")
    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate launcher is not on PATH")
    common = [
        "--data", corpus["path"], "--tokenizer", corpus["tok"], "--val-every-doc", "10",
        "--preset", "tiny", "--seq-len", "32", "--lr", "3e-3", "--warmup-steps", "5",
        "--mask-warmup-steps", "10", "--max-steps", "40", "--log-every", "1",
        "--eval-every", "20", "--sample-every", "1000", "--n-samples", "0", "--save-every", "1000",
        "--eval-chunks", "16", "--no-progress", "--precision", "no",
    ]  # fmt: skip
    one = train_main(common + ["--batch-size", "8", "--out", str(tmp_path / "one")])
    train_main(common + ["--batch-size", "8", "--seed", "1", "--out", str(tmp_path / "s1")])
    launch = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
        str(_free_port()), "-m", "training.train", *common, "--batch-size", "4",
        "--out", str(tmp_path / "two"),
    ]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(launch, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    two = json.loads((tmp_path / "two" / "summary.json").read_text())

    assert two["processes"] == 2 and "over 2 process(es)" in out
    assert two["steps"] == one["steps"] == 40 and two["tokens_seen"] == one["tokens_seen"]
    sums = re.findall(r"\[rank (\d)/2\] parameter checksum (\S+?)(?=\[|\s|$)", out)
    assert sorted(r for r, _ in sums) == ["0", "1"] and len({c for _, c in sums}) == 1, sums

    # The data: disjoint document shards that make up the one-process set; each rank trains on
    # its own shard's batches.
    from training.config import parse as parse_cfg
    from training.data import split_docs

    cfg = parse_cfg(common + ["--batch-size", "4"])
    shards = [list(split_docs(cfg, r, 2)[0]) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(split_docs(cfg, 0, 1)[0])
    assert not set(shards[0]) & set(shards[1])
    tok = load(corpus["tok"])
    firsts = dict(re.findall(r"\[rank (\d)/2\] first batch sha1 (\w+)", out))
    for r in range(2):
        chunks = pack(tokenize(tok, shards[r]), eod_id(tok), 32)
        want = ChunkStream(chunks, 4, cfg.seed, r).batch(0)
        assert firsts[str(r)] == hashlib.sha1(want.numpy().tobytes()).hexdigest()[:16]
    assert firsts["0"] != firsts["1"]
    n_two = int(re.search(r"data: (\d+) train chunks", out).group(1))
    n_one = len(pack(tokenize(tok, split_docs(cfg, 0, 1)[0]), eod_id(tok), 32))
    assert n_one - 1 <= n_two <= n_one  # only the packing remainder of the extra shard is lost

    def curve(name):
        rows = _rows(tmp_path / name / "metrics.csv")
        loss = [float(r["train_loss"]) for r in rows]
        val = [float(r["val_loss"]) for r in rows if r["val_loss"]]
        return [sum(loss[i : i + 10]) / 10 for i in range(0, 40, 10)] + val

    a, b, c = curve("one"), curve("s1"), curve("two")
    tol = 2 * max(abs(x - y) for x, y in zip(a, b)) + 0.02
    gaps = [abs(x - y) for x, y in zip(a, c)]
    assert max(gaps) <= tol, (gaps, tol)
    assert c[3] < c[0] - 1.0  # and it learns


def test_time_budget_plans_stops_and_resumes_to_the_plan(corpus, tmp_path, capsys):
    """--max-time: the step count is planned from the measured speed (capped by --max-steps);
    a run out of time stops at once and saves; resuming continues to the saved plan."""
    pytest.importorskip("accelerate")
    common = [
        "--data", corpus["path"], "--tokenizer", corpus["tok"], "--val-every-doc", "10",
        "--preset", "tiny", "--seq-len", "16", "--batch-size", "2", "--max-steps", "35",
        "--log-every", "1", "--eval-every", "1000", "--sample-every", "1000", "--n-samples", "0",
        "--save-every", "1000", "--eval-chunks", "2", "--no-progress", "--precision", "no",
    ]  # fmt: skip
    planned = train_main(common + ["--max-time", "3600", "--out", str(tmp_path / "a")])
    assert planned["steps"] == 35 and "planned 35 steps" in capsys.readouterr().out

    out = tmp_path / "b"
    stopped = train_main(common + ["--max-time", "0.001", "--out", str(out)])
    assert stopped["steps"] == 1 and "time budget reached" in capsys.readouterr().out
    trainer = json.loads((out / "checkpoints" / "step_0000001" / "trainer.json").read_text())
    assert trainer["step"] == 1 and trainer["planned_steps"] == 35  # the plan, not the stop
    resumed = train_main(common + ["--out", str(out), "--resume", "latest"])
    assert resumed["steps"] == 35
    assert [int(r["step"]) for r in _rows(out / "metrics.csv")] == list(range(1, 36))


def test_span_rows_mask_one_contiguous_span_of_the_requested_size():
    g = torch.Generator().manual_seed(5)
    n_masked = torch.tensor([3, 10, 1, 15, 7, 7])
    spans = torch.tensor([True, True, True, True, False, False])
    sigma, n_prompt = sample_orders(n_masked, 16, "left-to-right", g, spans)
    assert n_prompt.tolist() == (16 - n_masked).tolist()
    for b in range(6):
        masked = (sigma[b] >= n_prompt[b]).nonzero().flatten().tolist()
        contiguous = masked == list(range(masked[0], masked[0] + len(masked)))
        if spans[b]:
            assert contiguous, masked
    # Random-subset rows are not always contiguous (over many draws).
    sig, npr = sample_orders(
        torch.full((64,), 5), 16, "left-to-right", g, torch.zeros(64, dtype=torch.bool)
    )
    runs = [(sig[b] >= npr[b]).nonzero().flatten() for b in range(64)]
    assert any(int(r[-1] - r[0]) > 4 for r in runs)


@pytest.mark.slow
def test_compile_flag_trains_and_evaluates_the_compiled_forward(corpus, tmp_path):
    """--compile: validation runs the compiled training forward (it was wrapped a second time
    and failed on its first evaluation)."""
    pytest.importorskip("accelerate")
    args = [
        "--data", corpus["path"], "--tokenizer", corpus["tok"], "--val-every-doc", "10",
        "--preset", "tiny", "--seq-len", "32", "--batch-size", "4", "--max-steps", "2",
        "--eval-every", "2", "--eval-chunks", "4", "--sample-every", "100", "--no-progress",
        "--precision", "no", "--compile", "--out", str(tmp_path / "c"),
    ]  # fmt: skip
    summary = train_main(args)
    assert summary["steps"] == 2 and math.isfinite(summary["final_val_loss"])
