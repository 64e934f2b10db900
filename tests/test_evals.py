"""Metric, statistics, sandbox, data and report code of evals/ on tiny fixtures (CPU, fast)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from evals import data, metrics, report, stats
from evals.infill_prose import fit, split_story
from evals.store import Store, shard

PROBLEM = {
    "task_id": "Toy/0/L0",
    "entry_point": "add",
    "prompt": "def add(a, b):\n",
    "canonical_solution": "    return a + b\n",
    "suffix": "",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
}


# -- metrics -------------------------------------------------------------------------------------
def test_rouge_on_fixed_strings():
    same = metrics.rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same["rouge1"] == pytest.approx(100.0) and same["rougeL"] == pytest.approx(100.0)
    assert metrics.rouge(["dogs bark loudly"], ["the cat sat"])["rouge1"] == 0.0
    s = metrics.rouge_scores(["the cat sat on the mat"], ["the cat sat on a mat"])[0]
    assert s["rouge1"] == pytest.approx(100 * 5 / 6)  # 5 of 6 unigrams match both ways
    assert s["rouge2"] == pytest.approx(100 * 3 / 5)  # the cat, cat sat, sat on
    with pytest.raises(ValueError, match="references"):
        metrics.rouge(["a"], [])


def test_unigram_entropy_and_perplexity():
    assert metrics.unigram_entropy([1, 2, 3, 4]) == pytest.approx(2.0)
    assert metrics.unigram_entropy([7, 7, 7]) == 0.0
    assert metrics.unigram_entropy([1, 1, 2, 2]) == pytest.approx(1.0)
    assert metrics.perplexity(-4 * math.log(10), 4) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        metrics.perplexity(0.0, 0)


def test_pass_at_k():
    assert metrics.pass_at_k(1, 1, 1) == 1.0
    assert metrics.pass_at_k(1, 0, 1) == 0.0
    assert metrics.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert metrics.pass_at_k(5, 4, 2) == 1.0
    with pytest.raises(ValueError):
        metrics.pass_at_k(2, 3, 1)


# -- stats ---------------------------------------------------------------------------------------
A = [3.1, 4.7, 2.2, 5.9, 4.4, 3.8, 5.1, 2.9, 4.0, 3.3, 4.9, 3.6]
NOISE = [0.2, -0.1, 0.15, -0.25, 0.05, 0.1, -0.2, 0.3, -0.05, -0.15, 0.1, -0.1]


def test_compare_same_distribution_is_not_rejected():
    p = stats.compare(A, [a + e for a, e in zip(A, NOISE)])
    assert set(stats.TESTS) <= set(p) and p["n"] == len(A)
    assert all(p[t] > 0.2 for t in stats.TESTS), p


def test_compare_shifted_distribution_is_rejected():
    p = stats.compare(A, [a + 3.0 + e for a, e in zip(A, NOISE)])
    assert all(p[t] < 0.01 for t in stats.TESTS), p


def test_compare_degenerate_inputs_give_nan():
    p = stats.compare([1.0, 1.0], [1.0, 1.0])
    assert math.isnan(p["t_test_paired"]) and math.isnan(p["wilcoxon"])
    p = stats.compare([1.0], [2.0])
    assert all(math.isnan(p[t]) for t in stats.TESTS)
    unpaired = stats.compare(A, A[:5])
    assert math.isnan(unpaired["t_test_paired"]) and not math.isnan(unpaired["t_test_ind"])


def test_summary():
    s = stats.summary([1.0, 2.0, 3.0, float("nan"), None])
    assert s["n"] == 3 and s["mean"] == 2.0 and s["sem"] == pytest.approx(1 / math.sqrt(3))
    assert stats.summary([])["n"] == 0


# -- stats: what equality claims rest on --------------------------------------------------------
def test_difference_interval_and_detectable_difference():
    a = [10.0, 12.0, 11.0, 13.0, 9.0]
    b = [11.0, 13.5, 11.5, 14.0, 10.5]  # differences 1, 1.5, 0.5, 1, 1.5: mean 1.1, sd 0.4183
    d = stats.difference(a, b)
    se = 0.41833 / math.sqrt(5)
    assert d["diff"] == pytest.approx(1.1)
    assert d["ci95_low"] == pytest.approx(1.1 - 2.7764 * se, abs=1e-3)  # t(0.975, 4) = 2.7764
    assert d["ci95_high"] == pytest.approx(1.1 + 2.7764 * se, abs=1e-3)
    assert d["detectable"] == pytest.approx((2.7764 + 0.9410) * se, abs=1e-3)  # t(0.8, 4)
    # more data, same spread: a narrower interval and a smaller detectable difference
    big = stats.difference(a * 20, [x + e for x, e in zip(a * 20, NOISE * 9)])
    assert big["detectable"] < d["detectable"] and big["ci95_low"] < 0 < big["ci95_high"]
    assert math.isnan(stats.difference([1.0], [2.0])["diff"])


# -- data, store, infill helpers, report ---------------------------------------------------------
def _lengths(text: str) -> list[int]:
    return [len(w) for w in text.split()]


def test_pack_tokens_cuts_equal_chunks():
    seqs = data.pack_tokens(["a bb ccc", "", "dddd e", "ff ggg hhhh"], _lengths, 3)
    assert seqs == [[1, 2, 3], [4, 1, 2]]  # the partial tail [3, 4] is dropped
    assert data.pack_tokens(["a b c d e f g"], _lengths, 2, n=2) == [[1, 1], [1, 1]]
    with pytest.raises(ValueError):
        data.pack_tokens(["a"], _lengths, 1)


def test_paper_packing_keeps_special_tokens_and_empty_rows():
    from conftest import make_tokenizer

    tok = make_tokenizer()
    with pytest.raises(ValueError, match="end-of-document"):
        data.paper_row_encoder(tok)  # this tokenizer has no eos token
    tok.eos_token = "<eod>"
    eod = tok.convert_tokens_to_ids("<eod>")
    enc = data.paper_row_encoder(tok)
    assert enc("The cat sat.") == list(tok("The cat sat.")["input_ids"]) + [eod]
    assert enc("") == list(tok("")["input_ids"]) + [eod]  # an empty row still adds tokens
    rows = ["The cat sat.", "", " \n", "The dog sat."]
    whole = [t for r in rows for t in enc(r)]  # every row, the empty ones too
    assert data.pack_tokens(rows, enc, len(whole), skip_empty=False) == [whole]
    assert whole.count(eod) == 4
    plain = data.pack_tokens(rows, data.plain_row_encoder(tok), 2)
    assert eod not in [t for s in plain for t in s]


def test_loaders_read_local_files(tmp_path):
    csv_path = tmp_path / "stories.csv"
    csv_path.write_text(
        "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
        "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
        "s1,A.,B.,C.,D.,Wrong.,Right.,2\n"
    )
    (story,) = data.load_rocstories(None, csv_path)
    assert story.sentences == ("A.", "B.", "C.", "D.", "Right.")
    assert split_story(story, "1/5") == ("A. B.", " C.", " D. Right.")
    assert split_story(story, "3/5") == ("A.", " B. C. D.", " Right.")
    he = tmp_path / "he.jsonl.gz"
    with gzip.open(he, "wt") as f:
        f.write(json.dumps(PROBLEM) + "\n")
    assert data.load_humaneval_infilling(None, he) == [{**PROBLEM, "benchmark": "he"}]
    with gzip.open(he, "wt") as f:
        f.write(json.dumps({"task_id": "x", "prompt": ""}) + "\n")
    with pytest.raises(ValueError, match="lacks fields"):
        data.load_humaneval_infilling(None, he)
    with pytest.raises(FileNotFoundError, match="--data"):
        data.load_rocstories(tmp_path / "nowhere")


def write_humaneval(path: Path, prefix: str, n: int) -> None:
    """A small benchmark file in HumanEval-infilling's format (task ids prefixed per file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        for i in range(n):
            f.write(json.dumps({**PROBLEM, "task_id": f"{prefix}/Toy/{i}/L0"}) + "\n")


