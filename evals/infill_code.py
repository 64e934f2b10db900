"""Code infilling on HumanEval-infilling: fill the missing line(s), run the unit tests.

The blank gets the true token length of the canonical solution, decoding is left to right
with ASSD (k=10), and pass@1 is the fraction of completed programs whose tests pass when run
in the sandbox (``evals.sandbox``: one fresh, limited, network-less process per program).
"""

from __future__ import annotations

import traceback

import torch
from tqdm.auto import tqdm

import assd

from .infill_prose import infill_batch
from .sandbox import humaneval_program, run_many
from .stats import summary
from .store import Store


def run(
    lm: assd.Loaded, problems: list[dict], store: Store, k: int, seed: int,
    batch_size: int = 8, timeout: float = 10.0, memory_mb: int = 1024, workers: int = 2,
) -> list[dict]:  # fmt: skip
    """Every problem not yet in ``store``: infill a batch, then execute its programs."""
    todo = [p for p in problems if not store.done(p["task_id"])]
    bar = tqdm(total=len(todo), desc="humaneval-infilling", unit="task")
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        try:
            done = _infill(lm, chunk, k, seed + i)
        except Exception:  # noqa: BLE001 - isolate the bad item(s)
            done = []
            for p in chunk:
                try:
                    done += _infill(lm, [p], k, seed + i)
                except Exception as e:  # noqa: BLE001
                    store.add(
                        {
                            "id": p["task_id"],
                            "error": repr(e),
                            "traceback": traceback.format_exc(limit=5),
                        }
                    )
        # The canonical solution of every problem is run too: the harness check (should be 100%).
        programs = [
            humaneval_program(p, c)
            for p, rec in done
            for c in (rec["completion"], p["canonical_solution"])
        ]
        ran = run_many(programs, workers=workers, timeout=timeout, memory_mb=memory_mb)
        for (_, rec), res, canon in zip(done, ran[0::2], ran[1::2]):
            store.add({**rec, "passed": res.passed, "status": res.status, "stderr": res.stderr[-500:],
                       "exec_seconds": res.seconds, "canonical_passed": canon.passed})  # fmt: skip
        bar.update(len(chunk))
    bar.close()
    return store.records()


def _infill(lm, chunk: list[dict], k: int, seed: int) -> list[tuple[dict, dict]]:
    g = torch.Generator().manual_seed(seed)
    parts = [(p["prompt"], p["canonical_solution"], p["suffix"]) for p in chunk]
    texts, results, infills = infill_batch(lm, parts, assd.ASSD(k), g)
    return [
        (
            p,
            {
                "id": p["task_id"],
                "seed": seed,
                "completion": t,
                "reference": p["canonical_solution"],
                "n_masked": inf.n_masked,
                "length": len(inf.ids),
                "nfe": res.nfe,
                "rounds": res.rounds,
                "tokens_per_call": res.tokens_per_call,
            },
        )  # fmt: skip
        for p, t, res, inf in zip(chunk, texts, results, infills)
    ]


def summarize(records: list[dict]) -> dict:
    """pass@1 (x100; one sample per task), execution statuses, calls."""
    rows = [r for r in records if "passed" in r]
    if not rows:
        return {}
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {
        "pass@1": 100.0 * sum(r["passed"] for r in rows) / len(rows),
        "n": len(rows),
        "statuses": statuses,
        "canonical_pass": 100.0 * sum(bool(r.get("canonical_passed")) for r in rows) / len(rows),
        "exact_match": 100.0 * sum(r["completion"] == r["reference"] for r in rows) / len(rows),
        "nfe": summary([r["nfe"] for r in rows]),
        "n_masked": summary([r["n_masked"] for r in rows]),
        "tokens_per_call": summary([r["tokens_per_call"] for r in rows]),
    }
