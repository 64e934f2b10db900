"""HTML of a sequence being infilled: one coloured span per token, plus legend and messages."""

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
        "drawn from the exact conditional (sequential step, bonus, last token)",
    ),
    "unverified": ("unverified", "committed in parallel without verification (not exact)"),
}
PENDING = "·"  # a byte of a character whose other bytes are still masked

CSS = """
.assd-intro p {margin: 0 0 4px 0;}
.assd-panel {border: 1px solid var(--border-color-primary, #d4d4d8); border-left: 5px solid var(--lane);
  border-radius: 8px; padding: 6px 10px; margin-bottom: 6px; background: var(--background-fill-primary, #fff);}
.assd-head {display: flex; flex-wrap: wrap; gap: 4px 10px; align-items: baseline; margin-bottom: 4px;
  font-size: 0.9em;}
.assd-head .assd-name {font-weight: 700; color: var(--lane);}
.assd-head .assd-count {font-variant-numeric: tabular-nums; color: var(--body-text-color-subdued, #52525b);}
.assd-badge {border-radius: 999px; padding: 0 8px; font-size: 0.8em; font-weight: 600;}
.assd-badge.running {background: #fef3c7; color: #92400e;}
.assd-badge.done {background: #dcfce7; color: #166534;}
.assd-badge.ready {background: #e4e4e7; color: #3f3f46;}
.assd-badge.stopped {background: #fee2e2; color: #991b1b;}
.assd-tokens {white-space: pre-wrap; word-break: break-word; line-height: 1.65; max-height: 9.5em;
  overflow-y: auto; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.86em;}
.assd-tokens .t {border-radius: 3px;}
.t-masked {display: inline-block; min-width: 0.9em; height: 1.05em; vertical-align: -0.15em;
  margin: 0 1px; border: 1px dashed #a1a1aa; background: #f4f4f5;}
.t-accepted {background: #bbf7d0; color: #14532d;}
.t-resampled {background: #fed7aa; color: #7c2d12;}
.t-exact {background: #bfdbfe; color: #1e3a8a;}
.t-unverified {background: #fecdd3; color: #881337;}
.t-new {box-shadow: inset 0 -2px 0 currentColor; font-weight: 600;}
.t-ctrl {font-size: 0.75em; opacity: 0.7;}
.assd-legend {display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 0.82em; align-items: center;}
.assd-legend .t {padding: 0 5px;}
.assd-stats table {border-collapse: collapse; width: 100%; font-size: 0.88em;}
.assd-stats td, .assd-stats th {padding: 2px 8px; border-bottom: 1px solid var(--border-color-primary, #e4e4e7);
  text-align: right; font-variant-numeric: tabular-nums;}
.assd-stats td:first-child, .assd-stats th:first-child {text-align: left;}
.assd-summary {font-size: 0.9em; margin: 4px 0;}
.assd-summary li {margin-bottom: 2px;}
.assd-msg {border-radius: 8px; padding: 8px 12px; background: #fef2f2; color: #991b1b;
  border: 1px solid #fecaca;}
.assd-note {border-radius: 8px; padding: 6px 12px; background: #eff6ff; color: #1e3a8a;
  border: 1px solid #bfdbfe; font-size: 0.9em;}
"""


class Pieces:
    """Token ids -> the text each adds, decoded on character boundaries.

    Byte-level tokenizers split a non-ASCII character over several tokens (``€`` is ``âĤ`` +
    ``¬``); decoding them one at a time gives replacement characters. :meth:`texts` decodes runs
    of consecutive known tokens together and shows a character at its last byte token.
    """

    def __init__(self, tokenizer, cache_size: int = 8192):
        self.tok = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        ids = tokenizer("a", add_special_tokens=False)["input_ids"]
        self.anchor = ids[-1] if ids else None
        self.base = self._decode([self.anchor]) if self.anchor is not None else ""
        self.cache: dict[tuple[int, ...], str] = {}
        self.cache_size = cache_size

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def __call__(self, *ids: int) -> str:
        """The text of these consecutive tokens, leading spaces included (cached)."""
        key = tuple(ids)
        s = self.cache.get(key)
        if s is None:
            s = self._decode(list(key))
            if self.anchor is not None and not self.special.intersection(key):
                # Decoding after an anchor keeps a leading space that decoding alone may strip.
                both = self._decode([self.anchor, *key])
                if both.startswith(self.base):
                    s = both[len(self.base) :]
            if len(self.cache) >= self.cache_size:
                self.cache.clear()  # bounded: a long-running server sees many token runs
            self.cache[key] = s
        return s

    def texts(self, ids: list[int], known: list[bool]) -> list[str | None]:
        """Text shown at each position: None where masked, "" for the leading bytes of a
        character that ends at a later token, PENDING where the character is incomplete."""
        out: list[str | None] = [None] * len(ids)
        run: list[int] = []  # positions whose bytes do not yet make whole characters
        for p, (t, k) in enumerate(zip(ids, known)):
            if not k:
                for q in run:
                    out[q] = PENDING
                run = []
                continue
            run.append(p)
            s = self(*(ids[q] for q in run))
            if not s.endswith("\ufffd") or t in self.special:
                for q in run[:-1]:
                    out[q] = ""
                out[p], run = s, []
            elif len(run) >= 4:  # no character is longer than 4 bytes: show the first as it is
                first = run.pop(0)
                out[first] = self(ids[first])
        for q in run:  # the end of the text: what the bytes really are
            out[q] = self(ids[q])
        return out


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

    def apply(self, tokens: list[int], trace: RoundTrace, round: int, lane: str = "assd") -> None:
        """Reveal the tokens one round committed, labelled by how they were obtained.

        lane: "assd" (drafts verified), "sequential" (exact draws), "unverified" (mean-field).
        """
        for j, pos in enumerate(trace.drafted):
            if pos in trace.tokens and j < len(trace.accepted):
                q, p = trace.p_draft[j], trace.p_oracle[j]
                if lane == "assd":
                    self._set(pos, tokens, "accepted", round, f"draft q={q:.3f}, model p={p:.3f}")
                elif lane == "sequential":
                    self._set(pos, tokens, "exact", round, f"p={p:.3f}")
                else:
                    self._set(pos, tokens, "unverified", round, f"marginal p={p:.3f}")
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
    texts = pieces.texts(view.ids, [k != "masked" for k in view.kind])
    out = []
    for i, (kind, text) in enumerate(zip(view.kind, texts)):
        if kind == "masked":
            out.append(f'<span class="t t-masked" title="position {i}: masked"></span>')
            continue
        if kind == "prompt":
            out.append(_escape(text) if view.ids[i] not in pieces.special else "")
            continue
        if text == "":  # a leading byte of a character shown at a later token
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
    title: str,
    view: TokenView,
    pieces: Pieces,
    status: str,
    counters: str,
    latest: int = 0,
    colour: str = "#71717a",
) -> str:
    """One live lane: header (name in the lane's colour, status badge, counters) and tokens."""
    badge = status if status in ("running", "done", "stopped") else "ready"
    return (
        f'<div class="assd-panel" style="--lane: {colour}"><div class="assd-head">'
        f'<span class="assd-name">{html.escape(title)}</span>'
        f'<span class="assd-badge {badge}">{badge}</span>'
        f'<span class="assd-count">{html.escape(counters)}</span></div>'
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
