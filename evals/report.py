"""``report.md``: the run's tables, and the paper's figures only where they measure the same thing.

A paper figure is printed beside ours only for the same benchmark, split and metric, and always
with the model, benchmark and item count it belongs to; otherwise the report says what the
paper measured and why it is not beside ours.
"""

from __future__ import annotations

import math
from pathlib import Path

# Guo & Ermon (arXiv 2504.20456), as read in ../shared/notes/paper-protocols.md §6.
PAPER_MODEL = "the paper's 110M AS-ARM (therealgabeguo/ASARM)"
PAPER_SPEC = {  # Table 1: WikiText-2 test, 640 sequences, L = 512, 26 visible, k = 5
    "sequential": {"nfe": 486.0, "ppl": 107.9, "entropy": 7.65},
    "assd": {"nfe": 434.1, "ppl": 107.6, "entropy": 7.64},
    "assd-ngram": {"nfe": 422.0, "ppl": 111.7, "entropy": 7.64},  # + 422 n-gram calls
}
PAPER_SPEC_SETTING = (
    "WikiText-2 test, 640 sequences of 512 tokens, 26 visible, k = 5, perplexity and entropy "
    "by GPT-2 Large, the paper's row packing; model: " + PAPER_MODEL + " revision nlp_210k_plus_75k"
)
PAPER_HUMANEVAL = {"HumanEval-SingleLineInfilling": (38.59, 1033)}  # pass@1, problems
PAPER_ROCSTORIES = {"3/5": 18.0}  # ROUGE-1, AS-ARM-FT (revision nlp), all 1,871 stories
ROCSTORIES_TOTAL = 1871


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


def _ci(t: dict, nd: int = 2) -> str:
    if not t or t.get("diff") is None or not math.isfinite(t.get("diff", math.nan)):
        return "-"
    return f"{t['diff']:+.{nd}f} [{t['ci95_low']:+.{nd}f}, {t['ci95_high']:+.{nd}f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _spec_comparable(cfg: dict) -> bool:
    """Same benchmark, split and metric as Table 1: the paper's model, L = 512, its packing,
    GPT-2 Large scoring."""
    return (
        cfg.get("paper_model", False)
        and cfg["length"] == 512
        and cfg.get("packing", "").startswith("the paper's")
        and str(cfg.get("evaluator", "")).startswith("gpt2-large")
    )


def spec_section(res: dict) -> list[str]:
    s, cfg = res["summary"], res["config"]
    cpu = " CPU timings on a shared machine are indicative only." if cfg["device"] == "cpu" else ""
    lines = [
        "## Speculative decoding (the paper's Table 1 protocol)",
        "",
        f"Model `{cfg.get('model', '?')}`. WikiText-2 test, {cfg['n_sequences']} packed sequences "
        f"({cfg.get('n_note', '')}) of L = {cfg['length']} tokens ({cfg['length_note']}); "
        f"packing: {cfg.get('packing', '?')}; never generated: {cfg.get('forbidden', '?')}. "
        f"Random order, {cfg['n_visible']} of {cfg['length']} visible "
        f"(`assd.random_order(L, {cfg['rate']}, g)`), the same prompt for every sampler; "
        f"k = {cfg['k']}; batch size 1; wall-clock synchronised after a warm-up, on "
        f"{cfg['device']}.{cpu} Quality evaluator: {cfg['evaluator']}.",
        "",
    ]
    comparable = _spec_comparable(cfg)
    seq_nfe = s.get("sequential", {}).get("nfe", {}).get("mean")
    header = ["sampler", "calls/seq", "calls / sequential", "rounds", "tokens/call"]
    header += ["acceptance", "seconds/seq", "PPL", "entropy"]
    if comparable:
        header += ["paper calls (110M)", "paper PPL (110M)", "paper entropy (110M)"]
    rows = []
    for name, m in s.items():
        rel = m["nfe"]["mean"] / seq_nfe if seq_nfe else None
        row = [name + ("" if m.get("exact", True) else " (not exact)"), _ms(m["nfe"], 1)]
        row += [_f(rel, 3), _ms(m["rounds"], 1), _ms(m["tokens_per_call"])]
        row += [_ms(m["acceptance_rate"]), _ms(m["seconds"], 3), _ms(m["ppl"]), _ms(m["entropy"])]
        if comparable:
            paper = PAPER_SPEC.get(name.split(" (")[0], {})
            row += [_f(paper.get("nfe"), 1), _f(paper.get("ppl"), 1), _f(paper.get("entropy"))]
        rows.append(row)
    lines += _table(header, rows) + [""]
    paper_line = "; ".join(
        f"{k}: {v['nfe']} calls, PPL {v['ppl']}, entropy {v['entropy']}"
        for k, v in PAPER_SPEC.items()
    )
    if not comparable:
        lines += [
            f"The paper's Table 1 ({PAPER_SPEC_SETTING}): {paper_line}. Not printed beside "
            "this run: a different model, length, packing or perplexity evaluator measures a "
            "different thing.",
            "",
        ]
    lines += [
        "Does an exact sampler match sequential decoding? Difference of means (sampler minus "
        "sequential, paired over the same prompts) with its 95% confidence interval, and the "
        "smallest true difference the paired t-test would detect with 80% power; then the "
        "p-values. An exact sampler should show no difference: a large p-value means no "
        "difference was *detected*, and the interval says how large a difference is ruled out.",
        "",
    ]
    rows = []
    for name, m in s.items():
        for metric, t in m.get("tests", {}).items():
            rows.append(
                [
                    name,
                    metric,
                    str(t["n"]),
                    _ci(t),
                    _f(t.get("detectable")),
                    _p(t["t_test_paired"]),
                    _p(t["t_test_ind"]),
                    _p(t["wilcoxon"]),
                    _p(t["mann_whitney"]),
                    _p(t.get("ks")),
                ]
            )
    header = ["sampler", "metric", "n", "difference [95% CI]", "detectable (80% power)"]
    header += ["paired t", "independent t", "Wilcoxon", "Mann-Whitney", "Kolmogorov-Smirnov"]
    return lines + _table(header, rows) + [""]


