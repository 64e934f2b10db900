"""Metric, statistics, sandbox, data and report code of evals/ on tiny fixtures (CPU, fast)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from evals import data, metrics, report, stats
from evals.infill_prose import fit, split_story
from evals.sandbox import humaneval_program, run_many, run_program
from evals.store import Store

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


# -- sandbox -------------------------------------------------------------------------------------
def test_sandbox_known_completion_passes_wrong_fails():
    good = run_program(humaneval_program(PROBLEM, PROBLEM["canonical_solution"]), timeout=5)
    bad = run_program(humaneval_program(PROBLEM, "    return a - b\n"), timeout=5)
    syntax = run_program(humaneval_program(PROBLEM, "    return a +\n"), timeout=5)
    assert good.passed and good.status == "passed"
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.stderr
    assert not syntax.passed and "SyntaxError" in syntax.stderr


def test_sandbox_stops_infinite_loop():
    r = run_program("while True:\n    pass\n", timeout=1.0)
    assert r.status == "timeout" and not r.passed
    assert r.seconds < 10


def test_sandbox_stops_memory_hog():
    r = run_program("x = bytearray(2 * 1024 ** 3)\nprint(len(x))\n", timeout=5, memory_mb=256)
    assert r.status == "memory" and not r.passed


def test_sandbox_has_no_network_and_own_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = run_program(
        "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n", timeout=5
    )
    assert not net.passed
    r = run_program(
        "open('marker.txt', 'w').write('x')\nimport os\nprint(os.getcwd())\n", timeout=5
    )
    assert r.passed and not (tmp_path / "marker.txt").exists()
    env = run_program(
        "import os, sys\nassert 'HTTP_PROXY' not in os.environ\nassert sys.flags.isolated\n"
    )
    assert env.passed, env.stderr


def test_sandbox_network_namespace_blocks_raw_sockets():
    from evals.sandbox import unshare_prefix

    if not unshare_prefix():
        pytest.skip(
            "no unprivileged network namespace here (sockets are disabled by the prelude only)"
        )
    prog = "import _socket\ns = _socket.socket()\ns.settimeout(3)\ns.connect(('1.1.1.1', 80))\n"
    r = run_program(prog, timeout=10)
    assert not r.passed and "OSError" in r.stderr  # unreachable: the namespace has no interfaces


def test_run_many_keeps_order():
    progs = ["import sys; sys.exit(0)", "import sys; sys.exit(3)", "pass"]
    assert [r.passed for r in run_many(progs, workers=2, timeout=5)] == [True, False, True]


def test_real_humaneval_canonical_solution_passes():
    f = Path(__file__).resolve().parents[2] / "shared" / "data" / data.HUMANEVAL_SINGLE_LINE
    if not f.exists():
        pytest.skip("shared data not available")
    probs = data.load_humaneval_infilling(None, f)[:2]
    res = run_many([humaneval_program(p, p["canonical_solution"]) for p in probs], timeout=10)
    assert all(r.passed for r in res), [r.stderr for r in res]
    assert not run_program(humaneval_program(probs[0], "    pass\n"), timeout=10).passed


# -- data, store, infill helpers, report ---------------------------------------------------------
def test_pack_tokens_cuts_equal_chunks():
    enc = lambda t: [len(w) for w in t.split()]  # noqa: E731
    seqs = data.pack_tokens(["a bb ccc", "", "dddd e", "ff ggg hhhh"], enc, 3)
    assert seqs == [[1, 2, 3], [4, 1, 2]]  # the partial tail [3, 4] is dropped
    assert data.pack_tokens(["a b c d e f g"], enc, 2, n=2) == [[1, 1], [1, 1]]
    with pytest.raises(ValueError):
        data.pack_tokens(["a"], enc, 1)


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
    assert data.load_humaneval_infilling(None, he) == [PROBLEM]
    with gzip.open(he, "wt") as f:
        f.write(json.dumps({"task_id": "x", "prompt": ""}) + "\n")
    with pytest.raises(ValueError, match="lacks fields"):
        data.load_humaneval_infilling(None, he)
    with pytest.raises(FileNotFoundError, match="--data"):
        data.load_rocstories(tmp_path / "nowhere")


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


def test_fit_keeps_blank_and_near_context():
    from assd.text import Infill

    inf = Infill(list(range(20)), [False] * 12 + [True] * 3 + [False] * 5)
    out = fit(inf, 10)
    assert len(out.ids) == 10 and out.n_masked == 3
    assert out.ids == list(range(9, 19))  # budget 7: 3 tokens left of the blank, 4 right
    assert fit(inf, 100) is inf
    with pytest.raises(ValueError, match="max length"):
        fit(inf, 2)


def test_report_prints_paper_numbers_beside_ours():
    summ = {m: {"mean": 1.0, "sem": 0.1, "std": 0.2, "n": 4} for m in
            ("nfe", "rounds", "tokens_per_call", "acceptance_rate", "seconds", "ppl", "entropy")}  # fmt: skip
    res = {
        "config": {
            "run_id": "r",
            "model": "m",
            "code_model": "c",
            "data": "d",
            "seed": 0,
            "quick": True,
            "assd_version": "0",
            "started": "now",
        },  # fmt: skip
        "spec": {
            "config": {
                "n_sequences": 4,
                "length": 64,
                "length_note": "n",
                "rate": 0.95,
                "n_visible": 4,
                "k": 5,
                "device": "cpu",
                "evaluator": "self",
            },  # fmt: skip
            "summary": {
                "sequential": summ,
                "assd (k=5)": {
                    **summ,
                    "tests": {
                        "ppl": {
                            "n": 4,
                            "t_test_paired": 0.5,
                            "t_test_ind": 0.6,
                            "wilcoxon": 0.7,
                            "mann_whitney": 0.8,
                        }
                    },
                },
            },
        },  # fmt: skip
        "code": {
            "config": {"benchmark": "b", "k": 10, "sandbox": "s"},
            "summary": {
                "pass@1": 50.0,
                "n": 2,
                "statuses": {"passed": 1, "failed": 1},
                "exact_match": 0.0,
                "nfe": summ["nfe"],
                "n_masked": summ["nfe"],
                "tokens_per_call": summ["nfe"],
            },
        },  # fmt: skip
    }
    md = report.render(res)
    assert "| sequential |" in md and "486.0" in md and "107.9" in md and "434.1" in md
    assert "38.59" in md and "50.00" in md and "0.5" in md
