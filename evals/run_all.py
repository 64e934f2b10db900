"""Run every evaluation of the paper on one model and write a report.

    python evals/run_all.py --model prose --quick                      # offline, embedded models
    python evals/run_all.py --model therealgabeguo/ASARM --revision nlp --online
    accelerate launch --num_processes 4 evals/run_all.py ...           # items sharded over GPUs

Writes ``results/<run-id>/``: config.json, one resumable JSONL per eval (every sample),
results.json (every summary figure), report.md (tables, paper numbers beside ours) and plots.
Re-running with the same ``--run-id`` skips finished items.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import functools
import json
import subprocess
import time
import traceback

import assd
from assd import whitespace
from evals import (
    ablations,
    data,
    distributed,
    infill_code,
    infill_prose,
    plots,
    report,
    sandbox,
    spec_decoding,
)
from evals.evaluator import make_evaluator
from evals.store import Store, json_safe, write_atomic

EVALS = ("spec", "prose", "code")
ABLATIONS = ("k_length", "r_atol")
PACKINGS = ("auto", "paper", "plain")
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
PAPER_N_SEQS = 640  # Table 1 of the paper: WikiText-2 test, 640 sequences of 512 tokens
CPU_N_SEQS = 24  # the declared CPU subset when --n-seqs is not given
PAPER_R_ATOLS = (0.0, 1e-4, 1e-3, 1e-2, 5e-2, 1e-1)  # the paper's r_atol ablation
# Settings whose change makes earlier results of a run id incomparable.
IDENTITY = (
    "model",
    "revision",
    "code_model",
    "code_revision",
    "seed",
    "length",
    "rate",
    "k",
    "infill_k",
    "evaluator_choice",
    "data",
    "humaneval",
    "packing",
    "timeout",
    "memory_mb",
)


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(",") if x.strip())


def _names(allowed: tuple[str, ...]):
    def parse(s: str) -> tuple[str, ...]:
        out = tuple(x.strip() for x in s.split(",") if x.strip())
        bad = [x for x in out if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}: choose from {','.join(allowed)}")
        return out

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    a = p.add_argument
    a("--model", default="prose", help="embedded name, local directory or Hub id (prose evals)")
    a("--revision", default=None, help="Hub revision of --model (e.g. nlp)")
    a("--code-model", default=None, help="code model (default: 'code' for prose, else --model)")
    a("--code-revision", default=None, help="its revision (default: 'code' when --revision nlp)")
    a("--data", default=None, help=f"shared data folder (default {DEFAULT_DATA} when it exists)")
    a("--online", action="store_true", help="read data sets (and GPT-2 Large) from the Hub")
    a("--evals", type=_names(EVALS), default=EVALS, help="comma list of " + ",".join(EVALS))
    a("--ablations", type=_names(ABLATIONS), default=(), help="comma list of k_length,r_atol")
    a("--quick", action="store_true", help="a handful of items per eval (CI)")
    a(
        "--n-seqs",
        type=int,
        default=None,
        help=f"WikiText-2 sequences (default: the paper's {PAPER_N_SEQS} where a GPU is "
        f"present, a declared subset of {CPU_N_SEQS} on CPU)",
    )
    a("--n-stories", type=int, default=None, help="ROCStories stories (default all)")
    a("--n-code", type=int, default=None, help="first N problems of each HumanEval file")
    a("--length", type=int, default=512, help="sequence length (capped at the model's max)")
    a("--rate", type=float, default=0.95, help="masking rate of the Table-1 sequences")
    a(
        "--packing",
        choices=PACKINGS,
        default="auto",
        help="WikiText rows: paper (special tokens + end-of-document token, empty rows kept), "
        "plain (tokens only, empty rows skipped: the embedded models); auto: paper for "
        f"{whitespace.PAPER_HUB_ID}, else plain",
    )
    a("--k", type=int, default=5, help="ASSD proposals per round (Table 1)")
    a("--infill-k", type=int, default=10, help="ASSD proposals per round (infilling)")
    a("--mean-field-ks", type=_ints, default=(2, 4, 8), help="MeanField tokens per call")
    a("--ablation-n-seqs", type=int, default=8, help="WikiText-2 sequences per ablation cell")
    a("--ablation-ks", type=_ints, default=(1, 2, 5, 10, 15))
    a("--ablation-lengths", type=_ints, default=None, help="default L/4, L/2, L")
    a("--r-atols", type=_floats, default=PAPER_R_ATOLS, help="default: the paper's values")
    a(
        "--evaluator",
        default="auto",
        help="auto (gpt2-large if available, else self), self, or an id",
    )
    a(
        "--humaneval",
        default=None,
        help="comma list of HumanEval-infilling benchmarks (single-line, multi-line, "
        "random-span, random-span-light) and/or .jsonl(.gz) paths (default: single-line)",
    )
    a("--rocstories", default=None, help="ROCStories cloze CSV (default: under --data)")
    a("--seed", type=int, default=0)
    a("--device", default=None, help="default: this process's accelerator, else the CPU")
    a("--threads", type=int, default=None, help="torch CPU threads (1: stable CPU timings)")
    a("--backend", default="auto", choices=("auto", "engine", "reference"))
    a("--batch-size", type=int, default=8, help="infilling batch size")
    a(
        "--timeout",
        type=float,
        default=sandbox.TIMEOUT,
        help=f"sandbox seconds per program (default {sandbox.TIMEOUT:g}: the reference harness's)",
    )
    a("--memory-mb", type=int, default=sandbox.MEMORY_MB, help="sandbox address-space limit")
    a("--workers", type=int, default=2, help="sandbox processes in parallel (per process)")
    a("--out", default="results")
    a("--run-id", default=None, help="default: <model>-<date>; reuse one to resume")
    args = p.parse_args(argv)
    if args.quick:
        args.n_seqs = min(args.n_seqs or 2, 2)
        args.ablation_n_seqs = min(args.ablation_n_seqs, 2)
        args.n_stories = min(args.n_stories or 3, 3)
        args.n_code = min(args.n_code or 3, 3)
        args.mean_field_ks = args.mean_field_ks[:1]
        args.ablation_ks = (2, 5)
        args.r_atols = (0.0, 0.1)
    for name in ("length", "k", "infill_k", "batch_size", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("n_seqs", "n_stories", "n_code"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.timeout > 0:
        p.error("--timeout must be > 0 seconds")
    return args


def _git() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        cmd = ["git", "rev-parse", "--short", "HEAD"]
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _code_model(args) -> tuple[str, str | None]:
    if args.code_model is not None:
        return args.code_model, args.code_revision
    if args.model == "prose":
        return "code", None
    rev = args.code_revision or ("code" if args.revision == "nlp" else args.revision)
    return args.model, rev


def _machine() -> dict:
    import os
    import platform

    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def make_config(args, dist: distributed.Dist) -> dict:
    data_dir = None if args.online else str(Path(args.data) if args.data else DEFAULT_DATA)
    code_model, code_rev = _code_model(args)
    run_id = args.run_id or f"{Path(args.model).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    if dist.world > 1:  # every process uses the main process's run id and start time
        from accelerate.utils import broadcast_object_list

        run_id, started = broadcast_object_list([run_id, started], from_process=0)
    return {
        "run_id": run_id,
        "model": args.model,
        "revision": args.revision,
        "code_model": code_model,
        "code_revision": code_rev,
        "data": data_dir or "Hugging Face Hub",
        "data_dir": data_dir,
        "online": args.online,
        "evals": list(args.evals),
        "ablations": list(args.ablations),
        "quick": args.quick,
        "seed": args.seed,
        "length": args.length,
        "rate": args.rate,
        "k": args.k,
        "infill_k": args.infill_k,
        "n_seqs": args.n_seqs,
        "packing": args.packing,
        "ablation_n_seqs": args.ablation_n_seqs,
        "n_stories": args.n_stories,
        "n_code": args.n_code,
        "mean_field_ks": list(args.mean_field_ks),
        "evaluator_choice": args.evaluator,
        "humaneval": args.humaneval,
        "rocstories": args.rocstories,
        "backend": args.backend,
        "timeout": args.timeout,
        "memory_mb": args.memory_mb,
        "started": started,
        "git": _git(),
        "assd_version": assd.__version__,
        "argv": sys.argv[1:],
        "processes": dist.world,
        "machine": _machine(),
    }


def _check_resume(out: Path, cfg: dict) -> None:
    f = out / "config.json"
    if f.exists():
        old = json.loads(f.read_text())
        diff = [k for k in IDENTITY if old.get(k) != cfg.get(k)]
        if diff:
            raise SystemExit(
                f"{out} holds a run with other settings ({', '.join(diff)}): use another --run-id"
            )
        cfg["resumed"], cfg["started"] = cfg["started"], old.get("started", cfg["started"])
        cfg["machine"] = old.get("machine", cfg["machine"])  # where the timings were first taken


def _together(dist: distributed.Dist, work) -> None:
    """Run this process's share, then wait for every process (even when the share raised)."""
    err = None
    try:
        work()
    except Exception as e:  # re-raised after the barrier, so no process waits forever
        err = e
    dist.barrier()
    if err is not None:
        raise err


