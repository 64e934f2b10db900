"""``python evals/run_all.py --quick`` end to end on the tiny model and a tiny data folder."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The cat sat on the mat. Once upon a time there was a little fox who lived in the forest. "


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory) -> Path:
    """The shared-data layout with a few items of each eval (one story too long for the model)."""
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
        w.writerow(["InputStoryid", *(f"InputSentence{i}" for i in range(1, 5)),
                    "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding"])  # fmt: skip
        w.writerow(["s0", "The cat sat.", "The dog sat.", "It was the best of times.", "The fox ran.",
                    "It ended.", "Bad end.", "1"])  # fmt: skip
        w.writerow(["s1", "A fox.", "A log.", "A mat.", "A cat.", "Bad.", "Good.", "2"])
        w.writerow(
            [
                "s2",
                "Once upon a time.",
                "It was the worst of times. " * 20,
                "A.",
                "B.",
                "C.",
                "D.",
                "1",
            ]
        )
    he = d / "eval" / "humaneval_infilling"
    he.mkdir(parents=True)
    probs = [
        {
            "task_id": f"Toy/{i}/L0",
            "entry_point": "add",
            "prompt": "def add(a, b):\n",
            "canonical_solution": "    return a + b\n",
            "suffix": "",
            "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
        }  # fmt: skip
        for i in range(2)
    ]
    with gzip.open(he / "HumanEval-SingleLineInfilling.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(p) + "\n" for p in probs)
    return d


def test_quick_end_to_end(tiny_model_dir, mini_data, tmp_path):
    cmd = [sys.executable, "evals/run_all.py", "--model", tiny_model_dir, "--data", str(mini_data), "--quick",
           "--ablations", "k_length,r_atol", "--out", str(tmp_path), "--run-id", "q", "--threads", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "q"
    for name in ("config.json", "results.json", "report.md", "spec.jsonl", "prose.jsonl", "code.jsonl",
                 "calls_histogram.png", "quality_vs_calls.png", "acceptance_per_round.png",
                 "ablation_k_length.png", "ablation_r_atol.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    spec = res["spec"]["summary"]
    assert {"sequential", "assd (k=5)", "assd-ngram (k=5)", "assd-bonus (k=5)", "assd-one-call (k=5)",
            "mean-field (k=2)"} <= set(spec)  # fmt: skip
    assert res["spec"]["config"]["length"] == 64  # min(512, tiny max length)
    assert spec["sequential"]["nfe"]["mean"] == 64 - res["spec"]["config"]["n_visible"]
    assert spec["assd (k=5)"]["nfe"]["mean"] < spec["sequential"]["nfe"]["mean"]
    assert spec["assd (k=5)"]["ppl"]["mean"] > 1 and "ppl" in spec["assd (k=5)"]["tests"]
    recs = [json.loads(line) for line in (out / "spec.jsonl").read_text().splitlines()]
    assert all(len(r["tokens"]) == 64 and r["text"] for r in recs)
    # s2's middle three sentences are longer than the model: that item fails alone, is recorded
    # and the others are scored (its 1/5 item fits once the long prefix is cut)
    prose = res["prose"]["summary"]
    assert prose["1/5"]["n"] == 3 and prose["3/5"]["n"] == 2 and 0 <= prose["1/5"]["rouge1"] <= 100
    assert [e["id"] for e in res["errors"]["prose"]] == ["3/5/s2"]
    code = res["code"]["summary"]
    assert code["n"] == 2 and set(code["statuses"]) <= {"passed", "failed", "timeout", "memory"}
    assert code["canonical_pass"] == 100.0  # the harness itself passes the reference solutions
    assert res["ablations"]["k_by_length"] and set(res["ablations"]["r_atol"]) == {"0.0", "0.2"}
    md = (out / "report.md").read_text()
    assert "paper calls" in md and "486.0" in md and "38.59" in md and "## Errors" in md

    # resuming skips every finished item: no line is added to the sample files
    sizes = {p.name: p.stat().st_size for p in out.glob("*.jsonl")}
    sys.path.insert(0, str(ROOT))
    from evals.run_all import main

    main(["--model", tiny_model_dir, "--data", str(mini_data), "--quick", "--ablations", "k_length,r_atol",
          "--out", str(tmp_path), "--run-id", "q", "--evals", "spec,code"])  # fmt: skip
    assert {p.name: p.stat().st_size for p in out.glob("*.jsonl")} == sizes


def test_changed_settings_need_a_new_run_id(tiny_model_dir, mini_data, tmp_path):
    sys.path.insert(0, str(ROOT))
    from evals.run_all import main

    base = ["--model", tiny_model_dir, "--data", str(mini_data), "--quick", "--out", str(tmp_path),
            "--run-id", "r", "--evals", "code"]  # fmt: skip
    assert main(base) == 0
    with pytest.raises(SystemExit, match="other settings"):
        main([*base, "--seed", "1"])