def test_humaneval_benchmarks_by_name_and_path(tmp_path):
    d = tmp_path / "data"
    root = d / "eval" / "humaneval_infilling"
    write_humaneval(root / "HumanEval-SingleLineInfilling.jsonl.gz", "SingleLineInfilling", 3)
    write_humaneval(root / "HumanEval-MultiLineInfilling.jsonl.gz", "MultiLineInfilling", 2)
    extra = tmp_path / "HumanEval-RandomSpanInfilling.jsonl.gz"
    write_humaneval(extra, "RandomSpanInfilling", 1)
    sets = data.load_humaneval_sets(f"single-line,multi-line,{extra}", d)
    assert [(n, len(p)) for n, p in sets] == [
        ("HumanEval-SingleLineInfilling", 3),
        ("HumanEval-MultiLineInfilling", 2),
        ("HumanEval-RandomSpanInfilling", 1),
    ]
    assert {p["benchmark"] for p in sets[1][1]} == {"HumanEval-MultiLineInfilling"}
    assert [n for n, _ in data.load_humaneval_sets(None, d)] == ["HumanEval-SingleLineInfilling"]
    with pytest.raises(FileNotFoundError, match="HumanEval-infilling file"):
        data.load_humaneval_sets("random-span-light", d)
    with pytest.raises(ValueError, match="also occur"):
        data.load_humaneval_sets("single-line,single-line", d)