def _paper_packing(args, lm: assd.Loaded) -> bool:
    if args.packing == "auto":
        return lm.name == whitespace.PAPER_HUB_ID
    return args.packing == "paper"


def _n_seqs(args, lm: assd.Loaded) -> tuple[int, str]:
    if args.n_seqs is not None:
        return args.n_seqs, f"--n-seqs {args.n_seqs}"
    if lm.model.device.type == "cuda":
        return PAPER_N_SEQS, "the paper's count"
    return CPU_N_SEQS, f"declared CPU subset (the paper: {PAPER_N_SEQS}; set --n-seqs)"


def run_spec(args, cfg, lm, out: Path, dist) -> tuple[dict, list[dict]] | None:
    L = min(args.length, lm.model.max_length or args.length)
    if L < args.length:
        note = f"min({args.length}, model max length {lm.model.max_length}); the paper uses 512"
    else:
        note = "as in the paper" if L == 512 else "set by --length; the paper uses 512"
    paper = _paper_packing(args, lm)
    if paper:  # the paper's code forbids only <mask>: its packing puts special tokens in text
        lm = spec_decoding.forbid_only_mask(lm)
    encode = (data.paper_row_encoder if paper else data.plain_row_encoder)(lm.tokenizer)
    n, n_note = _n_seqs(args, lm)
    rows = data.load_wikitext2(cfg["data_dir"])
    seqs = data.pack_tokens(rows, encode, L, n, skip_empty=not paper)
    prompts = spec_decoding.make_prompts(seqs, args.rate, args.seed)
    evaluator, ev_note = make_evaluator(args.evaluator, lm, args.online)
    cfg["evaluator"] = ev_note
    specs = spec_decoding.exact_samplers(args.k, getattr(lm.model, "has_draft_head", False))
    specs += spec_decoding.mean_field_samplers(args.mean_field_ks)
    store = Store(out / "spec.jsonl", dist.rank, dist.world)
    work = functools.partial(
        spec_decoding.run, lm, prompts, specs, store, args.seed, evaluator, dist.rank, dist.world
    )
    _together(dist, work)
    if not dist.main:
        return None
    store.merge()
    wanted = {f"{s.name}/{p.idx}" for s in specs for p in prompts}
    records = [r for r in store.records() if r["id"] in wanted]
    packing = (
        "the paper's: each row with its special tokens and an end-of-document token, empty rows kept"
        if paper
        else "rows' tokens without special tokens, empty rows skipped (the embedded models' training packing)"
    )
    ecfg = {
        "n_sequences": len(prompts),
        "n_requested": n,
        "n_note": n_note,
        "length": L,
        "length_note": note,
        "rate": args.rate,
        "k": args.k,
        "packing": packing,
        "n_visible": int((~prompts[0].mask).sum()) if prompts else 0,
        "forbidden": "<mask> only (the paper's code)" if paper else "every special token",
        "device": str(lm.model.device),
        "evaluator": ev_note,
        "model": lm.name,
        "paper_model": lm.name == whitespace.PAPER_HUB_ID,
    }
    res = {"config": ecfg, "summary": spec_decoding.summarize(records), "errors": store.errors()}
    return res, records