def prose_section(res: dict) -> list[str]:
    cfg = res["config"]
    n = cfg["n_stories"]
    subset = "" if n >= ROCSTORIES_TOTAL else f" (first {n} of {ROCSTORIES_TOTAL}: a subset)"
    lines = [
        "## Prose infilling (ROCStories)",
        "",
        f"Model `{cfg.get('model', '?')}`. Story Cloze Test spring-2016 validation, {n} stories"
        f"{subset}; blank = true token length; left to right; ASSD k = {cfg['k']}; ROUGE F x100 "
        "(`rouge_score`, no stemming). The paper's figure: ROUGE-1 of its 110M AS-ARM-FT "
        "(therealgabeguo/ASARM revision nlp) on all 1,871 stories, 3/5 only.",
        "",
    ]
    rows = []
    for st, m in res["summary"].items():
        paper = PAPER_ROCSTORIES.get(st)
        rows.append(
            [
                st,
                str(m["n"]),
                _f(m["rouge1"]),
                _f(m["rouge2"]),
                _f(m["rougeL"]),
                _f(m["rougeAvg"]),
                _ms(m["n_masked"], 1),
                _ms(m["nfe"], 1),
                _f(paper, 1),
            ]
        )
    header = ["masked sentences", "n", "ROUGE-1", "ROUGE-2", "ROUGE-L", "avg", "tokens", "calls"]
    return lines + _table(header + ["paper ROUGE-1 (110M, 1,871 stories)"], rows) + [""]


def code_section(res: dict) -> list[str]:
    cfg, summ = res["config"], res["summary"]
    rev = f" (revision `{cfg['revision']}`)" if cfg.get("revision") else ""
    ws = f"; whitespace mapping `{cfg['whitespace']}`" if cfg.get("whitespace") else ""
    lines = ["## Code infilling (HumanEval-infilling)", ""]
    if cfg.get("isolation_reduced"):
        lines += [
            f"**WARNING: reduced isolation for untrusted code.** {cfg['isolation_detail']}. "
            "Completions ran with resource limits only and could reach this user's files and "
            "processes.",
            "",
        ]
    lines += [
        f"Model `{cfg.get('model', '?')}`{rev}{ws}. Blank = true token length; left to right; "
        f"ASSD k = {cfg['k']}. pass@1 = the completed program's tests ran to completion "
        f"(exit 0 and the harness's nonce after `check`) in the sandbox: {cfg['timeout']:g} s "
        f"per program (the reference harness's default is 3 s), {cfg['memory_mb']} MB address "
        f"space; isolation: {cfg.get('isolation_detail', cfg.get('isolation', '?'))}. Every "
        "problem's canonical solution runs through the same sandbox (expected 100% per file).",
        "",
    ]
    if not summ:
        return lines + ["(no results)", ""]
    rows, eq = [], 0
    for name, m in summ.items():
        b = cfg.get("benchmarks", {}).get(name, {})
        total = b.get("n_total", m["n"])
        count = f"{m['n']} of {total}" + (" (subset)" if m["n"] < total else "")
        paper = PAPER_HUMANEVAL.get(name)
        paper_s = "-"
        if paper:
            paper_s = f"{paper[0]:.2f} (all {paper[1]} problems)"
            paper_s += "" if m["n"] == paper[1] else f"; this run {m['n']}: not comparable"
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(m["statuses"].items()))
        rows.append(
            [
                name,
                count,
                _f(m["pass@1"]),
                _f(m.get("canonical_pass")),
                str(m.get("always_equal", 0)),
                _f(m["exact_match"]),
                _ms(m["n_masked"], 1),
                _ms(m["nfe"], 1),
                statuses,
                paper_s,
            ]
        )
        eq += m.get("always_equal", 0)
    header = ["benchmark", "problems", "pass@1", "canonical pass", "always-equal"]
    header += ["exact match", "tokens", "calls", "statuses", "paper pass@1 (110M XLNet-Code)"]
    lines += _table(header, rows) + [""]
    lines += [
        f"always-equal: {eq} completion(s) returned an object equal to everything; they are "
        "counted as failures here, while the reference harness (human-eval-infilling) would "
        "count them as passes. The paper's 38.59 is single-line infilling over all 1,033 "
        "problems; a subset or another file is not comparable with it.",
        "",
    ]
    return lines


