"""Statistics of a run: calls vs tokens, timing, likelihood; as a table, honest sentences, a plot."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field, replace

import assd

# lane kind -> colour of its panel border, name and plot line
COLOURS = {"assd": "#16a34a", "sequential": "#2563eb", "unverified": "#e11d48"}


@dataclass
class RunStats:
    """Statistics of one lane (a sampler on one input), updated every round.

    lane: "assd" (an exact speculative sampler), "sequential" or "unverified" (mean-field).
    history: (wall-clock s, calls, tokens) after every round, for the plot.
    """

    name: str
    masked: int
    lane: str = "assd"
    k: int | None = None
    nfe: int = 0
    rounds: int = 0
    generated: int = 0
    drafted: int = 0
    accepted: int = 0
    wall_s: float = 0.0
    log_likelihood: float | None = None
    done: bool = False
    history: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def sequential(self) -> bool:
        return self.lane == "sequential"

    @property
    def exact(self) -> bool:
        return self.lane != "unverified"

    @property
    def colour(self) -> str:
        return COLOURS[self.lane]

    @property
    def tokens_per_call(self) -> float:
        return self.generated / self.nfe if self.nfe else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.generated / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted / verified proposals (nan when nothing was verified)."""
        return self.accepted / self.drafted if self.drafted and self.lane == "assd" else math.nan

    @property
    def bound_ok(self) -> bool:
        """The exact samplers' promise: never more network calls than tokens."""
        return self.nfe <= max(self.generated, 1)

    def snapshot(self) -> RunStats:
        """A copy that later rounds do not change (frames keep what they showed)."""
        return replace(self, history=list(self.history))

    def add(self, trace: assd.RoundTrace) -> None:
        self.drafted += len(trace.drafted)
        self.accepted += len(trace.accepted)

    def counters(self) -> str:
        """The one-line statistics in the lane's header."""
        parts = [f"{self.nfe} calls", f"{self.generated}/{self.masked} tokens"]
        if self.wall_s > 0:
            parts += [f"{self.wall_s:.2f} s", f"{self.tokens_per_s:,.0f} tokens/s"]
        if self.log_likelihood is not None:
            parts.append(f"log p = {self.log_likelihood:.1f}")
        return " · ".join(parts)


def _fmt(x: float | None, spec: str, none: str = "–") -> str:
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def stats_html(stats: list[RunStats], hidden: list[str] | None = None) -> str:
    """A table with one column per lane, then the summary sentences and hidden originals."""
    if not stats:
        return ""
    head = "".join(f'<th style="color: {s.colour}">{html.escape(s.name)}</th>' for s in stats)
    rows = [
        ("exact (samples the model's joint)", ["yes" if s.exact else "no" for s in stats]),
        ("network calls (NFE)", [str(s.nfe) for s in stats]),
        ("tokens generated", [f"{s.generated}/{s.masked}" for s in stats]),
        ("calls ≤ tokens", [_bound(s) for s in stats]),
        ("tokens per call", [_fmt(s.tokens_per_call, ".2f") for s in stats]),
        ("acceptance rate", [_fmt(s.acceptance_rate * 100, ".0f", "–") + _pct(s) for s in stats]),
        ("wall-clock", [f"{s.wall_s:.3f} s" for s in stats]),
        ("tokens / s", [f"{s.tokens_per_s:,.0f}" for s in stats]),
        ("log-likelihood (nats)", [_fmt(s.log_likelihood, ".1f") for s in stats]),
    ]
    body = "".join(
        f"<tr><td>{name}</td>" + "".join(f"<td>{html.escape(v)}</td>" for v in vals) + "</tr>"
        for name, vals in rows
    )
    parts = ['<div class="assd-stats">']
    lines = summary_lines(stats)
    if lines:
        items = "".join(f"<li>{html.escape(x)}</li>" for x in lines)
        parts.append(f'<ul class="assd-summary">{items}</ul>')
    parts.append(f"<table><tr><th></th>{head}</tr>{body}</table>")
    for h in hidden or []:
        parts.append(f'<p class="assd-summary">Hidden original: <code>{html.escape(h)}</code></p>')
    parts.append("</div>")
    return "".join(parts)


def _pct(s: RunStats) -> str:
    return " %" if not math.isnan(s.acceptance_rate) else ""


def _bound(s: RunStats) -> str:
    if not s.exact:
        return "–"
    return ("✓ " if s.bound_ok else "✗ ") + f"{s.nfe} {'≤' if s.bound_ok else '>'} {s.generated}"


def times(x: float) -> str:
    """A ratio as people say it: 2.4x, 1.15x, 0.82x."""
    return f"{x:.2f}x" if x < 1.995 else f"{x:.1f}x"


