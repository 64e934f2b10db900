"""Figures of a run (matplotlib, Agg backend): each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def _figure(ncols: int = 1, figsize: tuple[float, float] = (7, 4)):
    """A figure with ``ncols`` axes, not registered with pyplot (no GUI backend, no leaks)."""
    fig = Figure(figsize=figsize)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def calls_histogram(records: list[dict], path: Path) -> Path:
    """Network calls per sequence, one histogram per exact sampler."""
    by: dict[str, list[int]] = {}
    for r in records:
        if r.get("exact", True):
            by.setdefault(r["sampler"], []).append(r["nfe"])
    fig, ax = _figure(1, (7, 4))
    allv = [v for vs in by.values() for v in vs]
    bins = np.linspace(min(allv), max(allv) + 1, 25) if allv else 10
    for name, vs in by.items():
        ax.hist(
            vs, bins=bins, histtype="step", linewidth=1.5, label=f"{name} (mean {np.mean(vs):.1f})"
        )
    ax.set_xlabel("network calls per sequence")
    ax.set_ylabel("sequences")
    ax.set_title("Calls per sequence (WikiText-2)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def quality_vs_calls(summary: dict, path: Path) -> Path:
    """Perplexity and entropy vs mean calls: exact samplers (points) vs mean-field (line)."""
    fig, axes = _figure(2, (11, 4))
    for ax, metric, label in (
        (axes[0], "ppl", "generative perplexity"),
        (axes[1], "entropy", "unigram entropy (bits)"),
    ):
        mf = sorted(
            (
                (s["nfe"]["mean"], s[metric]["mean"], s[metric]["sem"], n)
                for n, s in summary.items()
                if not s.get("exact", True)
            )
        )
        if mf:
            x, y, e, _ = zip(*mf)
            ax.errorbar(
                x,
                y,
                yerr=np.nan_to_num(e),
                marker="s",
                color="gray",
                label="mean-field (unverified)",
            )
            for xi, yi, _, n in mf:
                ax.annotate(
                    n.split("(")[-1].rstrip(")"),
                    (xi, yi),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 3),
                )
        for n, s in summary.items():
            if s.get("exact", True):
                ax.errorbar(
                    s["nfe"]["mean"],
                    s[metric]["mean"],
                    yerr=np.nan_to_num(s[metric]["sem"]),
                    marker="o",
                    linestyle="none",
                    label=n,
                )
        ax.set_xlabel("mean network calls per sequence")
        ax.set_ylabel(label)
        if metric == "ppl":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("Quality vs calls: exact ASSD vs unverified parallel decoding")
    return _save(fig, path)


def acceptance_per_round(records: list[dict], path: Path, bins: int = 20) -> Path:
    """Accepted proposals per round (histogram), and acceptance rate against decoding progress
    (the fraction of the sequence committed before the round), per speculative sampler."""
    by: dict[str, list[dict]] = {}
    for r in records:
        if r.get("exact", True) and r.get("acceptance_rate") is not None:
            by.setdefault(r["sampler"], []).append(r)
    fig, axes = _figure(2, (11, 4))
    edges = np.linspace(0, 1, bins + 1)
    for name, rows in by.items():
        acc = [a for r in rows for a in r["round_accepted"]]
        axes[0].hist(
            acc,
            bins=np.arange(max(acc, default=0) + 2) - 0.5,
            histtype="step",
            linewidth=1.5,
            label=name,
        )
        num, den = np.zeros(bins), np.zeros(bins)
        for r in rows:
            done = np.concatenate([[0], np.cumsum(r["round_committed"])[:-1]]) / max(
                r["n_generated"], 1
            )
            idx = np.clip(np.searchsorted(edges, done, side="right") - 1, 0, bins - 1)
            np.add.at(num, idx, r["round_accepted"])
            np.add.at(den, idx, r["round_drafted"])
        with np.errstate(all="ignore"):
            axes[1].plot(
                (edges[:-1] + edges[1:]) / 2, num / den, marker=".", label=name, linewidth=1
            )
    axes[0].set_xlabel("proposals accepted in a round")
    axes[0].set_ylabel("rounds")
    axes[1].set_xlabel("fraction of the sequence decoded before the round")
    axes[1].set_ylabel("accepted / verified proposals")
    axes[1].set_ylim(0, 1.05)
    if by:
        axes[0].legend(fontsize=7)
    fig.suptitle("Acceptance per round")
    return _save(fig, path)


def k_by_length(summary: dict, path: Path) -> Path:
    """Tokens per call of ASSD as a function of k, one line per sequence length."""
    fig, ax = _figure(1, (6, 4))
    Ls = sorted({c["L"] for c in summary.values()})
    for L in Ls:
        cells = sorted(
            (c["k"], c["tokens_per_call"]["mean"]) for c in summary.values() if c["L"] == L
        )
        ax.plot(*zip(*cells), marker="o", label=f"L={L}")
    ax.set_xlabel("k (proposals per round)")
    ax.set_ylabel("tokens per network call")
    ax.set_title("ASSD ablation: k x sequence length")
    ax.legend()
    return _save(fig, path)


def r_atol(summary: dict, path: Path) -> Path:
    """Acceptance and perplexity as lossy acceptance (r_atol) grows."""
    xs = sorted(summary, key=float)
    fig, axes = _figure(2, (10, 4))
    axes[0].plot(
        [float(x) for x in xs], [summary[x]["acceptance_rate"]["mean"] for x in xs], marker="o"
    )
    axes[0].set_ylabel("acceptance rate")
    axes[1].errorbar(
        [float(x) for x in xs],
        [summary[x]["ppl"]["mean"] for x in xs],
        yerr=np.nan_to_num([summary[x]["ppl"]["sem"] for x in xs]),
        marker="o",
    )
    axes[1].set_ylabel("generative perplexity")
    for ax in axes:  # the paper's values span 1e-4 .. 1e-1 and 0
        ax.set_xscale("symlog", linthresh=1e-4)
        ax.set_xlabel("r_atol (accept iff u < min(1, p/q + r_atol))")
    fig.suptitle("Lossy acceptance (r_atol > 0 is not exact)")
    return _save(fig, path)