def test_store_resumes_and_retries_errors(tmp_path):
    st = Store(tmp_path / "x.jsonl")
    st.add({"id": "a", "v": 1.0})
    st.add({"id": "b", "error": "boom"})
    st.add({"id": "c", "v": float("nan")})
    with open(tmp_path / "x.jsonl", "a") as f:
        f.write('{"id": "d", "v": ')  # a line cut by a crash
    again = Store(tmp_path / "x.jsonl")
    assert again.done("a") and not again.done("b") and again.done("c") and not again.done("d")
    assert [r["id"] for r in again.errors()] == ["b"]
    assert again.records()[1]["v"] is None  # strict JSON: nan -> null


def test_store_records_errors_in_one_place(tmp_path):
    st = Store(tmp_path / "x.jsonl")
    with st.guard("bad", seq=3):
        raise KeyError("missing")
    with st.guard("good"):
        st.add({"id": "good", "v": 1})
    (err,) = st.errors()
    assert err["id"] == "bad" and err["seq"] == 3 and err["error"] == "KeyError('missing')"
    assert "raise KeyError" in err["traceback"] and st.done("good")
    with pytest.raises(KeyboardInterrupt), st.guard("stop"):  # not an Exception: not swallowed
        raise KeyboardInterrupt

    def fn(chunk):
        if 2 in chunk:
            raise ValueError(f"bad item in {chunk}")
        return [x * 10 for x in chunk]

    out = st.run_chunk([1, 2, 3], fn, lambda x: f"item{x}")
    assert out == [10, 30] and [e["id"] for e in st.errors()] == ["bad", "item2"]
    assert st.run_chunk([4, 5], fn, str) == [40, 50]


def test_store_shards_merge_into_one_file(tmp_path):
    f = tmp_path / "spec.jsonl"
    r0, r1 = Store(f, 0, 2), Store(f, 1, 2)
    r0.add({"id": "a", "v": 0})
    r1.add({"id": "b", "error": "boom"})
    r1.add({"id": "c", "v": 2})
    assert not f.exists() and sorted(p.name for p in r0.shards()) == [
        "spec.rank0.jsonl",
        "spec.rank1.jsonl",
    ]
    resumed = Store(f, 0, 3)  # another process count still sees every finished item
    assert resumed.done("a") and resumed.done("c") and not resumed.done("b")
    Store(f, 1, 3).add({"id": "b", "v": 1})  # the retry succeeds elsewhere: it wins
    main = Store(f)
    main.merge()
    assert not main.shards()
    lines = [json.loads(x) for x in f.read_text().splitlines()]
    assert sorted((r["id"], r.get("v")) for r in lines) == [("a", 0), ("b", 1), ("c", 2)]


def test_shard_is_disjoint_and_complete():
    items = list(range(17))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(x for p in parts for x in p) == items
    assert parts[1] == [1, 4, 7, 10, 13, 16]
    assert shard(items, 0, 1) == items


def test_fit_keeps_blank_and_near_context():
    from assd.text import Infill

    inf = Infill(list(range(20)), [False] * 12 + [True] * 3 + [False] * 5)
    out = fit(inf, 10)
    assert len(out.ids) == 10 and out.n_masked == 3
    assert out.ids == list(range(9, 19))  # budget 7: 3 tokens left of the blank, 4 right
    assert fit(inf, 100) is inf
    with pytest.raises(ValueError, match="max length"):
        fit(inf, 2)


