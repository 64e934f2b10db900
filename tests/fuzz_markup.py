"""Coverage-guided fuzzing of the mask markup parser with atheris (libFuzzer for Python).

    python tests/fuzz_markup.py -atheris_runs=100000      # or -max_total_time=60

Any string must give an Infill within the length budget or a MarkupError; anything else (another
exception, a result over the budget) is a crash that atheris reports with the input that caused it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris
import torch
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's assd
with atheris.instrument_imports(include=["assd.text"]):
    from assd.text import MarkupError, parse_markup

from assd.loading import PRETRAINED_DIR

TOKENIZER = AutoTokenizer.from_pretrained(str(PRETRAINED_DIR / "prose"))
MAX_LENGTH = 256
# Pieces of markup, so that mutations reach the grammar rather than plain text.
PIECES = [
    "[MASK]",
    "[MASK:",
    "[MASK",
    "]",
    ":",
    "[HIDE]",
    "[/HIDE]",
    "[HIDE",
    "[/HIDE",
    "\\",
    "12",
    "0",
    "99999999999",
    "２",
    " ",
    "a",
    "\n",
    "é",
    "€",
]


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        text = fdp.ConsumeUnicodeNoSurrogates(len(data))
    else:  # a sequence of pieces with some free text between them
        parts = []
        while fdp.remaining_bytes():
            parts.append(PIECES[fdp.ConsumeIntInRange(0, len(PIECES) - 1)])
            if fdp.ConsumeIntInRange(0, 7) == 0:
                parts.append(fdp.ConsumeUnicodeNoSurrogates(4))
        text = "".join(parts)
    try:
        inf = parse_markup(text, TOKENIZER, max_length=MAX_LENGTH)
    except MarkupError:
        return
    if not (0 < inf.n_masked and len(inf.ids) <= MAX_LENGTH):
        raise AssertionError(f"{text!r} gave {len(inf.ids)} tokens, {inf.n_masked} masked")


if __name__ == "__main__":
    torch.set_num_threads(1)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
