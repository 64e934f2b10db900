"""Text with mask markup <-> model inputs, for prose and code.

The markup (one grammar, used by ``assd.infill``, the command line and the demo):

- ``[MASK]``: one token to generate; ``[MASK:n]``: n tokens (n >= 1, ASCII digits).
- ``[HIDE]original text[/HIDE]``: generate as many tokens as that text has; the text itself is
  hidden from the model and kept in :attr:`Infill.hidden` to compare with the fill. Spans cannot
  nest or contain other markup.
- ``\\[MASK``, ``\\[HIDE]``, ``\\[/HIDE]``: the literal text without the backslash.

Everything else is kept byte for byte: newlines and indentation round-trip for code (use a
tokenizer that keeps whitespace, e.g. byte-level BPE). One space right before a mask belongs to
the masked span when the tokenizer attaches spaces to the following word (GPT-2-style BPE,
SentencePiece): "the [MASK:2]" becomes "the" + 2 masked tokens, as "the mat." would be tokenized
"the", " mat", "."; leaving a lone " " token before the mask would make the model write a second one.

Requested lengths are checked while parsing, before anything of that size is allocated: a
``[MASK:100000000]`` fails at once with "too long".
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .model import Batch, make_batch
from .orders import ORDERS, explicit_order, n_visible, order_from_mask, shuffle_masked

MAX_TOKENS = 1 << 16  # the longest input parse_markup builds when no max_length is given
MARKUP_RE = re.compile(r"\\?\[(?:MASK|/?HIDE)\b")  # where markup (or an escaped literal) starts
DIGITS = "0123456789"  # ASCII only: str.isdigit() would also take "２" or "٣"
MAX_DIGITS = 9  # a count of 10 digits is over any length budget: reject it before int()
HELP = (
    "[MASK] = one token to fill, [MASK:n] = n tokens, [HIDE]text[/HIDE] = as many tokens as that "
    "text has (the original is kept for comparison), \\[MASK] = a literal [MASK]"
)


class MarkupError(ValueError):
    """Mask markup that does not parse, asks for nothing, or asks for too much."""


@dataclass
class Infill:
    """One sequence to infill: token ids and which positions to generate.

    ids:    [L] token ids (masked positions hold ``blank_id``)
    mask:   [L] True = generate this position
    hidden: the original text of each ``[HIDE]`` span, in order (to compare with the fill)
    """

    ids: list[int]
    mask: list[bool]
    blank_id: int = 0
    hidden: list[str] = field(default_factory=list)

    def __post_init__(self):
        if len(self.ids) != len(self.mask):
            raise ValueError(
                f"ids ({len(self.ids)}) and mask ({len(self.mask)}) must have the same length"
            )

    @property
    def n_masked(self) -> int:
        return sum(self.mask)

    @classmethod
    def from_parts(cls, tokenizer, prefix: str, n_masked: int, suffix: str = "") -> Infill:
        """prefix + n_masked tokens to generate + suffix (each part tokenized on its own)."""
        if not isinstance(n_masked, int) or n_masked < 1:
            raise ValueError(f"n_masked must be an int >= 1, got {n_masked!r}")
        blank = _blank_id(tokenizer)
        a, b = _encode(tokenizer, prefix), _encode(tokenizer, suffix)
        return cls(
            a + [blank] * n_masked + b,
            [False] * len(a) + [True] * n_masked + [False] * len(b),
            blank,
        )

    @classmethod
    def random(
        cls, tokenizer, text: str, rate: float, generator: torch.Generator | None = None
    ) -> Infill:
        """Tokenize ``text`` and mask a random fraction ``rate`` (the paper's setting)."""
        ids = _encode(tokenizer, text)
        if not ids:
            raise MarkupError("the text is empty: write some text to mask")
        blank = _blank_id(tokenizer)
        return cls(ids, [False] * len(ids), blank).mask_random(rate, generator)

    def mask_random(self, rate: float, generator: torch.Generator | None = None) -> Infill:
        """Also mask a random fraction ``rate`` of the visible tokens, the paper's way:
        ``int(V * (1 - rate)) + 1`` of the V visible tokens stay visible, chosen uniformly."""
        if not isinstance(rate, (int, float)) or not 0.0 < rate <= 1.0:
            raise ValueError(f"rate must lie in (0, 1], got {rate!r} (0.5 masks half the tokens)")
        visible = [i for i, m in enumerate(self.mask) if not m]
        n_keep = n_visible(len(visible), rate)
        perm = torch.randperm(len(visible), generator=generator).tolist()
        hide = {visible[j] for j in perm[n_keep:]}
        mask = [m or i in hide for i, m in enumerate(self.mask)]
        ids = [self.blank_id if m else t for t, m in zip(self.ids, mask)]
        return Infill(ids, mask, self.blank_id, list(self.hidden))


COMPILED_WIDTH_STEP = 64  # batch widths for models with compiled rounds (few shapes to compile)
MAX_PAD_TO = 4096  # pad_to beyond this would only allocate padding


def width_step(model) -> int:
    """The ``pad_to`` for batches of ``model``: COMPILED_WIDTH_STEP when its rounds are
    compiled (each batch width compiles once), else 1 (no padding)."""
    return COMPILED_WIDTH_STEP if getattr(model, "compile_rounds", False) else 1


def parse_markup(
    text: str, tokenizer, max_length: int | None = None, *, require_mask: bool = True
) -> Infill:
    """Text with ``[MASK]`` / ``[MASK:n]`` / ``[HIDE]..[/HIDE]`` markup -> :class:`Infill`.

    max_length: the most tokens (visible + masked) the result may have, e.g. the model's
    ``max_length``; checked while parsing, so an absurd request fails before any allocation.
    require_mask: False accepts text without markup (e.g. to mask it with ``mask_random``).
    Raises :class:`MarkupError` (a ValueError) with the line and column of what is wrong.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    limit = _check_max_length(max_length)
    if not text.strip():
        raise MarkupError("the input is empty: write some text and mark what to fill with [MASK:n]")
    blank = _blank_id(tokenizer)
    joins = _space_joins_next(tokenizer)
    ids: list[int] = []
    mask: list[bool] = []
    hidden: list[str] = []
    for visible, value, pos in _events(text):
        absorb = joins and value is not None and visible.endswith(" ")
        if absorb:
            visible = visible[:-1]  # the space belongs to the masked span (module docstring)
        new = _encode(tokenizer, visible)
        _check_budget(len(ids) + len(new), limit, pos)
        ids += new
        mask += [False] * len(new)
        if value is None:  # the text after the last markup
            break
        if isinstance(value, str):  # [HIDE]original[/HIDE]
            n = max(1, len(_encode(tokenizer, " " * absorb + value)))
            hidden.append(value)
        else:
            n = value
        _check_budget(len(ids) + n, limit, pos, text)
        ids += [blank] * n
        mask += [True] * n
    if require_mask and not any(mask):
        raise MarkupError(
            "nothing to fill: mark at least one span with [MASK], [MASK:n] or [HIDE]text[/HIDE]"
        )
    return Infill(ids, mask, blank, hidden)


def mask_span(tokenizer, text: str, start: int, end: int) -> str:
    """Replace the characters text[start:end] with ``[MASK:n]``, n = the span's token count
    (counted as :func:`parse_markup` will tokenize it, with the space before it if any)."""
    if not 0 <= start < end <= len(text):
        raise ValueError(
            f"span [{start}, {end}) must be non-empty and lie inside the text (length {len(text)})"
        )
    span = text[start:end]
    if _space_joins_next(tokenizer) and text[:start].endswith(" "):
        span = " " + span
    n = max(1, len(_encode(tokenizer, span)))
    return text[:start] + f"[MASK:{n}]" + text[end:]


def infills_to_batch(
    infills: Sequence[Infill],
    order: str | Sequence[Sequence[int]] = "left-to-right",
    generator: torch.Generator | None = None,
    pad_id: int | None = None,
    pad_to: int = 1,
    max_length: int | None = None,
) -> Batch:
    """Stack infills (ragged lengths are padded at the end) into a :class:`Batch`.

    order: "left-to-right" (the masked positions in reading order, the paper's convention),
    "random" (a uniformly random order over each row's masked positions), or one explicit list of
    masked positions per row. pad_to: round the batch's width up to a multiple of this (never
    past ``max_length``), so that compiled rounds, which compile once per shape, see few shapes;
    padding is never generated.
    """
    if not infills:
        raise ValueError("infills must hold at least one Infill")
    if not isinstance(pad_to, int) or not 1 <= pad_to <= MAX_PAD_TO:
        raise ValueError(f"pad_to must be an int in [1, {MAX_PAD_TO}], got {pad_to!r}")
    L = max(len(f.ids) for f in infills)
    width = max(L, min(-(-L // pad_to) * pad_to, max_length or L * pad_to))
    B = len(infills)
    fill = infills[0].blank_id if pad_id is None else pad_id
    tokens = torch.full((B, L), fill, dtype=torch.long)
    mask = torch.ones(B, L, dtype=torch.bool)  # padding counts as masked: it takes the last ranks
    for b, f in enumerate(infills):
        tokens[b, : len(f.ids)] = torch.tensor(f.ids, dtype=torch.long)
        mask[b, : len(f.ids)] = torch.tensor(f.mask, dtype=torch.bool)
    sigma, n_prompt = order_from_mask(mask)
    if isinstance(order, str) and order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS} or explicit position lists, got {order!r}")
    length = torch.tensor([len(f.ids) for f in infills], dtype=torch.long)
    if isinstance(order, str):
        if order == "random":
            n_masked = torch.tensor([f.n_masked for f in infills])
            sigma = shuffle_masked(sigma, n_prompt, n_masked, generator)
    else:
        if len(order) != B:
            raise ValueError(
                f"order must give one position list per infill ({B}), got {len(order)}"
            )
        sigma = explicit_order(mask, order, length)[0]
    if width > L:  # padded after the orders are drawn: the same orders (and draws) as unpadded
        extra = torch.arange(L, width, dtype=torch.long).expand(B, -1)  # the last ranks
        tokens = torch.cat([tokens, torch.full_like(extra, fill)], 1)
        sigma = torch.cat([sigma, extra], 1)
    return make_batch(tokens, sigma, n_prompt, length)


def decode(tokenizer, tokens: Sequence[int], length: int | None = None) -> str:
    """Token ids -> text, keeping whitespace exactly (no clean-up of spaces)."""
    ids = list(tokens)[:length]
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _events(text: str) -> Iterator[tuple[str, int | str | None, int]]:
    """Scan the markup: yields (visible text before it, value, position) for every mask, where
    value is a token count ([MASK:n]) or the hidden original ([HIDE]), then (tail, None, len)."""
    visible: list[str] = []  # pieces of the visible text since the last mask
    hide_at: int | None = None  # position of an open [HIDE]
    hide: list[str] = []  # pieces of the hidden text
    i = 0
    for m in MARKUP_RE.finditer(text):
        s = m.start()
        if s < i:  # inside markup already consumed
            continue
        (hide if hide_at is not None else visible).append(text[i:s])
        word = m.group()
        if word.startswith("\\"):  # an escaped literal: drop the backslash
            (hide if hide_at is not None else visible).append(word[1:])
            i = m.end()
            continue
        if word == "[MASK":
            n, i = _mask_count(text, s, m.end())
            if hide_at is not None:
                raise _nested(text, s)
            yield "".join(visible), n, s
            visible = []
        elif word == "[HIDE":
            if text[m.end() : m.end() + 1] != "]":
                raise _malformed(text, s, "write [HIDE]text[/HIDE]")
            if hide_at is not None:
                raise _nested(text, s)
            hide_at, hide, i = s, [], m.end() + 1
        else:  # "[/HIDE"
            if text[m.end() : m.end() + 1] != "]":
                raise _malformed(text, s, "write [HIDE]text[/HIDE]")
            if hide_at is None:
                raise MarkupError(
                    f"a [/HIDE] at {_where(text, s)} has no matching [HIDE] before it: "
                    "write [HIDE]text[/HIDE]"
                )
            original = "".join(hide)
            if not original:
                raise MarkupError(
                    f"an empty [HIDE][/HIDE] at {_where(text, hide_at)}: put the text to hide "
                    "between the tags"
                )
            yield "".join(visible), original, hide_at
            visible, hide_at, i = [], None, m.end() + 1
    if hide_at is not None:
        raise MarkupError(
            f"unbalanced [HIDE] at {_where(text, hide_at)}: every [HIDE] needs a matching [/HIDE]"
        )
    visible.append(text[i:])
    yield "".join(visible), None, len(text)


def _mask_count(text: str, start: int, j: int) -> tuple[int, int]:
    """Parse what follows "[MASK" at j: -> (token count, end of the markup)."""
    if text[j : j + 1] == "]":
        return 1, j + 1
    if text[j : j + 1] != ":":
        raise _malformed(text, start)
    k = j + 1
    while k < len(text) and text[k] in DIGITS and k - j <= MAX_DIGITS + 1:
        k += 1
    digits = text[j + 1 : k]
    if k - j - 1 > MAX_DIGITS:
        raise MarkupError(
            f"[MASK:{digits}...] at {_where(text, start)} asks for far too many tokens: "
            "the text is too long for any model"
        )
    if not digits or text[k : k + 1] != "]":
        if text[k : k + 1].isdigit():
            raise _malformed(text, start, "write the count in ASCII digits 0-9, e.g. [MASK:12]")
        raise _malformed(text, start)
    n = int(digits)
    if n < 1:
        raise MarkupError(
            f"[MASK:{digits}] at {_where(text, start)} asks for no tokens: use n >= 1"
        )
    return n, k + 1


def _check_max_length(max_length) -> int:
    if max_length is None:
        return MAX_TOKENS
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise TypeError(f"max_length must be an int or None, got {type(max_length).__name__}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    return min(max_length, MAX_TOKENS)


def _check_budget(total: int, limit: int, pos: int, text: str | None = None) -> None:
    if total > limit:
        where = f" (at the markup at {_where(text, pos)})" if text is not None else ""
        most = "the model takes" if limit < MAX_TOKENS else "parse_markup builds"
        raise MarkupError(
            f"the text is too long: more than {limit} tokens (visible + masked){where}, and "
            f"{most} at most {limit}: shorten the text or mask fewer tokens"
        )


def _malformed(text: str, start: int, fix: str = "") -> MarkupError:
    snippet = text[start : start + 16] + ("..." if len(text) > start + 16 else "")
    fix = fix or "write [MASK] for one token or [MASK:n] with n >= 1 (\\[MASK] for a literal)"
    return MarkupError(f"malformed mask markup {snippet!r} at {_where(text, start)}: {fix}")


def _nested(text: str, start: int) -> MarkupError:
    return MarkupError(
        f"markup inside a [HIDE] span at {_where(text, start)}: hidden text cannot contain "
        "[MASK] or another [HIDE] (close it with [/HIDE] first)"
    )


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    return f"line {line}, column {pos - text.rfind(chr(10), 0, pos)}"


def _space_joins_next(tokenizer) -> bool:
    """Does the tokenizer attach a space to the word after it ("a b" -> "a", " b")?"""
    return _encode(tokenizer, "a b") == _encode(tokenizer, "a") + _encode(tokenizer, " b")


def _encode(tokenizer, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _blank_id(tokenizer) -> int:
    mid = getattr(tokenizer, "mask_token_id", None)
    if mid is None:
        raise ValueError(
            "the tokenizer has no mask token: AS-ARM tokenizers need one (e.g. '<mask>')"
        )
    return int(mid)
