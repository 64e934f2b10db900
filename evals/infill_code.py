"""Code infilling on HumanEval-infilling: fill the missing span, run the unit tests.

Any benchmark file of the set (single-line, multi-line, random-span, random-span-light: one
format) goes through the same path. The blank gets the true token length of the canonical
solution, decoding is left to right with ASSD (k=10), and pass@1 is the fraction of completed
programs whose tests ran to completion in the sandbox (``evals.sandbox``). Every problem's
canonical solution runs through the same sandbox too: the per-file sanity check (100% expected).

A model that expects a whitespace mapping (the paper's code model, ``assd.whitespace``) gets the
prompt, suffix and solution mapped, and its decoded middle mapped back with its first
character dropped, as the paper's evaluation does.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

import assd
from assd import whitespace
from assd.rng import mix_seed

from .infill_prose import infill_batch
from .sandbox import MEMORY_MB, TIMEOUT, humaneval_job, run_many
from .stats import summary
from .store import Store, shard


def run(
    lm: assd.Loaded,
    problems: list[dict],
    store: Store,
    k: int,
    seed: int,
    batch_size: int = 8,
    timeout: float = TIMEOUT,
    memory_mb: int = MEMORY_MB,
    workers: int = 2,
    rank: int = 0,
    world: int = 1,
) -> list[dict]:
    """Every problem of this process's share not yet in ``store``: infill a batch, then run
    its programs. Batches (and their seeds) are fixed by position in ``problems``, so one
    process or several give the same samples."""
    batches = [problems[i : i + batch_size] for i in range(0, len(problems), batch_size)]
    mine = shard(list(enumerate(batches)), rank, world)
    todo = [[p for p in b if not store.done(p["task_id"])] for _, b in mine]
    bar = tqdm(total=sum(map(len, todo)), desc="humaneval-infilling", unit="task")
    for (j, _), chunk in zip(mine, todo):
        if not chunk:
            continue
        s = mix_seed(seed, j)

        def infill(c, s=s):
            return _infill(lm, c, k, s)

        done = store.run_chunk(chunk, infill, lambda p: p["task_id"])
        jobs = [
            humaneval_job(p, c)
            for p, rec in done
            for c in (rec["completion"], p["canonical_solution"])
        ]
        ran = run_many(jobs, workers=workers, timeout=timeout, memory_mb=memory_mb)
        for (_, rec), res, canon in zip(done, ran[0::2], ran[1::2]):
            extra = {"passed": res.passed, "status": res.status, "stderr": res.stderr[-500:]}
            extra |= {"exec_seconds": res.seconds, "canonical_passed": canon.passed}
            store.add({**rec, **extra, "canonical_status": canon.status})
        bar.update(len(chunk))
    bar.close()
    return store.records()


def _infill(lm: assd.Loaded, chunk: list[dict], k: int, seed: int) -> list[tuple[dict, dict]]:
    g = torch.Generator().manual_seed(seed)
    ws = lm.whitespace
    enc = (lambda t: whitespace.encode(t, ws)) if ws else (lambda t: t)
    parts = [(enc(p["prompt"]), enc(p["canonical_solution"]), enc(p["suffix"])) for p in chunk]
    texts, results, infills = infill_batch(lm, parts, assd.ASSD(k), g)
    if ws:
        texts = [whitespace.decode_middle(t, ws) for t in texts]
    out = []
    for p, t, res, inf in zip(chunk, texts, results, infills):
        rec = {"id": p["task_id"], "benchmark": p.get("benchmark", "HumanEval-infilling")}
        rec |= {"seed": seed, "completion": t, "reference": p["canonical_solution"]}
        rec |= {"n_masked": inf.n_masked, "length": len(inf.ids), "nfe": res.nfe}
        rec |= {"rounds": res.rounds, "tokens_per_call": res.tokens_per_call}
        out.append((p, rec))
    return out


def summarize(records: list[dict]) -> dict:
    """Per benchmark file: pass@1 (x100; one sample per task), statuses, canonical pass, calls."""
    by: dict[str, list[dict]] = {}
    for r in records:
        if "passed" in r:
            by.setdefault(r.get("benchmark", "HumanEval-infilling"), []).append(r)
    return {name: _summary(rows) for name, rows in by.items()}


def _summary(rows: list[dict]) -> dict:
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    n = len(rows)
    return {
        "pass@1": 100.0 * sum(r["passed"] for r in rows) / n,
        "n": n,
        "statuses": statuses,
        "always_equal": statuses.get("always-equal", 0),
        "canonical_pass": 100.0 * sum(bool(r.get("canonical_passed")) for r in rows) / n,
        "exact_match": 100.0 * sum(r["completion"] == r["reference"] for r in rows) / n,
        "nfe": summary([r["nfe"] for r in rows]),
        "n_masked": summary([r["n_masked"] for r in rows]),
        "tokens_per_call": summary([r["tokens_per_call"] for r in rows]),
    }