SUMM = {
    m: {"mean": 1.0, "sem": 0.1, "std": 0.2, "n": 4}
    for m in ("nfe", "rounds", "tokens_per_call", "acceptance_rate", "seconds", "ppl", "entropy")
}
TESTS = {
    "n": 4,
    "t_test_paired": 0.5,
    "t_test_ind": 0.6,
    "wilcoxon": 0.7,
    "mann_whitney": 0.8,
    "ks": 0.9,
    "diff": 0.25,
    "ci95_low": -1.5,
    "ci95_high": 2.0,
    "detectable": 2.75,
}


def _results(spec_cfg: dict, code_summary: dict, code_cfg: dict) -> dict:
    run = {"run_id": "r", "model": "m", "code_model": "c", "data": "d", "seed": 0}
    run |= {"quick": True, "assd_version": "0", "started": "now"}
    spec = {
        "config": {
            "n_sequences": 4,
            "length": 64,
            "length_note": "n",
            "rate": 0.95,
            "n_visible": 4,
            "k": 5,
            "device": "cpu",
            "evaluator": "self",
            **spec_cfg,
        },
        "summary": {"sequential": SUMM, "assd (k=5)": {**SUMM, "tests": {"ppl": TESTS}}},
    }
    code = {
        "config": {
            "k": 10,
            "model": "c",
            "timeout": 3.0,
            "memory_mb": 1024,
            "isolation_detail": "bubblewrap: ...",
            **code_cfg,
        },
        "summary": code_summary,
    }
    return {"config": run, "spec": spec, "code": code}


def _code_summary(n: int, always_equal: int = 0) -> dict:
    return {
        "pass@1": 50.0,
        "n": n,
        "statuses": {"passed": 1, "failed": 1},
        "exact_match": 0.0,
        "canonical_pass": 100.0,
        "always_equal": always_equal,
        "nfe": SUMM["nfe"],
        "n_masked": SUMM["nfe"],
        "tokens_per_call": SUMM["nfe"],
    }


def test_report_prints_paper_figures_only_beside_the_same_measurement():
    single = "HumanEval-SingleLineInfilling"
    res = _results(
        {"model": "prose", "packing": "rows' tokens"},
        {
            single: _code_summary(2, always_equal=1),
            "HumanEval-MultiLineInfilling": _code_summary(5),
        },
        {"benchmarks": {single: {"n_total": 1033}, "HumanEval-MultiLineInfilling": {"n_total": 5}}},
    )
    md = report.render(res)
    spec_table = md.split("## Speculative decoding")[1].split("Does an exact sampler")[0]
    assert "paper calls" not in spec_table  # another model/length/evaluator: not beside ours
    assert "Not printed beside this run" in spec_table and "107.9" in spec_table
    assert "+0.25 [-1.50, +2.00]" in md and "2.75" in md  # the interval and detectable diff
    rows = {line.split(" | ")[0]: line for line in md.splitlines() if "Infilling |" in line}
    assert (
        "2 of 1033 (subset)" in rows[f"| {single}"]
        and "38.59 (all 1033 problems); this run 2" in rows[f"| {single}"]
    )
    multi = rows["| HumanEval-MultiLineInfilling"]
    assert "5 of 5 |" in multi and "38.59" not in multi and "(subset)" not in multi
    assert "always-equal: 1 completion(s)" in md and "reduced isolation" not in md.lower()
    assert "3 s per program" in md and "Model `c`" in md

    comparable = _results(
        {
            "model": "therealgabeguo/ASARM",
            "paper_model": True,
            "length": 512,
            "packing": "the paper's: ...",
            "evaluator": "gpt2-large",
        },
        {},
        {"isolation_reduced": True, "isolation_detail": "bwrap missing"},
    )
    md = report.render(comparable)
    assert "paper calls (110M)" in md and "| 486.0 | 107.9 | 7.65 |" in md
    assert md.count("WARNING") == 2 and "bwrap missing" in md


