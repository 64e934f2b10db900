"""Run every evaluation of the paper on one model and write a report.

    python evals/run_all.py --model prose --quick                      # offline, embedded models
    python evals/run_all.py --model therealgabeguo/ASARM --revision nlp --online

Writes ``results/<run-id>/``: config.json, one resumable JSONL per eval (every sample),
results.json (every summary figure), report.md (tables, paper numbers beside ours) and plots.
Re-running with the same ``--run-id`` skips finished items.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import assd  # noqa: E402
from evals import ablations, data, infill_code, infill_prose, plots, report, spec_decoding  # noqa: E402
from evals.evaluator import make_evaluator  # noqa: E402
from evals.sandbox import unshare_prefix  # noqa: E402
from evals.store import Store, json_safe  # noqa: E402

EVALS = ("spec", "prose", "code")
ABLATIONS = ("k_length", "r_atol")
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
# Settings whose change makes earlier results of a run id incomparable.
IDENTITY = ("model", "revision", "code_model", "code_revision", "seed", "length", "rate", "k", "infill_k",
            "evaluator_choice", "data", "humaneval")  # fmt: skip


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
    a(
        "--code-model",
        default=None,
        help="model for code infilling (default: 'code' for --model prose, else --model)",
    )
    a(
        "--code-revision",
        default=None,
        help="Hub revision of the code model (default: 'code' when --revision nlp)",
    )
    a("--data", default=None, help=f"shared data folder (default {DEFAULT_DATA} when it exists)")
    a(
        "--online",
        action="store_true",
        help="read data sets (and GPT-2 Large) from the Hugging Face Hub",
    )
    a("--evals", type=_names(EVALS), default=EVALS, help="comma list of " + ",".join(EVALS))
    a(
        "--ablations",
        type=_names(ABLATIONS),
        default=(),
        help="comma list of " + ",".join(ABLATIONS),
    )
    a("--quick", action="store_true", help="a handful of items per eval (CI)")
    a("--n-seqs", type=int, default=100, help="WikiText-2 sequences")
    a("--n-stories", type=int, default=None, help="ROCStories stories (default all)")
    a("--n-code", type=int, default=None, help="HumanEval-infilling problems (default all)")
    a("--length", type=int, default=512, help="sequence length (capped at the model's max length)")
    a("--rate", type=float, default=0.95, help="masking rate of the Table-1 sequences")
    a("--k", type=int, default=5, help="ASSD proposals per round (Table 1)")
    a("--infill-k", type=int, default=10, help="ASSD proposals per round (infilling)")
    a("--mean-field-ks", type=_ints, default=(2, 4, 8), help="MeanField tokens per call")
    a("--ablation-n-seqs", type=int, default=8, help="WikiText-2 sequences per ablation cell")
    a("--ablation-ks", type=_ints, default=(1, 2, 5, 10, 15))
    a("--ablation-lengths", type=_ints, default=None, help="default L/4, L/2, L")
    a("--r-atols", type=_floats, default=(0.0, 0.05, 0.1, 0.25, 0.5))
    a(
        "--evaluator",
        default="auto",
        help="auto (gpt2-large if available, else self), self, or a causal LM id",
    )
    a(
        "--humaneval",
        default=None,
        help="HumanEval-infilling .jsonl(.gz) file (default: single-line)",
    )
    a("--rocstories", default=None, help="ROCStories cloze CSV (default: under --data)")
    a("--seed", type=int, default=0)
    a("--device", default=None)
    a(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 gives stable timings on a busy CPU)",
    )
    a("--backend", default="auto", choices=("auto", "engine", "reference"))
    a("--batch-size", type=int, default=8, help="infilling batch size")
    a("--timeout", type=float, default=10.0, help="sandbox seconds per program")
    a("--memory-mb", type=int, default=1024, help="sandbox address-space limit")
    a("--workers", type=int, default=2, help="sandbox processes in parallel")
    a("--out", default="results")
    a("--run-id", default=None, help="default: <model>-<date>; reuse one to resume")
    args = p.parse_args(argv)
    if args.quick:
        args.n_seqs = min(args.n_seqs, 2)
        args.ablation_n_seqs = min(args.ablation_n_seqs, 2)
        args.n_stories = min(args.n_stories or 3, 3)
        args.n_code = min(args.n_code or 3, 3)
        args.mean_field_ks = args.mean_field_ks[:1]
        args.ablation_ks = (2, 5)
        args.r_atols = (0.0, 0.2)
    for name in ("n_seqs", "length", "k", "infill_k", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _git() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "?"  # fmt: skip
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

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_avg_1min": load,
            "platform": platform.platform(), "torch": torch.__version__, "gpu": gpu}  # fmt: skip


def make_config(args) -> dict:
    data_dir = None if args.online else str(Path(args.data) if args.data else DEFAULT_DATA)
    code_model, code_rev = _code_model(args)
    run_id = args.run_id or f"{Path(args.model).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return {
        "run_id": run_id, "model": args.model, "revision": args.revision, "code_model": code_model,
        "code_revision": code_rev, "data": data_dir or "Hugging Face Hub", "online": args.online,
        "evals": list(args.evals), "ablations": list(args.ablations), "quick": args.quick,
        "seed": args.seed, "length": args.length, "rate": args.rate, "k": args.k, "infill_k": args.infill_k,
        "n_seqs": args.n_seqs, "ablation_n_seqs": args.ablation_n_seqs, "n_stories": args.n_stories, "n_code": args.n_code,
        "mean_field_ks": list(args.mean_field_ks), "evaluator_choice": args.evaluator,
        "humaneval": args.humaneval, "rocstories": args.rocstories, "backend": args.backend,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "git": _git(), "assd_version": assd.__version__,
        "argv": sys.argv[1:], "machine": _machine(),
    }  # fmt: skip


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


def run_spec(args, cfg, lm, out: Path) -> tuple[dict, list[dict]]:
    L = min(args.length, lm.model.max_length or args.length)
    if L < args.length:
        note = f"min({args.length}, model max length {lm.model.max_length}); the paper uses 512"
    else:
        note = "as in the paper" if L == 512 else "set by --length; the paper uses 512"
    rows = data.load_wikitext2(cfg["data_dir"])
    seqs = data.pack_tokens(
        rows, lambda t: lm.tokenizer(t, add_special_tokens=False)["input_ids"], L, args.n_seqs
    )
    prompts = spec_decoding.make_prompts(seqs, args.rate, args.seed)
    evaluator, ev_note = make_evaluator(args.evaluator, lm, args.online)
    cfg["evaluator"] = ev_note
    specs = spec_decoding.exact_samplers(args.k) + spec_decoding.mean_field_samplers(
        args.mean_field_ks
    )
    store = Store(out / "spec.jsonl")
    records = spec_decoding.run(lm, prompts, specs, store, args.seed, evaluator)
    wanted = {f"{s.name}/{p.idx}" for s in specs for p in prompts}
    records = [r for r in records if r["id"] in wanted]
    ecfg = {"n_sequences": len(prompts), "length": L, "length_note": note, "rate": args.rate,
            "n_visible": int((~prompts[0].mask).sum()) if prompts else 0, "k": args.k,
            "device": str(lm.model.device), "evaluator": ev_note}  # fmt: skip
    res = {"config": ecfg, "summary": spec_decoding.summarize(records), "errors": store.errors()}
    return res, records


def run_prose(args, cfg, lm, out: Path) -> dict:
    stories = data.load_rocstories(cfg["data_dir"], args.rocstories)[: args.n_stories]
    store = Store(out / "prose.jsonl")
    recs = infill_prose.run(
        lm, stories, store, args.infill_k, args.seed, batch_size=args.batch_size
    )
    ids = {f"{st}/{s.id}" for st in infill_prose.SETTINGS for s in stories}
    recs = [r for r in recs if r["id"] in ids]
    cfg_p = {"n_stories": len(stories), "k": args.infill_k}
    summ = infill_prose.summarize(recs)
    return {"config": cfg_p, "summary": summ, "records": recs, "errors": store.errors()}


def run_code(args, cfg, lm, out: Path) -> dict:
    problems = data.load_humaneval_infilling(cfg["data_dir"], args.humaneval)[: args.n_code]
    store = Store(out / "code.jsonl")
    recs = infill_code.run(lm, problems, store, args.infill_k, args.seed, batch_size=args.batch_size,
                           timeout=args.timeout, memory_mb=args.memory_mb, workers=args.workers)  # fmt: skip
    ids = {p["task_id"] for p in problems}
    recs = [r for r in recs if r["id"] in ids]
    bench = Path(args.humaneval).name if args.humaneval else "HumanEval-SingleLineInfilling"
    net = "no network namespace (unshare -rn)" if unshare_prefix() else "sockets disabled"
    sandbox = f"fresh python -I per program, {args.timeout:g} s, {args.memory_mb} MB, {net}"
    return {"config": {"benchmark": bench, "k": args.infill_k, "sandbox": sandbox},
            "summary": infill_code.summarize(recs), "records": recs, "errors": store.errors()}  # fmt: skip


def run_ablations(args, cfg, lm, out: Path) -> dict:
    L = min(args.length, lm.model.max_length or args.length)
    lengths = args.ablation_lengths or tuple(sorted({max(8, L // 4), max(8, L // 2), L}))
    rows = data.load_wikitext2(cfg["data_dir"])
    seqs = data.pack_tokens(rows, lambda t: lm.tokenizer(t, add_special_tokens=False)["input_ids"],
                            max(lengths), args.ablation_n_seqs)  # fmt: skip
    evaluator, _ = make_evaluator(args.evaluator, lm, args.online)
    res = {}
    if "k_length" in args.ablations:
        st = Store(out / "ablation_k_length.jsonl")
        recs = ablations.k_by_length(
            lm, seqs, args.ablation_ks, lengths, st, args.seed, args.rate, evaluator
        )
        recs = [r for r in recs if r["k"] in args.ablation_ks and r["L"] in lengths]
        res["k_by_length"] = ablations.summarize_k_by_length(recs)
        res["k_by_length_records"] = recs
    if "r_atol" in args.ablations:
        st = Store(out / "ablation_r_atol.jsonl")
        recs = ablations.r_atol_sweep(lm, [s[:L] for s in seqs], args.k, args.r_atols, st, args.seed, args.rate,
                                      evaluator)  # fmt: skip
        recs = [r for r in recs if r["r_atol"] in args.r_atols]
        res["r_atol"] = ablations.summarize_r_atol(recs)
        res["r_atol_records"] = recs
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    cfg = make_config(args)
    cfg["data_dir"] = None if args.online else cfg["data"]
    out = Path(args.out) / cfg["run_id"]
    _check_resume(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(json_safe(cfg), indent=2))
    print(f"[run_all] writing {out}", flush=True)

    results: dict = {"config": cfg, "plots": [], "errors": {}}
    failed: dict[str, str] = {}
    models: dict[tuple, assd.Loaded] = {}

    def model(name, rev):
        if (name, rev) not in models:
            models[(name, rev)] = assd.load(name, rev, backend=args.backend, device=args.device)
            cfg["device"] = str(models[(name, rev)].model.device)
        return models[(name, rev)]

    steps = [(e, e) for e in args.evals] + ([("ablations", "ablations")] if args.ablations else [])
    for key, _ in steps:
        try:
            if key == "code":
                lm = model(cfg["code_model"], cfg["code_revision"])
            else:
                lm = model(args.model, args.revision)
            if key == "spec":
                results["spec"], results["spec_records"] = run_spec(args, cfg, lm, out)
            elif key == "prose":
                results["prose"] = run_prose(args, cfg, lm, out)
            elif key == "code":
                results["code"] = run_code(args, cfg, lm, out)
            else:
                results["ablations"] = run_ablations(args, cfg, lm, out)
        except Exception as e:  # noqa: BLE001 - one failing eval must not stop the others
            failed[key] = repr(e)
            print(
                f"[run_all] {key} failed: {e!r}\n{traceback.format_exc(limit=8)}",
                file=sys.stderr,
                flush=True,
            )
        for ev in ("spec", "prose", "code"):
            if ev in results:
                results["errors"][ev] = results[ev].get("errors", [])

    results["plots"] = make_plots(results, out)
    results["failed_evals"] = failed
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "results.json").write_text(json.dumps(json_safe(results), indent=1))
    (out / "report.md").write_text(report.render(results) + _failures(failed))
    print(f"[run_all] report: {out / 'report.md'}", flush=True)
    return 1 if failed else 0


def make_plots(results: dict, out: Path) -> list[str]:
    made = []
    jobs = []
    if "spec" in results:
        recs, summ = results["spec_records"], results["spec"]["summary"]
        jobs += [(plots.calls_histogram, recs, "calls_histogram.png"), (plots.quality_vs_calls, summ, "quality_vs_calls.png"),
                 (plots.acceptance_per_round, recs, "acceptance_per_round.png")]  # fmt: skip
    abl = results.get("ablations", {})
    if abl.get("k_by_length"):
        jobs.append((plots.k_by_length, abl["k_by_length"], "ablation_k_length.png"))
    if abl.get("r_atol"):
        jobs.append((plots.r_atol, abl["r_atol"], "ablation_r_atol.png"))
    for fn, arg, name in jobs:
        try:
            made.append(str(fn(arg, out / name)))
        except Exception as e:  # noqa: BLE001 - a plot must not lose the run's numbers
            print(f"[run_all] plot {name} failed: {e!r}", file=sys.stderr)
    return made


def _failures(failed: dict[str, str]) -> str:
    if not failed:
        return "\n"
    return "\n## Evals that failed\n\n" + "\n".join(f"- {k}: {v}" for k, v in failed.items()) + "\n"


if __name__ == "__main__":
    sys.exit(main())
