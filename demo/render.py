"""HTML of a sequence being infilled: one coloured span per token, plus legend and statistics."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from assd import RoundTrace

# kind -> (legend label, description)
KINDS = {
    "prompt": ("visible", "part of the input, given to the model"),
    "masked": ("masked", "still to be generated"),
    "accepted": ("accepted draft", "proposed in parallel, kept after exact verification"),
    "resampled": ("resampled", "draft rejected: drawn from the residual distribution"),
    "exact": (
        "exact draw",
        "drawn from the exact conditional (sequential step, bonus or last token)",
    ),
}

CSS = """
.assd-panel {border: 1px solid var(--border-color-primary, #d4d4d8); border-radius: 8px;
  padding: 10px 12px; background: var(--background-fill-primary, #fff);}
.assd-head {display: flex; flex-wrap: wrap; gap: 10px; align-items: baseline; margin-bottom: 8px;
  font-size: 0.95em;}
.assd-head .assd-name {font-weight: 600;}
.assd-head .assd-count {font-variant-numeric: tabular-nums; color: var(--body-text-color-subdued, #52525b);}
.assd-badge {border-radius: 999px; padding: 1px 8px; font-size: 0.8em; font-weight: 600;}
.assd-badge.running {background: #fef3c7; color: #92400e;}
.assd-badge.done {background: #dcfce7; color: #166534;}
.assd-badge.ready {background: #e4e4e7; color: #3f3f46;}
.assd-tokens {white-space: pre-wrap; word-break: break-word; line-height: 1.9;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em;}
.assd-tokens .t {border-radius: 3px;}
.t-masked {display: inline-block; min-width: 0.9em; height: 1.05em; vertical-align: -0.15em;
  margin: 0 1px; border: 1px dashed #a1a1aa; background: #f4f4f5;}
.t-accepted {background: #bbf7d0; color: #14532d;}
.t-resampled {background: #fed7aa; color: #7c2d12;}
.t-exact {background: #bfdbfe; color: #1e3a8a;}
.t-new {box-shadow: inset 0 -2px 0 currentColor; font-weight: 600;}
.t-ctrl {font-size: 0.75em; opacity: 0.7;}
.assd-legend {display: flex; flex-wrap: wrap; gap: 14px; font-size: 0.88em; align-items: center;}
.assd-legend .t {padding: 0 6px;}
.assd-stats table {border-collapse: collapse; width: 100%; font-size: 0.92em;}
.assd-stats td, .assd-stats th {padding: 3px 8px; border-bottom: 1px solid var(--border-color-primary, #e4e4e7);
  text-align: right; font-variant-numeric: tabular-nums;}
.assd-stats td:first-child, .assd-stats th:first-child {text-align: left;}
.assd-msg {border-radius: 8px; padding: 10px 12px; background: #fef2f2; color: #991b1b;
  border: 1px solid #fecaca;}
.assd-note {border-radius: 8px; padding: 8px 12px; background: #eff6ff; color: #1e3a8a;
  border: 1px solid #bfdbfe;}
"""


class Pieces:
    """Token id -> the text it adds, leading spaces included (cached per id)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        ids = tokenizer("a", add_special_tokens=False)["input_ids"]
        self.anchor = ids[-1] if ids else None
        self.base = self._decode([self.anchor]) if self.anchor is not None else ""
        self.cache: dict[int, str] = {}

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def __call__(self, i: int) -> str:
        if i not in self.cache:
            s = self._decode([i])
            if self.anchor is not None and i not in self.special:
                # Decoding after an anchor keeps a leading space that decoding alone may strip.
                both = self._decode([self.anchor, i])
                if both.startswith(self.base):
                    s = both[len(self.base) :]
            self.cache[i] = s
        return self.cache[i]


@dataclass
class TokenView:
    """What the page shows of one sequence: each position's token, kind, round and probabilities."""

    ids: list[int]
    kind: list[str]
    round: list[int] = field(default_factory=list)
    note: list[str] = field(default_factory=list)

    @classmethod
    def from_infill(cls, ids: list[int], mask: list[bool]) -> TokenView:
        L = len(ids)
        return cls(list(ids), ["masked" if m else "prompt" for m in mask], [0] * L, [""] * L)

    @property
    def n_masked(self) -> int:
        return sum(k == "masked" for k in self.kind)

    def apply(
        self, tokens: list[int], trace: RoundTrace, round: int, sequential: bool = False
    ) -> None:
        """Reveal the tokens one round committed, labelled by how they were obtained."""
        for j, pos in enumerate(trace.drafted):
            if pos in trace.tokens and j < len(trace.accepted):
                q, p = trace.p_draft[j], trace.p_oracle[j]
                self._set(pos, tokens, "exact" if sequential else "accepted", round,
                          f"p={p:.3f}" if sequential else f"draft q={q:.3f}, model p={p:.3f}")  # fmt: skip
        if trace.resampled is not None:
            self._set(trace.resampled, tokens, "resampled", round, "draft rejected, residual draw")
        if trace.exact is not None:
            self._set(trace.exact, tokens, "exact", round, "exact conditional")
        for pos in trace.tokens:  # anything else the round committed
            if self.kind[pos] == "masked":
                self._set(pos, tokens, "exact", round, "")

    def _set(self, pos: int, tokens: list[int], kind: str, round: int, note: str) -> None:
        self.ids[pos], self.kind[pos] = tokens[pos], kind
        self.round[pos], self.note[pos] = round, note


def tokens_html(view: TokenView, pieces: Pieces, latest: int = 0) -> str:
    """The sequence as coloured spans; tokens of round ``latest`` are underlined."""
    out = []
    for i, (t, kind) in enumerate(zip(view.ids, view.kind)):
        if kind == "masked":
            out.append(f'<span class="t t-masked" title="position {i}: masked"></span>')
            continue
        text = pieces(t)
        if kind == "prompt":
            out.append(_escape(text) if t not in pieces.special else "")
            continue
        cls = f"t t-{kind}" + (" t-new" if latest and view.round[i] == latest else "")
        label = KINDS[kind][0]
        note = f", {view.note[i]}" if view.note[i] else ""
        title = f"position {i}, round {view.round[i]}: {label}{note}"
        out.append(
            f'<span class="{cls}" title="{html.escape(title)}">{_escape(text) or "∅"}</span>'
        )
    return "".join(out)


def panel_html(
    title: str, view: TokenView, pieces: Pieces, status: str, counters: str, latest: int = 0
) -> str:
    """One live panel: header (name, counters, status badge) and the tokens."""
    badge = {"running": "running", "done": "done"}.get(status, "ready")
    return (
        '<div class="assd-panel"><div class="assd-head">'
        f'<span class="assd-name">{html.escape(title)}</span>'
        f'<span class="assd-count">{html.escape(counters)}</span>'
        f'<span class="assd-badge {badge}">{badge}</span></div>'
        f'<div class="assd-tokens">{tokens_html(view, pieces, latest)}</div></div>'
    )


def legend_html() -> str:
    items = [
        f'<span><span class="t t-{k}" title="{html.escape(desc)}">{"" if k == "masked" else label}</span>'
        f"{' ' + label if k == 'masked' else ''}</span>"
        for k, (label, desc) in KINDS.items()
        if k != "prompt"
    ]
    items.append('<span><span class="t t-accepted t-new">new</span> this round</span>')
    return '<div class="assd-legend">' + "".join(items) + "</div>"


def message_html(text: str, kind: str = "error") -> str:
    cls = "assd-msg" if kind == "error" else "assd-note"
    return f'<div class="{cls}" role="status">{html.escape(text)}</div>'


def _escape(text: str) -> str:
    """HTML-escape, showing control characters other than newline and tab visibly."""
    out = []
    for ch in text:
        if ch in "\n\t" or ord(ch) >= 32:
            out.append(html.escape(ch))
        else:
            out.append(f'<span class="t-ctrl">\\x{ord(ch):02x}</span>')
    return "".join(out)