def ablation_sections(res: dict) -> list[str]:
    lines = []
    model = res.get("config", {}).get("model", "?")
    if "k_by_length" in res:
        lines += ["## Ablation: k x sequence length", "", f"Model `{model}`.", ""]
        rows = [
            [
                str(c["k"]),
                str(c["L"]),
                _ms(c["nfe"], 1),
                _ms(c["tokens_per_call"]),
                _ms(c["acceptance_rate"]),
                _ms(c["seconds"], 3),
            ]
            for c in res["k_by_length"].values()
        ]
        header = ["k", "L", "calls/seq", "tokens/call", "acceptance", "seconds/seq"]
        lines += _table(header, rows) + [""]
    if "r_atol" in res:
        lines += [
            "## Ablation: lossy acceptance (r_atol)",
            "",
            f"Model `{model}`. `assd.ASSD(k, r_atol=r)` accepts a draft token when "
            "u < min(1, p/q + r) (u uniform, p its oracle probability, q its draft probability: "
            "the paper's rule); r = 0 is exact ASSD, r > 0 raises acceptance and is no longer "
            "exact. Differences and p-values against r = 0 on the same prompts (the paper: "
            "k = 5, L = 256, 500 sequences).",
            "",
        ]
        rows = []
        for ra, m in res["r_atol"].items():
            t = m.get("tests", {}).get("ppl", {})
            rows.append(
                [
                    ra,
                    _ms(m["nfe"], 1),
                    _ms(m["tokens_per_call"]),
                    _ms(m["acceptance_rate"]),
                    _ms(m["ppl"]),
                    _ms(m["entropy"]),
                    _ci(t),
                    _p(t.get("t_test_paired")),
                    _p(t.get("mann_whitney")),
                ]
            )
        header = ["r_atol", "calls/seq", "tokens/call", "acceptance", "PPL", "entropy"]
        header += ["PPL difference [95% CI]", "PPL paired t p", "PPL Mann-Whitney p"]
        lines += _table(header, rows) + [""]
    return lines


def render(results: dict) -> str:
    """The whole report as Markdown."""
    c = results["config"]
    rev = f" (revision `{c['revision']}`)" if c.get("revision") else ""
    crev = f" (revision `{c['code_revision']}`)" if c.get("code_revision") else ""
    resumed = f", resumed {c['resumed']}" if c.get("resumed") else ""
    machine = ", ".join(f"{k} {v}" for k, v in c.get("machine", {}).items() if v is not None)
    lines = [
        f"# ASSD evaluation report: {c['run_id']}",
        "",
        f"- model: `{c['model']}`{rev}; code model: `{c['code_model']}`{crev}",
        f"- data: {c['data']}; seed {c['seed']}; device {c.get('device', '?')}; "
        f"processes {c.get('processes', 1)}; quick: {c['quick']}",
        f"- assd {c['assd_version']}, git {c.get('git', '?')}, started {c['started']}{resumed}, "
        f"finished {results.get('finished', '?')}",
        "- command: `python evals/run_all.py " + " ".join(c.get("argv", [])) + "`",
        f"- machine: {machine}",
        "- every sample and metric: `results.json` and the per-eval `*.jsonl` files here",
        "",
    ]
    if results.get("code", {}).get("config", {}).get("isolation_reduced"):
        lines += [
            "**WARNING: untrusted code ran with reduced isolation (see Code infilling).**",
            "",
        ]
    if "spec" in results:
        lines += spec_section(results["spec"])
    if "prose" in results:
        lines += prose_section(results["prose"])
    if "code" in results:
        lines += code_section(results["code"])
    lines += ablation_sections(results.get("ablations", {}))
    if results.get("plots"):
        lines += ["## Plots", ""]
        lines += [f"![{Path(p).stem}]({Path(p).name})" for p in results["plots"]] + [""]
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
