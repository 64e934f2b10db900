"""From what the user typed to an ``assd.text.Infill``, or a readable reason why not.

Three ways to mark what to fill:
- the library's markup: ``[MASK]`` is one token, ``[MASK:n]`` is n tokens;
- the demo's ``[HIDE]original text[/HIDE]``: masked with the span's token count, so examples
  work with any tokenizer and the original stays visible for comparison;
- a random fraction of the tokens (the paper's setting), on top of any markup.
"""

from __future__ import annotations

import re

import torch

from assd.text import Infill, MarkupError, mask_span, parse_markup

from .models import DemoError

HIDE_RE = re.compile(r"\[HIDE\](.*?)\[/HIDE\]", re.DOTALL)
MASK_MODES = ("markup", "random")
HELP = (
    "`[MASK]` = one token to fill, `[MASK:n]` = n tokens, `[HIDE]text[/HIDE]` = fill as many tokens "
    "as that text has (the original is kept for comparison), `\\[MASK]` = a literal [MASK]."
)


def expand_hides(text: str, tokenizer) -> tuple[str, list[str]]:
    """Replace every ``[HIDE]...[/HIDE]`` with ``[MASK:n]``; also return the hidden originals."""
    hidden: list[str] = []
    out, last = [], 0
    for m in HIDE_RE.finditer(text):
        if not m.group(1):
            raise DemoError("An empty [HIDE][/HIDE]: put the text to hide between the tags.")
        span = m.group(1)
        out += [text[last : m.start()], mask_span(tokenizer, span, 0, len(span))]  # "[MASK:n]"
        hidden.append(span)
        last = m.end()
    out.append(text[last:])
    rest = "".join(out)
    if "[HIDE]" in rest or "[/HIDE]" in rest:
        raise DemoError("Unbalanced [HIDE] markup: every [HIDE] needs a matching [/HIDE].")
    return rest, hidden


def mask_selection(text: str, start: int | None, end: int | None, tokenizer) -> str:
    """Replace the selected characters with ``[MASK:n]`` keeping their token count."""
    if start is None or end is None or start == end:
        raise DemoError("Select some text in the input box first, then press 'Mask selection'.")
    start, end = sorted((int(start), int(end)))
    try:
        return mask_span(tokenizer, text, start, end)
    except ValueError as e:
        raise DemoError(f"Cannot mask that selection: {e}.") from e


def build_infill(
    text: str | None,
    tokenizer,
    mode: str = "markup",
    rate: float = 0.5,
    generator: torch.Generator | None = None,
    max_length: int | None = None,
) -> tuple[Infill, list[str]]:
    """Parse the input. Returns the infill and the originals of any [HIDE] spans."""
    if mode not in MASK_MODES:
        raise DemoError(f"Unknown masking mode {mode!r}: choose one of {', '.join(MASK_MODES)}.")
    if text is None or not text.strip():
        raise DemoError("The input is empty: write or paste some text, or pick an example below.")
    expanded, hidden = expand_hides(text, tokenizer)
    has_markup = bool(hidden) or "[MASK" in expanded.replace("\\[MASK", "")
    if mode == "markup" and not has_markup:
        raise DemoError(
            "Nothing to fill: mark a span with [MASK:n] or [HIDE]...[/HIDE], select text and press "
            "'Mask selection', or switch the masking to random."
        )
    try:
        if mode == "markup":
            inf = parse_markup(expanded, tokenizer)
        elif not has_markup:
            inf = Infill.random(tokenizer, expanded, rate, generator)
        else:
            inf = random_extra(parse_markup(expanded, tokenizer), rate, generator)
    except MarkupError as e:
        raise DemoError(f"{_sentence(e)} Markup: {HELP}") from e
    except ValueError as e:
        raise DemoError(_sentence(e)) from e
    if not any(inf.mask):
        raise DemoError("Nothing to fill: the text is too short to mask at this rate.")
    if all(inf.mask):
        raise DemoError(
            "Everything is masked: the model needs some visible text to condition on. "
            "Mask less (or lower the random rate)."
        )
    if max_length is not None and len(inf.ids) > max_length:
        raise DemoError(
            f"The input is {len(inf.ids)} tokens long (visible + masked) but this model takes at "
            f"most {max_length}: shorten the text or mask fewer tokens."
        )
    return inf, hidden


def random_extra(inf: Infill, rate: float, generator: torch.Generator | None) -> Infill:
    """Also mask a fraction ``rate`` of the visible tokens (at least one stays visible)."""
    if not 0.0 < rate <= 1.0:
        raise DemoError(f"The random masking rate must lie in (0, 100] %, got {rate * 100:g} %.")
    visible = [i for i, m in enumerate(inf.mask) if not m]
    n_keep = min(len(visible), int(len(visible) * (1 - rate)) + 1)
    perm = torch.randperm(len(visible), generator=generator).tolist()
    hide = {visible[j] for j in perm[n_keep:]}
    mask = [m or i in hide for i, m in enumerate(inf.mask)]
    ids = [inf.blank_id if m else t for t, m in zip(inf.ids, mask)]
    return Infill(ids, mask, inf.blank_id)


def _sentence(e: Exception) -> str:
    msg = str(e).strip() or type(e).__name__
    msg = msg[0].upper() + msg[1:]
    return msg if msg.endswith((".", "!", "?")) else msg + "."