def summary_lines(stats: list[RunStats]) -> list[str]:
    """Calls saved, speed measured on this input and why, and the quality of the result."""
    done = [s for s in stats if s.done and s.nfe]
    fast = next((s for s in done if s.lane == "assd"), None)
    seq = next((s for s in done if s.lane == "sequential"), None)
    loose = next((s for s in done if s.lane == "unverified"), None)
    out = []
    if fast is not None:
        out.append(calls_sentence(fast))
        if not fast.bound_ok:
            out.append(
                f"{fast.name} spent more calls than tokens: with k = {fast.k} every round makes a "
                "draft call and a verify call for about one token. Use k ≥ 2 (the page's minimum)."
            )
        if seq is not None and fast.wall_s > 0 and seq.wall_s > 0:
            out.append(speed_sentence(fast, seq))
    if loose is not None:
        ref = fast or seq
        text = (
            f"{loose.name} commits {loose.tokens_per_call:.1f} tokens per call without checking "
            f"them ({loose.nfe} calls, as a diffusion LM does): its text does not follow the "
            "model's distribution."
        )
        if ref is not None and ref.log_likelihood is not None and loose.log_likelihood is not None:
            gap = ref.log_likelihood - loose.log_likelihood
            text += (
                f" The model's log-likelihood of its result: {loose.log_likelihood:.1f} nats, vs "
                f"{ref.log_likelihood:.1f} for {ref.name} ({_gap(gap)}; one sample each: try a few "
                "seeds)."
            )
        out.append(text)
    return out


def calls_sentence(s: RunStats) -> str:
    """Calls against sequential decoding, which always takes one call per token."""
    r = s.generated / s.nfe
    if abs(r - 1) < 0.005:
        rel = "as many calls as sequential decoding"
    elif r > 1:
        rel = f"{times(r)} fewer calls than sequential decoding"
    else:
        rel = f"{times(1 / r)} more calls than sequential decoding"
    return f"{s.name}: {s.generated} tokens in {s.nfe} network calls, {rel} ({s.generated} calls)."


def speed_sentence(fast: RunStats, seq: RunStats) -> str:
    """Measured speed against sequential, with the reason: calls saved vs cost per call."""
    speed = seq.wall_s / fast.wall_s
    saved = seq.nfe / fast.nfe
    cost = (fast.wall_s / fast.nfe) / (seq.wall_s / seq.nfe)  # speed = saved / cost
    head = f"{times(speed)} the speed of sequential on this input ({fast.wall_s:.3f} s vs {seq.wall_s:.3f} s)"
    why = (
        f"it makes {times(saved)} fewer calls, and each of its calls costs {times(cost)} a "
        "sequential call (one call scores several positions: on a CPU that costs more, on a "
        "GPU it barely does)"
    )
    if speed >= 1.05:
        return f"{head}: faster, because {why}."
    if speed <= 0.95:
        return f"{head}: slower here, because {why}."
    return f"{head}: about as fast, because {why}."


def _gap(gap: float) -> str:
    if gap > 0.05:
        return f"{gap:.1f} nats lower: {likelier(gap)} times less likely"
    if gap < -0.05:
        return f"{-gap:.1f} nats higher on this sample"
    return "about the same on this sample"


def likelier(gap: float) -> str:
    """e^gap in words: 'about 3.2', 'about 150', 'about 10^13'."""
    if gap < 2.3:
        return f"about {math.exp(gap):.1f}"
    if gap < 6.9:
        return f"about {math.exp(gap):.0f}"
    return f"about 10^{gap / math.log(10):.0f}"


def progress_plot(stats: list[RunStats]):
    """Tokens generated against network calls and against wall-clock, one line per lane in the
    lane's colour; None while nothing ran."""
    lanes = [s for s in stats if s.history]
    if not lanes:
        return None
    from matplotlib.figure import Figure  # not pyplot: no global figure registry to leak

    fig = Figure(figsize=(7.5, 2.4), dpi=100, layout="constrained")
    by_calls, by_time = fig.subplots(1, 2, sharey=True)
    for s in lanes:
        t = [0.0] + [h[0] * 1000 for h in s.history]
        c = [0] + [h[1] for h in s.history]
        n = [0] + [h[2] for h in s.history]
        by_calls.plot(c, n, drawstyle="steps-post", color=s.colour, label=s.name, lw=2)
        by_time.plot(t, n, drawstyle="steps-post", color=s.colour, label=s.name, lw=2)
    by_calls.set_xlabel("network calls")
    by_calls.set_ylabel("tokens generated")
    by_time.set_xlabel("wall-clock (ms)")
    for ax in (by_calls, by_time):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    by_time.legend(fontsize=7, frameon=False, loc="lower right")
    return fig
