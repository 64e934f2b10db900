"""``python evals/run_all.py --quick`` end to end on the tiny model and a tiny data folder, in
one process and sharded over two (``accelerate launch``)."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evals import sandbox

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The cat sat on the mat. Once upon a time there was a little fox who lived in the forest. "
BENCHMARKS = {"SingleLineInfilling": 2, "MultiLineInfilling": 3}


def _problem(bench: str, i: int) -> dict:
    return {
        "task_id": f"{bench}/Toy/{i}/L0",
        "entry_point": "add",
        "prompt": "def add(a, b):\n",
        "canonical_solution": "    return a + b\n",
        "suffix": "",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    }


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory) -> Path:
    """The shared-data layout with a few items of each eval (one story too long for the model)
    and two HumanEval-infilling files of the same format."""
    d = tmp_path_factory.mktemp("data")
    wt = d / "eval" / "wikitext2"
    wt.mkdir(parents=True)
    with gzip.open(wt / "test.hf_rows.jsonl.gz", "wt") as f:
        for i in range(40):
            f.write(json.dumps({"text": "" if i % 3 == 0 else TEXT}) + "\n")
    rs = d / "eval" / "rocstories"
    rs.mkdir(parents=True)
    with open(rs / "cloze_test_val__spring2016.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["InputStoryid", *(f"InputSentence{i}" for i in range(1, 5)),
             "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding"]
        )  # fmt: skip
        w.writerow(["s0", "The cat sat.", "The dog sat.", "It was the best of times.",
                    "The fox ran.", "It ended.", "Bad end.", "1"])  # fmt: skip
        w.writerow(["s1", "A fox.", "A log.", "A mat.", "A cat.", "Bad.", "Good.", "2"])
        w.writerow(["s2", "Once upon a time.", "It was the worst of times. " * 20, "A.", "B.",
                    "C.", "D.", "1"])  # fmt: skip
    he = d / "eval" / "humaneval_infilling"
    he.mkdir(parents=True)
    for bench, n in BENCHMARKS.items():
        with gzip.open(he / f"HumanEval-{bench}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(_problem(bench, i)) + "\n" for i in range(n))
    return d


def _cmd(model: str, data: Path, out: Path, run_id: str, *extra: str) -> list[str]:
    return [
        "evals/run_all.py", "--model", model, "--data", str(data), "--quick",
        "--ablations", "k_length,r_atol", "--humaneval", "single-line,multi-line",
        "--out", str(out), "--run-id", run_id, "--threads", "1", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_quick_end_to_end(tiny_model_dir, mini_data, tmp_path):
    cmd = [sys.executable, *_cmd(tiny_model_dir, mini_data, tmp_path, "q")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "q"
    for name in (
        "config.json",
        "results.json",
        "report.md",
        "spec.jsonl",
        "prose.jsonl",
        "code.jsonl",
        "calls_histogram.png",
        "quality_vs_calls.png",
        "acceptance_per_round.png",
        "ablation_k_length.png",
        "ablation_r_atol.png",
    ):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    spec = res["spec"]["summary"]
    assert {
        "sequential",
        "assd (k=5)",
        "assd-ngram (k=5)",
        "assd-bonus (k=5)",
        "assd-one-call (k=5)",
        "mean-field (k=2)",
    } <= set(spec)
    assert res["spec"]["config"]["length"] == 64  # min(512, tiny max length)
    assert res["spec"]["config"]["n_sequences"] == 2
    assert res["spec"]["config"]["packing"].startswith("rows' tokens without special tokens")
    assert spec["sequential"]["nfe"]["mean"] == 64 - res["spec"]["config"]["n_visible"]
    assert spec["assd (k=5)"]["nfe"]["mean"] < spec["sequential"]["nfe"]["mean"]
    ppl = spec["assd (k=5)"]["tests"]["ppl"]
    assert ppl["ci95_low"] <= ppl["diff"] <= ppl["ci95_high"] and ppl["detectable"] > 0
    recs = [json.loads(line) for line in (out / "spec.jsonl").read_text().splitlines()]
    assert all(len(r["tokens"]) == 64 and r["text"] for r in recs)
    # s2's middle three sentences are longer than the model: that item fails alone, is recorded
    # and the others are scored (its 1/5 item fits once the long prefix is cut)
    prose = res["prose"]["summary"]
    assert prose["1/5"]["n"] == 3 and prose["3/5"]["n"] == 2
    assert 0 <= prose["1/5"]["rouge1"] <= 100
    assert [e["id"] for e in res["errors"]["prose"]] == ["3/5/s2"]
    code = res["code"]["summary"]
    assert {b: code[f"HumanEval-{b}"]["n"] for b in BENCHMARKS} == BENCHMARKS
    for m in code.values():  # the harness passes every canonical solution, file by file
        assert m["canonical_pass"] == 100.0 and set(m["statuses"]) <= set(sandbox.STATUSES)
    assert res["code"]["config"]["timeout"] == 3.0
    assert res["code"]["config"]["isolation_reduced"] == sandbox.isolation().reduced
    assert res["ablations"]["k_by_length"]
    assert set(res["ablations"]["r_atol"]) == {"0.0", "0.1"}
    md = (out / "report.md").read_text()
    assert "Not printed beside this run" in md and "paper calls" not in md
    assert "38.59 (all 1033 problems); this run 2: not comparable" in md
    assert "| HumanEval-MultiLineInfilling | 3 of 3 |" in md and "## Errors" in md
    assert "3 s per program" in md and "u < min(1, p/q + r)" in md

    # resuming skips every finished item: no line is added to the sample files
    sizes = {p.name: p.stat().st_size for p in out.glob("*.jsonl")}
    sys.path.insert(0, str(ROOT))
    from evals.run_all import main

    main(_cmd(tiny_model_dir, mini_data, tmp_path, "q", "--evals", "spec,code")[1:])
    assert {p.name: p.stat().st_size for p in out.glob("*.jsonl")} == sizes


def test_changed_settings_need_a_new_run_id(tiny_model_dir, mini_data, tmp_path):
    sys.path.insert(0, str(ROOT))
    from evals.run_all import main

    base = ["--model", tiny_model_dir, "--data", str(mini_data), "--quick", "--out",
            str(tmp_path), "--run-id", "r", "--evals", "code"]  # fmt: skip
    assert main(base) == 0
    with pytest.raises(SystemExit, match="other settings"):
        main([*base, "--seed", "1"])
    with pytest.raises(SystemExit, match="timeout"):
        main([*base, "--timeout", "10"])


def _records(run: Path) -> dict[str, dict[str, dict]]:
    """{file: {id: record without timings}} of a run's sample files."""
    out = {}
    for f in sorted(run.glob("*.jsonl")):
        recs = [json.loads(line) for line in f.read_text().splitlines()]
        skip = ("seconds", "exec_seconds")
        out[f.name] = {r["id"]: {k: v for k, v in r.items() if k not in skip} for r in recs}
        assert len(out[f.name]) == len(recs), f"{f.name}: duplicated ids"
    return out