def test_forbid_only_mask_lets_special_tokens_be_generated_and_scored(tiny_model_dir):
    import torch

    import assd
    from evals.evaluator import SelfEvaluator
    from evals.spec_decoding import forbid_only_mask

    lm = assd.load(tiny_model_dir, backend="reference", device="cpu")
    paper = forbid_only_mask(lm)
    mask = lm.tokenizer.mask_token_id
    cls = lm.tokenizer.cls_token_id
    assert paper.model.forbidden_ids == (mask,) and cls in lm.model.forbidden_ids
    assert paper.model.vocab_size == lm.model.vocab_size and paper.tokenizer is lm.tokenizer
    # a packed sequence with special tokens in it (the paper's packing) scores finitely only
    # when they are not forbidden
    ids = lm.tokenizer("The cat sat on the mat.")["input_ids"]
    seq = ids + [cls] + ids
    assert math.isfinite(SelfEvaluator(paper)(seq, "").ppl)
    assert not math.isfinite(SelfEvaluator(lm)(seq, "").ppl)
    # sampling through the wrapper: any token but <mask> may come out
    batch = assd.make_batch(torch.tensor([seq]), torch.arange(len(seq))[None], 2)
    g = torch.Generator().manual_seed(0)
    out = assd.sample(paper.model, batch, assd.ASSD(4), generator=g)[0]
    assert mask not in out.tokens[2:] and len(out.tokens) == len(seq)


def test_speed_model_inverts_the_round_model():
    """evals/speed_model.py: implied acceptance inverts tokens per round; targets beyond a
    round's ceiling (every proposal accepted) are unreachable; a measured row is decomposed."""
    from evals.speed_model import acceptance_for, rows_of, tokens_per_round

    assert tokens_per_round(0.0, 3) == 1.0 and tokens_per_round(1.0, 3) == 4.0
    assert tokens_per_round(0.5, 2) == pytest.approx(1.75)
    for a in (0.1, 0.55, 0.9):
        assert acceptance_for(tokens_per_round(a, 4), 4) == pytest.approx(a, abs=1e-9)
    assert acceptance_for(3.5, 2) is None  # more than k + 1 tokens a round
    row = dict(L=256, B=1, model="m", calls_per_seq=100.0, rounds_per_batch=100)
    bench = {
        "end_to_end": [
            row
            | dict(method="c", label="engine + Sequential", per_seq_s=1.0, ms_per_round=1.0)
            | dict(tokens_per_call=1.0, calls_per_seq=175.0, rounds_per_batch=175),
            row
            | dict(method="h2", label="engine + ASSD(k=2, draft head)", per_seq_s=0.8)
            | dict(ms_per_round=1.4, tokens_per_call=1.75),
        ]
    }
    (r,) = rows_of(bench)
    assert r["tokens_per_round"] == pytest.approx(1.75) and r["acceptance"] == pytest.approx(0.5)
    assert r["round_cost"] == pytest.approx(1.4) and r["ceiling"] == pytest.approx(3 / 1.4)
    assert r["needed_1.2"] == pytest.approx(acceptance_for(1.2 * 1.4, 2))
    assert r["needed_1.5"] == pytest.approx(acceptance_for(2.1, 2))


def test_draft_confidence_bins_acceptance_by_the_drafters_probability():
    """evals/draft_confidence.py: min(1, p/q) of every verified proposal, binned by q(x)."""
    from types import SimpleNamespace

    from evals.draft_confidence import proposal_stats, summarise

    t1 = SimpleNamespace(drafted=[4, 5], p_draft=[0.9, 0.2, 0.7], p_oracle=[0.45, 0.4, 0.1])
    t2 = SimpleNamespace(drafted=[6], p_draft=[0.5], p_oracle=[0.1])
    pairs = proposal_stats([SimpleNamespace(trace=[t1, t2])])
    assert pairs == [(0.9, 0.5), (0.2, 1.0), (0.5, 0.2)]  # undrafted slots are not counted
    rows = {r["q_at_least"]: r for r in summarise(pairs)}
    assert rows[0.0]["n"] == 3 and abs(rows[0.0]["acceptance"] - 1.7 / 3) < 1e-12
    assert rows[0.5]["n"] == 2 and abs(rows[0.5]["acceptance"] - 0.35) < 1e-12
    assert rows[0.8]["n"] == 1 and rows[0.8]["acceptance"] == 0.5
    assert rows[0.95]["n"] == 0 and rows[0.95]["acceptance"] is None
