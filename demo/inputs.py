"""From what the user typed to an ``assd.text.Infill``, or a readable reason why not.

The markup is the library's (``assd.text``: ``[MASK]``, ``[MASK:n]``, ``[HIDE]text[/HIDE]``,
escapes); the demo adds only a random fraction of the visible tokens (the paper's setting), masked
with ``Infill.mask_random``, and "Mask selection", which wraps the selection in ``[HIDE]``.
"""

from __future__ import annotations

import torch

from assd.text import HELP, Infill, MarkupError, parse_markup

from .models import DemoError

MASK_MODES = ("markup", "random")
MARKUP_HELP = (
    "`[MASK]` = one token to fill, `[MASK:n]` = n tokens, `[HIDE]text[/HIDE]` = as many tokens "
    "as that text has (the original is kept for comparison), `\\[MASK]` = a literal [MASK]."
)


def hide_selection(text: str, start: int | None, end: int | None) -> str:
    """Wrap the selected characters in ``[HIDE]...[/HIDE]``: they are masked with their token
    count and the original stays visible for comparison. Spaces at the edges stay outside."""
    if start is None or end is None or start == end:
        raise DemoError("Select some text in the input box first, then press 'Mask selection'.")
    start, end = sorted((int(start), int(end)))
    if not 0 <= start < end <= len(text):
        raise DemoError("The selection lies outside the text: select it again.")
    sel = text[start:end]
    if not sel.strip():
        raise DemoError("The selection is only whitespace: select some words.")
    if any(tag in sel for tag in ("[HIDE]", "[/HIDE]", "[MASK")):
        raise DemoError("The selection already contains markup: select plain text.")
    lead, trail = len(sel) - len(sel.lstrip()), len(sel) - len(sel.rstrip())
    core = sel.strip()
    return f"{text[: start + lead]}[HIDE]{core}[/HIDE]{text[end - trail :]}"


def build_infill(
    text: str | None,
    tokenizer,
    mode: str = "markup",
    rate: float = 0.5,
    generator: torch.Generator | None = None,
    max_length: int | None = None,
) -> Infill:
    """Parse the input (the originals of ``[HIDE]`` spans are in ``Infill.hidden``)."""
    if mode not in MASK_MODES:
        raise DemoError(f"Unknown masking mode {mode!r}: choose one of {', '.join(MASK_MODES)}.")
    if text is None or not text.strip():
        raise DemoError("The input is empty: write or paste some text, or pick an example.")
    try:
        inf = parse_markup(text, tokenizer, max_length, require_mask=False)
        if mode == "random":
            inf = inf.mask_random(rate, generator)
    except MarkupError as e:
        raise DemoError(f"{_sentence(e)} Markup: {HELP}.") from e
    except ValueError as e:
        raise DemoError(_sentence(e)) from e
    if not any(inf.mask):
        raise DemoError(
            "Nothing to fill: mark a span with [MASK:n] or [HIDE]...[/HIDE], select text and "
            "press 'Mask selection', or switch the masking to random."
            if mode == "markup"
            else "Nothing to fill: the text is too short to mask at this rate."
        )
    if all(inf.mask):
        raise DemoError(
            "Everything is masked: the model needs some visible text to condition on. "
            "Mask less (or lower the random rate)."
        )
    return inf


def _sentence(e: Exception) -> str:
    msg = str(e).strip() or type(e).__name__
    msg = msg[0].upper() + msg[1:]
    return msg if msg.endswith((".", "!", "?")) else msg + "."