@pytest.mark.slow
def test_two_processes_shard_and_merge_to_the_single_process_result(
    tiny_model_dir, mini_data, tmp_path
):
    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate is not installed (the train extra)")
    extra = ("--batch-size", "2")  # several infilling batches, so both processes get some
    one = [sys.executable, *_cmd(tiny_model_dir, mini_data, tmp_path, "one", *extra)]
    proc = subprocess.run(one, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # on a machine without GPUs --multi_gpu starts CPU processes that talk through gloo
    two = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
           *_cmd(tiny_model_dir, mini_data, tmp_path, "two", *extra)]  # fmt: skip
    proc = subprocess.run(two, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(2 process(es))" in proc.stdout
    a, b = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert (
        set(a)
        == set(b)
        == {
            "spec.jsonl",
            "prose.jsonl",
            "code.jsonl",
            "ablation_k_length.jsonl",
            "ablation_r_atol.jsonl",
        }
    )
    for name in a:
        assert set(a[name]) == set(b[name]), name  # no item skipped or duplicated
        assert a[name] == b[name], name  # the same samples, whichever process drew them
    assert not list((tmp_path / "two").glob("*.rank*.jsonl"))  # shards merged away
    res = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res["config"]["processes"] == 2 and res["code"]["summary"]


def test_missing_eval_dependency_stops_before_any_model_loads(monkeypatch):
    """A machine without rouge-score (or with it but not its own dependencies) must stop at
    once with the fix, not fail every story."""
    import importlib

    from evals import run_all

    pytest.importorskip("rouge_score.rouge_scorer")
    run_all.check_requirements(["spec", "prose", "code"])  # all there: passes
    real = importlib.import_module

    def no_nltk(name, *a):
        if name == "rouge_score.rouge_scorer":
            raise ModuleNotFoundError("No module named 'nltk'")
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", no_nltk)
    with pytest.raises(
        SystemExit, match=r"rouge-score \(for --evals prose: No module named 'nltk'\).*pip install"
    ):
        run_all.main(["--evals", "spec,prose", "--model", "/nonexistent-model-dir"])
    run_all.check_requirements(["spec", "code"])  # these need nothing beyond the library
