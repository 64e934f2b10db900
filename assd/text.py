"""Text with mask markup <-> model inputs, for prose and code.

Markup: ``[MASK]`` stands for one token to generate, ``[MASK:n]`` for n tokens (n >= 1).
Write ``\\[MASK]`` for a literal "[MASK]". Everything else is kept byte for byte: newlines and
indentation round-trip for code (use a tokenizer that keeps whitespace, e.g. byte-level BPE).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .model import Batch, make_batch
from .orders import inverse_order, order_from_mask

MASK_RE = re.compile(r"(?<!\\)\[MASK(?::(\d+))?\]")
LOOSE_RE = re.compile(r"(?<!\\)\[MASK\b")
ORDERS = ("left-to-right", "random")


class MarkupError(ValueError):
    """Mask markup that does not parse."""


@dataclass
class Infill:
    """One sequence to infill: token ids and which positions to generate.

    ids:  [L] token ids (masked positions hold ``blank_id``)
    mask: [L] True = generate this position
    """

    ids: list[int]
    mask: list[bool]
    blank_id: int = 0

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
        """prefix + n_masked tokens to generate + suffix."""
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
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate must lie in (0, 1], got {rate}")
        ids = _encode(tokenizer, text)
        if not ids:
            raise MarkupError("the text is empty: write some text to mask")
        n_visible = min(len(ids), int(len(ids) * (1 - rate)) + 1)
        keep = set(torch.randperm(len(ids), generator=generator)[:n_visible].tolist())
        mask = [i not in keep for i in range(len(ids))]
        blank = _blank_id(tokenizer)
        return cls([blank if m else t for t, m in zip(ids, mask)], mask, blank)


def parse_markup(text: str, tokenizer) -> Infill:
    """Text with ``[MASK]`` / ``[MASK:n]`` markup -> :class:`Infill`."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise MarkupError("the input is empty: write some text and mark what to fill with [MASK:n]")
    good = {m.start() for m in MASK_RE.finditer(text)}
    for m in LOOSE_RE.finditer(text):
        if m.start() not in good:
            line = text.count("\n", 0, m.start()) + 1
            raise MarkupError(
                f"malformed mask markup at line {line}, column {m.start() - text.rfind(chr(10), 0, m.start())}: "
                "write [MASK] for one token or [MASK:n] with n >= 1 (\\[MASK] for a literal)"
            )
    blank = _blank_id(tokenizer)
    ids: list[int] = []
    mask: list[bool] = []
    last = 0
    for m in MASK_RE.finditer(text):
        n = int(m.group(1)) if m.group(1) is not None else 1
        if n < 1:
            raise MarkupError(f"[MASK:{m.group(1)}] asks for no tokens: use n >= 1")
        if n > 100_000:
            raise MarkupError(f"[MASK:{n}] is too long")
        piece = _encode(tokenizer, _unescape(text[last : m.start()]))
        ids += piece + [blank] * n
        mask += [False] * len(piece) + [True] * n
        last = m.end()
    tail = _encode(tokenizer, _unescape(text[last:]))
    ids += tail
    mask += [False] * len(tail)
    if not any(mask):
        raise MarkupError("nothing to fill: mark at least one span with [MASK] or [MASK:n]")
    return Infill(ids, mask, blank)


def mask_span(tokenizer, text: str, start: int, end: int) -> str:
    """Replace the characters text[start:end] with ``[MASK:n]``, n = the span's token count."""
    if not 0 <= start < end <= len(text):
        raise ValueError(
            f"span [{start}, {end}) must be non-empty and lie inside the text (length {len(text)})"
        )
    n = max(1, len(_encode(tokenizer, text[start:end])))
    return text[:start] + f"[MASK:{n}]" + text[end:]


def infills_to_batch(
    infills: Sequence[Infill],
    order: str | Sequence[Sequence[int]] = "left-to-right",
    generator: torch.Generator | None = None,
    pad_id: int | None = None,
) -> Batch:
    """Stack infills (ragged lengths are padded at the end) into a :class:`Batch`.

    order: "left-to-right" (the masked positions in reading order, the paper's convention),
    "random" (a uniformly random order over each row's masked positions), or one explicit list of
    masked positions per row.
    """
    if not infills:
        raise ValueError("infills must hold at least one Infill")
    L = max(len(f.ids) for f in infills)
    B = len(infills)
    tokens = torch.full((B, L), infills[0].blank_id if pad_id is None else pad_id, dtype=torch.long)
    mask = torch.ones(B, L, dtype=torch.bool)  # padding counts as masked: it takes the last ranks
    for b, f in enumerate(infills):
        tokens[b, : len(f.ids)] = torch.tensor(f.ids, dtype=torch.long)
        mask[b, : len(f.ids)] = torch.tensor(f.mask, dtype=torch.bool)
    sigma, n_prompt = order_from_mask(mask)
    if isinstance(order, str):
        if order not in ORDERS:
            raise ValueError(
                f"order must be one of {ORDERS} or explicit position lists, got {order!r}"
            )
        if order == "random":
            sigma = _shuffle_masked(sigma, n_prompt, infills, generator)
    else:
        if len(order) != B:
            raise ValueError(
                f"order must give one position list per infill ({B}), got {len(order)}"
            )
        sigma = _explicit(infills, order, L)
    length = torch.tensor([len(f.ids) for f in infills], dtype=torch.long)
    return make_batch(tokens, sigma, n_prompt, length)


def decode(tokenizer, tokens: Sequence[int], length: int | None = None) -> str:
    """Token ids -> text, keeping whitespace exactly (no clean-up of spaces)."""
    ids = list(tokens)[:length]
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _shuffle_masked(sigma, n_prompt, infills, generator):
    pos_of_rank = inverse_order(sigma)
    for b, f in enumerate(infills):
        P, m = int(n_prompt[b]), f.n_masked
        perm = torch.randperm(m, generator=generator)
        pos_of_rank[b, P : P + m] = pos_of_rank[b, P : P + m][perm]
    return inverse_order(pos_of_rank)


def _explicit(infills, order, L):
    rows = []
    for f, positions in zip(infills, order):
        visible = [i for i, m in enumerate(f.mask) if not m]
        masked = [i for i, m in enumerate(f.mask) if m]
        if sorted(int(p) for p in positions) != masked:
            raise ValueError(
                f"each order must list that row's masked positions once: expected {masked}"
            )
        rows.append(visible + [int(p) for p in positions] + list(range(len(f.ids), L)))
    return inverse_order(torch.tensor(rows, dtype=torch.long))


def _encode(tokenizer, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _unescape(text: str) -> str:
    return text.replace("\\[MASK", "[MASK")


def _blank_id(tokenizer) -> int:
    mid = getattr(tokenizer, "mask_token_id", None)
    if mid is None:
        raise ValueError(
            "the tokenizer has no mask token: AS-ARM tokenizers need one (e.g. '<mask>')"
        )
    return int(mid)
