"""Evaluation data: local copies under ``--data`` (offline) or the Hugging Face Hub (online).

Each loader returns plain Python records so the evals never depend on where the data came from.
Local files are read with ``datasets.load_dataset("json", ...)`` / ``csv`` like any user file.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

WIKITEXT_ROWS = "eval/wikitext2/test.hf_rows.jsonl.gz"
WIKITEXT_RAW = "eval/wikitext2/wiki.test.raw.gz"
ROCSTORIES = "eval/rocstories/cloze_test_val__spring2016.csv"
HUMANEVAL_DIR = "eval/humaneval_infilling"
HUMANEVAL_SINGLE_LINE = f"{HUMANEVAL_DIR}/HumanEval-SingleLineInfilling.jsonl.gz"
HUMANEVAL_FIELDS = ("task_id", "prompt", "suffix", "canonical_solution", "test", "entry_point")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found at {path}: pass --data pointing at the shared data folder "
            "(it holds eval/...), or --online to read it from the Hugging Face Hub"
        )
    return path


def _open_text(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8")
        if path.suffix == ".gz"
        else open(path, encoding="utf-8")
    )


def load_wikitext2(data_dir: str | Path | None) -> list[str]:
    """WikiText-2 raw test split as rows of text (Hub order); ``data_dir=None`` reads the Hub."""
    if data_dir is None:
        from datasets import load_dataset

        return list(load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="test")["text"])
    rows = Path(data_dir) / WIKITEXT_ROWS
    if rows.exists():
        with _open_text(rows) as f:
            return [json.loads(line)["text"] for line in f if line.strip()]
    with _open_text(_need(Path(data_dir) / WIKITEXT_RAW, "WikiText-2 test")) as f:
        return f.read().splitlines(keepends=True)


def pack_tokens(
    texts: list[str], encode, length: int, n: int | None = None, skip_empty: bool = True
) -> list[list[int]]:
    """Concatenate the token ids of the rows and cut them into chunks of ``length``.

    ``encode(text) -> list[int]``. Stops after ``n`` chunks (None: all). The last partial chunk
    is dropped, so every sequence has exactly ``length`` tokens. ``skip_empty``: rows that are
    only whitespace contribute nothing (the embedded models' packing); the paper keeps them.
    """
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}")
    out: list[list[int]] = []
    buf: list[int] = []
    for t in texts:
        if skip_empty and not t.strip():
            continue
        buf.extend(encode(t))
        while len(buf) >= length:
            out.append(buf[:length])
            buf = buf[length:]
            if n is not None and len(out) >= n:
                return out
    return out


def paper_row_encoder(tokenizer):
    """The paper's WikiText packing of one row: the tokenizer's encoding *with* its special
    tokens (XLNet appends ``<sep> <cls>``), then the end-of-document token (XLNet's ``</s>``)."""
    eod = getattr(tokenizer, "eos_token_id", None)
    if eod is None:
        raise ValueError(
            "paper packing needs an end-of-document token (tokenizer.eos_token): "
            "use --packing plain for this model"
        )

    def encode(text: str) -> list[int]:
        return list(tokenizer(text)["input_ids"]) + [int(eod)]

    return encode


def plain_row_encoder(tokenizer):
    """The embedded models' packing of one row: its tokens, no special tokens."""

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return encode


@dataclass(frozen=True)
class Story:
    """A five-sentence ROCStories story: sentences 1-4 and the right ending."""

    id: str
    sentences: tuple[str, ...]


def load_rocstories(data_dir: str | Path | None, path: str | Path | None = None) -> list[Story]:
    """Story Cloze Test (spring 2016, validation) as 5-sentence stories.

    Online there is no Hub copy with the same terms; pass ``path`` to a local CSV instead.
    """
    p = Path(path) if path is not None else None
    if p is None:
        if data_dir is None:
            raise ValueError(
                "ROCStories is not on the Hub under its research terms: give --data or --rocstories PATH"
            )
        p = Path(data_dir) / ROCSTORIES
    stories = []
    with open(_need(p, "ROCStories cloze CSV"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            right = row["AnswerRightEnding"].strip()
            if right not in ("1", "2"):
                raise ValueError(f"{p}: AnswerRightEnding must be 1 or 2, got {right!r}")
            ending = row[f"RandomFifthSentenceQuiz{right}"]
            sents = tuple(row[f"InputSentence{i}"].strip() for i in range(1, 5)) + (ending.strip(),)
            stories.append(Story(row["InputStoryid"], sents))
    return stories


HUMANEVAL_BENCHMARKS = {
    "single-line": "SingleLineInfilling",
    "multi-line": "MultiLineInfilling",
    "random-span": "RandomSpanInfilling",
    "random-span-light": "RandomSpanInfillingLight",
}


def humaneval_sources(
    spec: str | None, data_dir: str | Path | None
) -> list[tuple[str, Path | None]]:
    """``--humaneval`` -> [(benchmark name, file or None for the Hub)].

    spec: comma list of names (single-line, multi-line, random-span, random-span-light) and/or
    paths of HumanEval-infilling .jsonl(.gz) files; None = single-line.
    """
    out = []
    for item in (spec or "single-line").split(","):
        item = item.strip()
        if not item:
            continue
        if item in HUMANEVAL_BENCHMARKS:
            name = f"HumanEval-{HUMANEVAL_BENCHMARKS[item]}"
            out.append(
                (
                    name,
                    None
                    if data_dir is None
                    else Path(data_dir) / HUMANEVAL_DIR / f"{name}.jsonl.gz",
                )
            )
        else:
            p = Path(item)
            out.append((p.name.removesuffix(".gz").removesuffix(".jsonl"), p))
    if not out:
        raise ValueError(
            "--humaneval names no benchmark: e.g. single-line,multi-line or a file path"
        )
    return out


def load_humaneval_infilling(
    data_dir: str | Path | None,
    path: str | Path | None = None,
    benchmark: str = "SingleLineInfilling",
) -> list[dict]:
    """HumanEval-infilling problems (single-line by default, any benchmark file by ``path``);
    each row gets a ``benchmark`` field (the file's name).

    Online (``data_dir=None`` and no path): the Hub copy ``loubnabnl/humaneval_infilling``.
    """
    if path is None and data_dir is None:
        from datasets import load_dataset

        # A script dataset: its parquet conversion loads with current ``datasets``.
        ds = load_dataset(
            "loubnabnl/humaneval_infilling",
            f"HumanEval-{benchmark}",
            split="test",
            revision="refs/convert/parquet",
        )
        rows = [dict(r) for r in ds]
        name = f"HumanEval-{benchmark}"
    else:
        p = Path(path) if path is not None else Path(data_dir) / HUMANEVAL_SINGLE_LINE
        with _open_text(_need(p, "HumanEval-infilling file")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        name = p.name.removesuffix(".gz").removesuffix(".jsonl")
    for r in rows:
        missing = [k for k in HUMANEVAL_FIELDS if k not in r]
        if missing:
            raise ValueError(f"HumanEval-infilling row {r.get('task_id')!r} lacks fields {missing}")
        r["benchmark"] = name
    return rows


def load_humaneval_sets(
    spec: str | None, data_dir: str | Path | None
) -> list[tuple[str, list[dict]]]:
    """Every benchmark named by ``--humaneval`` -> [(name, problems)]; task ids must be unique."""
    sets, seen = [], set()
    for name, path in humaneval_sources(spec, data_dir):
        bench = name.removeprefix("HumanEval-")
        probs = load_humaneval_infilling(data_dir, path, bench)
        dup = seen & {p["task_id"] for p in probs}
        if dup:
            raise ValueError(
                f"{name}: task ids {sorted(dup)[:3]} also occur in another benchmark file"
            )
        seen |= {p["task_id"] for p in probs}
        sets.append((name, probs))
    return sets
