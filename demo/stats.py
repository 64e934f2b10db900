"""Statistics of a run: calls vs tokens, rounds, acceptance, timing; as a table and a plot."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field, replace

import assd


@dataclass
class RunStats:
    """Statistics of one sampler on one input, updated every round."""

    name: str
    masked: int
    sequential: bool = False
    nfe: int = 0
    rounds: int = 0
    generated: int = 0
    drafted: int = 0
    accepted: int = 0
    per_round: list[tuple[int, int]] = field(default_factory=list)  # (accepted drafts, other)
    wall_s: float = 0.0
    log_likelihood: float | None = None
    done: bool = False

    @property
    def tokens_per_call(self) -> float:
        return self.generated / self.nfe if self.nfe else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted / verified proposals (nan when nothing was verified, e.g. sequential)."""
        return self.accepted / self.drafted if self.drafted and not self.sequential else math.nan

    def snapshot(self) -> RunStats:
        """A copy that later rounds do not change (frames keep what they showed)."""
        return replace(self, per_round=list(self.per_round))

    def add(self, trace: assd.RoundTrace) -> None:
        self.drafted += len(trace.drafted)
        self.accepted += len(trace.accepted)
        acc = 0 if self.sequential else len(trace.accepted)
        self.per_round.append((acc, len(trace.tokens) - acc))


def _fmt(x: float | None, spec: str, none: str = "–") -> str:
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def stats_html(stats: list[RunStats], hidden: list[str] | None = None) -> str:
    """A table with one column per sampler and a one-line summary of the gain."""
    if not stats:
        return ""
    head = "".join(f"<th>{html.escape(s.name)}</th>" for s in stats)
    rows = [
        ("masked tokens", [str(s.masked) for s in stats]),
        ("tokens generated", [f"{s.generated}/{s.masked}" for s in stats]),
        ("network calls (NFE)", [str(s.nfe) for s in stats]),
        ("bound NFE ≤ tokens", [("✓ " if s.nfe <= max(s.generated, 1) else "✗ ") + f"{s.nfe} ≤ {s.generated}" for s in stats]),
        ("rounds", [str(s.rounds) for s in stats]),
        ("tokens per call", [_fmt(s.tokens_per_call, ".2f") for s in stats]),
        ("acceptance rate", [_fmt(s.acceptance_rate * 100, ".0f") + ("" if s.sequential or not s.drafted else " %") for s in stats]),
        ("wall-clock", [f"{s.wall_s:.2f} s" for s in stats]),
    ]  # fmt: skip
    if any(s.log_likelihood is not None for s in stats):
        rows.append(
            ("exact log-likelihood", [_fmt(s.log_likelihood, ".2f") + " nats" if s.log_likelihood is not None else "–" for s in stats])
        )  # fmt: skip
    body = "".join(
        f"<tr><td>{name}</td>" + "".join(f"<td>{html.escape(v)}</td>" for v in vals) + "</tr>"
        for name, vals in rows
    )
    parts = [f'<div class="assd-stats"><table><tr><th></th>{head}</tr>{body}</table>']
    summary = summary_text(stats)
    if summary:
        parts.append(f'<p class="assd-summary">{html.escape(summary)}</p>')
    for h in hidden or []:
        parts.append(f'<p class="assd-summary">Hidden original: <code>{html.escape(h)}</code></p>')
    parts.append("</div>")
    return "".join(parts)


def summary_text(stats: list[RunStats]) -> str:
    """Calls saved against sequential decoding (always one call per token) and, when both ran
    on the same input, the measured wall-clock speed-up."""
    fast = [s for s in stats if not s.sequential and s.done and s.nfe]
    if not fast:
        return ""
    s = fast[0]
    out = (
        f"{s.name} filled {s.generated} tokens with {s.nfe} network calls: "
        f"{s.generated / s.nfe:.2f}x fewer calls than sequential decoding ({s.generated} calls)."
    )
    seq = [t for t in stats if t.sequential and t.done]
    if seq and s.wall_s > 0:
        out += (
            f" Wall-clock speed-up over sequential, measured on this input: "
            f"{seq[0].wall_s / s.wall_s:.2f}x."
        )
    return out


def rounds_plot(stats: list[RunStats]):
    """Bar chart of tokens committed per round (accepted drafts vs other draws); None if empty."""
    lanes = [s for s in stats if not s.sequential and s.per_round]
    if not lanes:
        return None
    from matplotlib.figure import Figure  # not pyplot: no global figure registry to leak

    fig = Figure(figsize=(6, 2.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    s = lanes[0]
    x = list(range(1, len(s.per_round) + 1))
    acc = [a for a, _ in s.per_round]
    other = [o for _, o in s.per_round]
    w = 0.6 if len(x) < 8 else 0.8
    ax.bar(x, acc, width=w, color="#4ade80", label="accepted drafts")
    ax.bar(x, other, width=w, bottom=acc, color="#fb923c", label="resampled / exact draw")
    ax.set_ylim(0, max(a + o for a, o in s.per_round) * 1.4 + 0.5)
    ax.set_xlabel("round")
    ax.set_ylabel("tokens")
    ax.set_title(f"{s.name}: tokens committed per round", fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, frameon=False, loc="upper right", ncols=2)
    return fig
