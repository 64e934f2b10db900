"""``report.md``: the run's tables, with the paper's numbers printed beside ours."""

from __future__ import annotations

import math
from pathlib import Path

# Guo & Ermon (arXiv 2504.20456): Table 1 (WikiText-2, 512 tokens, 5% visible, GPT-2 Large
# scoring), HumanEval single-line infilling (110M model), ROCStories 3/5 infilling.
PAPER = {
    "spec": {
        "sequential": {"nfe": 486.0, "ppl": 107.9, "entropy": 7.65},
        "assd": {"nfe": 434.1, "ppl": 107.6, "entropy": 7.64},
    },
    "humaneval_single_line_pass@1": 38.59,
    "rocstories_3/5_rouge1": 18.0,
}


def _f(x, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _ms(s: dict | None, nd: int = 2) -> str:
    """mean ± sem from a stats.summary dict."""
    if not s or s.get("n", 0) == 0:
        return "-"
    sem = s.get("sem")
    tail = f" ± {sem:.{nd}f}" if sem is not None and math.isfinite(sem) else ""
    return f"{s['mean']:.{nd}f}{tail}"


def _p(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.3g}"


def _paper_key(name: str) -> str | None:
    base = name.split(" (")[0]
    return base if base in PAPER["spec"] else None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def spec_section(res: dict) -> list[str]:
    s, cfg = res["summary"], res["config"]
    lines = [
        "## Speculative decoding (paper Table 1)", "",
        f"WikiText-2 test, {cfg['n_sequences']} packed sequences of L = {cfg['length']} tokens "
        f"({cfg['length_note']}); random order, {cfg['n_visible']} of {cfg['length']} visible "
        f"(`assd.random_order(L, {cfg['rate']}, g)`); k = {cfg['k']}; batch size 1; "
        f"wall-clock synchronised after a warm-up, on {cfg['device']}. Quality evaluator: "
        f"{cfg['evaluator']}. Paper: 512 tokens, GPT-2 Large scoring, A100."
        + (" CPU timings on a shared machine are indicative only (see the machine line)." if cfg["device"] == "cpu" else ""), "",
    ]  # fmt: skip
    rows = []
    seq_nfe = s.get("sequential", {}).get("nfe", {}).get("mean")
    paper_seq = PAPER["spec"]["sequential"]["nfe"]
    for name, m in s.items():
        pk = _paper_key(name)
        paper = PAPER["spec"].get(pk, {}) if pk else {}
        rel = m["nfe"]["mean"] / seq_nfe if seq_nfe else None
        paper_rel = paper["nfe"] / paper_seq if paper else None
        rows.append([
            name + ("" if m.get("exact", True) else " (not exact)"), _ms(m["nfe"], 1), _f(rel, 3),
            _ms(m["rounds"], 1), _ms(m["tokens_per_call"]), _ms(m["acceptance_rate"]),
            _ms(m["seconds"], 3), _ms(m["ppl"]), _ms(m["entropy"]), _f(paper.get("nfe"), 1),
            _f(paper_rel, 3), _f(paper.get("ppl"), 1), _f(paper.get("entropy")),
        ])  # fmt: skip
    lines += _table(
        ["sampler", "calls/seq", "calls / sequential", "rounds", "tokens/call", "acceptance", "seconds/seq",
         "PPL", "entropy", "paper calls", "paper calls / sequential", "paper PPL", "paper entropy"], rows)  # fmt: skip
    lines += [
        "",
        "Equality with sequential decoding (p-values; exact samplers should not be rejected):",
        "",
    ]
    rows = []
    for name, m in s.items():
        for metric, t in m.get("tests", {}).items():
            rows.append([name, metric, str(t["n"]), _p(t["t_test_paired"]), _p(t["t_test_ind"]),
                         _p(t["wilcoxon"]), _p(t["mann_whitney"]), _p(t.get("ks"))])  # fmt: skip
    lines += _table(
        [
            "sampler",
            "metric",
            "n",
            "paired t",
            "independent t",
            "Wilcoxon",
            "Mann-Whitney",
            "Kolmogorov-Smirnov",
        ],
        rows,
    )
    return lines + [""]


def prose_section(res: dict) -> list[str]:
    cfg = res["config"]
    lines = ["## Prose infilling (ROCStories)", "",
             f"{cfg['n_stories']} stories; blank = true token length; left to right; ASSD k = {cfg['k']}; "
             "ROUGE F x100 (`rouge_score`, no stemming).", ""]  # fmt: skip
    rows = []
    for st, m in res["summary"].items():
        paper = PAPER["rocstories_3/5_rouge1"] if st == "3/5" else None
        rows.append([st, str(m["n"]), _f(m["rouge1"]), _f(m["rouge2"]), _f(m["rougeL"]), _f(m["rougeAvg"]),
                     _ms(m["n_masked"], 1), _ms(m["nfe"], 1), _f(paper, 1)])  # fmt: skip
    lines += _table(
        ["masked", "n", "ROUGE-1", "ROUGE-2", "ROUGE-L", "avg", "tokens", "calls", "paper ROUGE-1"],
        rows,
    )
    return lines + [""]


def code_section(res: dict) -> list[str]:
    cfg, m = res["config"], res["summary"]
    lines = ["## Code infilling (HumanEval-infilling)", "",
             f"{cfg['benchmark']}; blank = true token length; left to right; ASSD k = {cfg['k']}; "
             f"pass@1 by running each completed program with its tests in a sandbox "
             f"({cfg['sandbox']}).", ""]  # fmt: skip
    if not m:
        return lines + ["(no results)", ""]
    rows = [[cfg["benchmark"], str(m["n"]), _f(m["pass@1"]), _f(m.get("canonical_pass")), _f(m["exact_match"]), _ms(m["n_masked"], 1),
             _ms(m["nfe"], 1), ", ".join(f"{k}: {v}" for k, v in sorted(m["statuses"].items())),
             _f(PAPER["humaneval_single_line_pass@1"])]]  # fmt: skip
    lines += _table(
        [
            "benchmark",
            "n",
            "pass@1",
            "canonical solutions pass",
            "exact match",
            "tokens",
            "calls",
            "statuses",
            "paper pass@1 (110M)",
        ],
        rows,
    )
    return lines + [""]


def ablation_sections(res: dict) -> list[str]:
    lines = []
    if "k_by_length" in res:
        lines += ["## Ablation: k x sequence length", ""]
        rows = [[str(c["k"]), str(c["L"]), _ms(c["nfe"], 1), _ms(c["tokens_per_call"]), _ms(c["acceptance_rate"]),
                 _ms(c["seconds"], 3)] for c in res["k_by_length"].values()]  # fmt: skip
        lines += _table(
            ["k", "L", "calls/seq", "tokens/call", "acceptance", "seconds/seq"], rows
        ) + [""]
    if "r_atol" in res:
        lines += ["## Ablation: lossy acceptance (r_atol)", "",
                  "r_atol > 0 accepts when p/q >= 1 - r_atol: more acceptance, no longer exact. "
                  "p-values against r_atol = 0.", ""]  # fmt: skip
        rows = []
        for ra, m in res["r_atol"].items():
            t = m.get("tests", {}).get("ppl", {})
            rows.append([ra, _ms(m["nfe"], 1), _ms(m["tokens_per_call"]), _ms(m["acceptance_rate"]), _ms(m["ppl"]),
                         _ms(m["entropy"]), _p(t.get("t_test_paired")), _p(t.get("mann_whitney"))])  # fmt: skip
        lines += _table(["r_atol", "calls/seq", "tokens/call", "acceptance", "PPL", "entropy", "PPL paired t p",
                         "PPL Mann-Whitney p"], rows) + [""]  # fmt: skip
    return lines


def render(results: dict) -> str:
    """The whole report as Markdown."""
    c = results["config"]
    lines = [
        f"# ASSD evaluation report: {c['run_id']}", "",
        f"- model: `{c['model']}`" + (f" (revision `{c['revision']}`)" if c.get("revision") else "")
        + f"; code model: `{c['code_model']}`" + (f" (revision `{c['code_revision']}`)" if c.get("code_revision") else ""),
        f"- data: {c['data']}; seed {c['seed']}; device {c.get('device', '?')}; quick: {c['quick']}",
        f"- assd {c['assd_version']}, git {c.get('git', '?')}, started {c['started']}" + (f", resumed {c['resumed']}" if c.get("resumed") else "") + ", "
        f"finished {results.get('finished', '?')}",
        "- command: `python evals/run_all.py " + " ".join(c.get("argv", [])) + "`",
        "- machine: " + ", ".join(f"{k} {v}" for k, v in c.get("machine", {}).items() if v is not None),
        "- every sample and metric: `results.json` and the per-eval `*.jsonl` files next to this report", "",
    ]  # fmt: skip
    if "spec" in results:
        lines += spec_section(results["spec"])
    if "prose" in results:
        lines += prose_section(results["prose"])
    if "code" in results:
        lines += code_section(results["code"])
    lines += ablation_sections(results.get("ablations", {}))
    if results.get("plots"):
        lines += (
            ["## Plots", ""]
            + [f"![{Path(p).stem}]({Path(p).name})" for p in results["plots"]]
            + [""]
        )
    errs = results.get("errors", {})
    if any(errs.values()):
        lines += [
            "## Errors",
            "",
            "Items that raised (recorded in the JSONL files, retried on the next run):",
            "",
        ]
        for ev, items in errs.items():
            for e in items[:20]:
                lines.append(f"- {ev} `{e['id']}`: {e['error'][:200]}")
        lines.append("")
    return "\n".join(lines)