def run_prose(args, cfg, lm, out: Path, dist) -> dict | None:
    stories = data.load_rocstories(cfg["data_dir"], args.rocstories)[: args.n_stories]
    store = Store(out / "prose.jsonl", dist.rank, dist.world)
    work = functools.partial(
        infill_prose.run,
        lm,
        stories,
        store,
        args.infill_k,
        args.seed,
        batch_size=args.batch_size,
        rank=dist.rank,
        world=dist.world,
    )
    _together(dist, work)
    if not dist.main:
        return None
    store.merge()
    ids = {f"{st}/{s.id}" for st in infill_prose.SETTINGS for s in stories}
    recs = [r for r in store.records() if r["id"] in ids]
    cfg_p = {"n_stories": len(stories), "k": args.infill_k, "model": lm.name}
    summ = infill_prose.summarize(recs)
    return {"config": cfg_p, "summary": summ, "records": recs, "errors": store.errors()}


def run_code(args, cfg, lm, out: Path, dist) -> dict | None:
    sets = data.load_humaneval_sets(args.humaneval, cfg["data_dir"])
    problems = [p for _, probs in sets for p in probs[: args.n_code]]
    benchmarks = {
        name: {"n_total": len(probs), "n_used": len(probs[: args.n_code])} for name, probs in sets
    }
    iso = sandbox.isolation()
    if dist.main:
        print(f"[run_all] code sandbox ({iso.level}): {iso.detail}", file=sys.stderr, flush=True)
    store = Store(out / "code.jsonl", dist.rank, dist.world)
    work = functools.partial(
        infill_code.run,
        lm,
        problems,
        store,
        args.infill_k,
        args.seed,
        batch_size=args.batch_size,
        timeout=args.timeout,
        memory_mb=args.memory_mb,
        workers=args.workers,
        rank=dist.rank,
        world=dist.world,
    )
    _together(dist, work)
    if not dist.main:
        return None
    store.merge()
    ids = {p["task_id"] for p in problems}
    recs = [r for r in store.records() if r["id"] in ids]
    config = {
        "benchmarks": benchmarks,
        "k": args.infill_k,
        "model": lm.name,
        "revision": lm.revision,
        "whitespace": lm.whitespace,
        "timeout": args.timeout,
        "memory_mb": args.memory_mb,
        "isolation": iso.level,
        "isolation_detail": iso.detail,
        "isolation_reduced": iso.reduced,
    }
    return {
        "config": config,
        "summary": infill_code.summarize(recs),
        "records": recs,
        "errors": store.errors(),
    }


