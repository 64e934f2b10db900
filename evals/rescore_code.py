"""Re-run stored HumanEval-infilling completions in this machine's sandbox.

    python evals/rescore_code.py evals/results/base_v2/code.jsonl --humaneval FILE [--workers 2]

A model too large to bring back from a GPU machine is evaluated there, where the sandbox may run
with reduced isolation (no bubblewrap). Its ``code.jsonl`` (one record per task, with the
completion) comes back; this script runs every completion and canonical solution again here,
under ``evals.sandbox`` (bubblewrap where installed), and rewrites the records' verdicts
(``passed``, ``status``, ``stderr``, ``canonical_passed``) and the summary (pass@1) from them.
Writes ``<file>.rescored.jsonl`` and prints the summary with the isolation level used.
"""

from __future__ import annotations

# ruff: noqa: E402  (the imports below follow the sys.path line that lets this run as a script)
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json

from tqdm.auto import tqdm

from evals import sandbox
from evals.data import load_humaneval_infilling
from evals.infill_code import summarize


def rescore(records: list[dict], problems: dict[str, dict], workers: int, timeout: float):
    """Records with verdicts from this machine's sandbox (same fields as ``infill_code.run``)."""
    missing = [r["id"] for r in records if r["id"] not in problems]
    if missing:
        raise ValueError(f"{len(missing)} records name tasks not in --humaneval: {missing[:3]}")
    out = []
    step = 32
    for i in tqdm(range(0, len(records), step), desc="rescore", unit="batch"):
        chunk = records[i : i + step]
        jobs = [
            sandbox.humaneval_job(problems[r["id"]], c)
            for r in chunk
            for c in (r["completion"], problems[r["id"]]["canonical_solution"])
        ]
        ran = sandbox.run_many(jobs, workers=workers, timeout=timeout)
        for r, res, canon in zip(chunk, ran[0::2], ran[1::2]):
            new = {**r, "passed": res.passed, "status": res.status, "stderr": res.stderr[-500:]}
            new |= {"exec_seconds": res.seconds, "canonical_passed": canon.passed}
            out.append(new | {"canonical_status": canon.status})
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("records", help="code.jsonl of an evals/run_all.py run")
    p.add_argument("--humaneval", required=True, help="the HumanEval-infilling .jsonl(.gz) file")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=sandbox.TIMEOUT)
    a = p.parse_args(argv)
    path = Path(a.records)
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if not records:
        raise SystemExit(f"{path} holds no records")
    problems = {q["task_id"]: q for q in load_humaneval_infilling(None, a.humaneval)}
    iso = sandbox.isolation()
    new = rescore(records, problems, a.workers, a.timeout)
    dest = path.with_suffix(".rescored.jsonl")
    dest.write_text("".join(json.dumps(r) + "\n" for r in new))
    summary = {"isolation": iso.level, "isolation_detail": iso.detail, **summarize(new)}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