def run_ablations(args, cfg, lm, out: Path, dist) -> dict | None:
    L = min(args.length, lm.model.max_length or args.length)
    lengths = args.ablation_lengths or tuple(sorted({max(8, L // 4), max(8, L // 2), L}))
    paper = _paper_packing(args, lm)
    if paper:
        lm = spec_decoding.forbid_only_mask(lm)
    encode = (data.paper_row_encoder if paper else data.plain_row_encoder)(lm.tokenizer)
    rows = data.load_wikitext2(cfg["data_dir"])
    seqs = data.pack_tokens(rows, encode, max(lengths), args.ablation_n_seqs, skip_empty=not paper)
    evaluator, _ = make_evaluator(args.evaluator, lm, args.online)
    stores = {}

    def work():
        if "k_length" in args.ablations:
            stores["k"] = st = Store(out / "ablation_k_length.jsonl", dist.rank, dist.world)
            ablations.k_by_length(
                lm,
                seqs,
                args.ablation_ks,
                lengths,
                st,
                args.seed,
                args.rate,
                evaluator,
                dist.rank,
                dist.world,
            )
        if "r_atol" in args.ablations:
            stores["r"] = st = Store(out / "ablation_r_atol.jsonl", dist.rank, dist.world)
            ablations.r_atol_sweep(
                lm,
                [s[:L] for s in seqs],
                args.k,
                args.r_atols,
                st,
                args.seed,
                args.rate,
                evaluator,
                dist.rank,
                dist.world,
            )

    _together(dist, work)
    if not dist.main:
        return None
    res: dict = {
        "config": {
            "model": lm.name,
            "length": L,
            "lengths": list(lengths),
            "k": args.k,
            "n_seqs": len(seqs),
        }
    }
    if "k" in stores:
        stores["k"].merge()
        recs = stores["k"].records()
        recs = [r for r in recs if r["k"] in args.ablation_ks and r["L"] in lengths]
        res["k_by_length"] = ablations.summarize_k_by_length(recs)
        res["k_by_length_records"] = recs
    if "r" in stores:
        stores["r"].merge()
        recs = [r for r in stores["r"].records() if r["r_atol"] in args.r_atols]
        res["r_atol"] = ablations.summarize_r_atol(recs)
        res["r_atol_records"] = recs
    return res


# Modules an eval needs beyond the library's own: checked before any model loads, so that a
# machine without them stops at once with the fix instead of failing every item in turn.
REQUIRES = {"prose": {"rouge_score.rouge_scorer": "rouge-score"}}


def check_requirements(evals) -> None:
    """Raise ``SystemExit`` naming every module of ``evals`` that does not import, and its pip
    package. Imported, not just found: a package whose own dependencies are missing (rouge-score
    without nltk or absl-py) would otherwise pass here and fail every item."""
    import importlib

    missing: dict[str, tuple[str, str]] = {}
    for ev in evals:
        for mod, pkg in REQUIRES.get(ev, {}).items():
            try:
                importlib.import_module(mod)
            except ImportError as e:
                missing.setdefault(pkg, (ev, str(e)))
    if missing:
        need = ", ".join(f"{pkg} (for --evals {ev}: {why})" for pkg, (ev, why) in missing.items())
        raise SystemExit(
            f"run_all: missing {need}; install with `pip install {' '.join(missing)}` "
            "(or `pip install -e '.[evals]'`), or leave those evals out of --evals"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_requirements(args.evals)
    dist = distributed.init()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    cfg = make_config(args, dist)
    out = Path(args.out) / cfg["run_id"]
    _check_resume(out, cfg)  # every process reads the old config before the main one writes
    dist.barrier()
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.json", json.dumps(json_safe(cfg), indent=2))
        print(f"[run_all] writing {out} ({dist.world} process(es))", flush=True)
    dist.barrier()

    results: dict = {"config": cfg, "plots": [], "errors": {}}
    failed: dict[str, str] = {}
    models: dict[tuple, assd.Loaded] = {}
    device = args.device or dist.device

    def model(name, rev):
        if (name, rev) not in models:
            models[(name, rev)] = assd.load(name, rev, backend=args.backend, device=device)
            cfg["device"] = str(models[(name, rev)].model.device)
        return models[(name, rev)]

    runs = {"spec": run_spec, "prose": run_prose, "code": run_code, "ablations": run_ablations}
    for key in [*args.evals, *(["ablations"] if args.ablations else [])]:
        try:
            lm = model(cfg["code_model"], cfg["code_revision"]) if key == "code" else None
            lm = lm or model(args.model, args.revision)
            res = runs[key](args, cfg, lm, out, dist)
            if key == "spec" and res is not None:
                results["spec"], results["spec_records"] = res
            elif res is not None:
                results[key] = res
        except Exception as e:  # one failing eval must not stop the others
            failed[key] = repr(e)
            print(
                f"[run_all] {key} failed on process {dist.rank}: {e!r}\n"
                f"{traceback.format_exc(limit=8)}",
                file=sys.stderr,
                flush=True,
            )
        for ev in EVALS:
            if ev in results:
                results["errors"][ev] = results[ev].get("errors", [])
    if not dist.main:
        return 1 if failed else 0

    results["plots"] = make_plots(results, out)
    results["failed_evals"] = failed
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_atomic(out / "results.json", json.dumps(json_safe(results), indent=1))
    write_atomic(out / "report.md", report.render(results) + _failures(failed))
    print(f"[run_all] report: {out / 'report.md'}", flush=True)
    return 1 if failed else 0


def make_plots(results: dict, out: Path) -> list[str]:
    made, jobs = [], []
    if "spec" in results:
        recs, summ = results["spec_records"], results["spec"]["summary"]
        jobs += [
            (plots.calls_histogram, recs, "calls_histogram.png"),
            (plots.quality_vs_calls, summ, "quality_vs_calls.png"),
            (plots.acceptance_per_round, recs, "acceptance_per_round.png"),
        ]
    abl = results.get("ablations", {})
    if abl.get("k_by_length"):
        jobs.append((plots.k_by_length, abl["k_by_length"], "ablation_k_length.png"))
    if abl.get("r_atol"):
        jobs.append((plots.r_atol, abl["r_atol"], "ablation_r_atol.png"))
    for fn, arg, name in jobs:
        try:
            made.append(str(fn(arg, out / name)))
        except Exception as e:  # a plot must not lose the run's numbers
            print(f"[run_all] plot {name} failed: {e!r}", file=sys.stderr)
    return made


def _failures(failed: dict[str, str]) -> str:
    if not failed:
        return "\n"
    return "\n## Evals that failed\n\n" + "\n".join(f"- {k}: {v}" for k, v in failed.items()) + "\n"


if __name__ == "__main__":
    sys.exit(main())
