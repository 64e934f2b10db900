"""Text data: read documents, tokenize, join with an end-of-document token, pack into chunks.

Documents come through ``datasets`` (Hub names such as ``openwebtext`` or
``bigcode/starcoderdata`` with ``data_dir="python"`` when online; local JSON/JSONL/text files,
compressed too, offline). Where ``datasets`` is not installed, local files are read directly.
Each process reads its own shard of the documents, so ranks never see the same data.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import io
import json
import lzma
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from .seeds import TAG_DATA_ORDER, mix_seed

_LOCAL = re.compile(r"\.(jsonl|json|txt|text|parquet)(\.(gz|xz|bz2))?$")


def is_local(source: str) -> bool:
    return all(bool(_LOCAL.search(s)) or Path(s).exists() for s in sources_of(source))


def sources_of(source: str) -> list[str]:
    """A comma-separated list of local files (e.g. the four Wikipedia shards) -> their paths."""
    return [s.strip() for s in source.split(",") if s.strip()]


def read_texts(
    source: str,
    *,
    text_field: str = "text",
    split: str = "train",
    name: str | None = None,
    data_dir: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
    max_docs: int | None = None,
    rank: int = 0,
    world: int = 1,
    use_datasets: bool | None = None,
) -> Iterator[str]:
    """Yield the documents of shard ``rank`` of ``world`` (documents ``rank::world``).

    ``use_datasets=None`` uses ``datasets`` when it is installed, else the plain local reader.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank must lie in [0, world={world}), got {rank}")
    if use_datasets is None:
        use_datasets = importlib.util.find_spec("datasets") is not None
    if use_datasets:
        docs = _hf_texts(source, text_field, split, name, data_dir, revision, streaming)
    elif is_local(source):
        docs = (t for s in sources_of(source) for t in _plain_texts(s, text_field))
    else:
        raise ImportError(
            f"reading the Hub dataset {source!r} needs `datasets`: pip install datasets"
        )
    n = 0
    for i, t in enumerate(docs):
        if max_docs is not None and n >= max_docs:
            return
        n += 1
        if i % world == rank and t:
            yield t


def _hf_texts(source, text_field, split, name, data_dir, revision, streaming) -> Iterator[str]:
    from datasets import load_dataset

    if is_local(source):
        files = sources_of(source)
        m = _LOCAL.search(files[0])
        kind = {"jsonl": "json", "json": "json", "parquet": "parquet"}.get(
            m.group(1) if m else "", "text"
        )
        ds = load_dataset(kind, data_files=files, split="train", streaming=streaming)
    else:
        ds = load_dataset(
            source, name, data_dir=data_dir, split=split, revision=revision, streaming=streaming
        )
    if text_field not in (ds.column_names or [text_field]):
        raise ValueError(f"text_field {text_field!r} not in the data's columns {ds.column_names}")
    for row in ds:
        yield row[text_field]


def _open(path: str) -> io.TextIOBase:
    opener = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(Path(path).suffix, open)
    return opener(path, "rt", encoding="utf-8", newline="")


def _plain_texts(source: str, text_field: str) -> Iterator[str]:
    """The fallback reader: JSON lines (or a JSON list) of objects, or plain text, one doc a line."""
    m = _LOCAL.search(source)
    kind = m.group(1) if m else "txt"
    if kind == "parquet":
        raise ImportError("reading parquet needs `datasets`: pip install datasets")
    with _open(source) as f:
        if kind == "json":
            text = f.read()
            if text.lstrip().startswith("["):
                yield from (row[text_field] for row in json.loads(text))
                return
            f = io.StringIO(text)
        for line in f:
            if kind in ("jsonl", "json"):
                if line.strip():
                    yield json.loads(line)[text_field]
            else:
                yield line


def tokenize(tokenizer, texts: Iterable[str], batch: int = 512) -> Iterator[np.ndarray]:
    """One int32 array of ids per document (no special tokens added)."""
    buf: list[str] = []
    for t in texts:
        buf.append(t)
        if len(buf) == batch:
            yield from _encode(tokenizer, buf)
            buf = []
    if buf:
        yield from _encode(tokenizer, buf)


def _encode(tokenizer, texts: list[str]) -> Iterator[np.ndarray]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for x in ids:
        yield np.asarray(x, dtype=np.int32)


def pack(docs: Iterable[np.ndarray], eod: int, seq_len: int) -> torch.Tensor:
    """Join documents, each followed by ``eod``, and cut into chunks [N, seq_len] (remainder dropped)."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    parts: list[np.ndarray] = []
    sep = np.asarray([eod], dtype=np.int32)
    for d in docs:
        parts += [d, sep]
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    n = len(flat) // seq_len
    return torch.from_numpy(flat[: n * seq_len].astype(np.int64)).view(n, seq_len)


class ChunkStream:
    """Deterministic batches over a rank's chunks: batch ``c`` depends on (seed, rank, c) only.

    ``seed`` is the run's seed (``--seed``); the permutation of epoch e is seeded by
    ``mix_seed(seed, rank, e, TAG_DATA_ORDER)``.

    Each epoch visits the chunks in a fresh seeded permutation; resuming at micro-batch ``c``
    reproduces exactly the batches an uninterrupted run would have drawn.
    """

    def __init__(self, chunks: torch.Tensor, batch_size: int, seed: int, rank: int = 0):
        if len(chunks) == 0:
            raise ValueError("no training chunks: use more data or a shorter seq_len")
        self.chunks, self.batch_size, self.seed, self.rank = chunks, batch_size, seed, rank
        self._perm: tuple[int, torch.Tensor] | None = None

    def _perm_of(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.rank, epoch, TAG_DATA_ORDER))
            self._perm = (epoch, torch.randperm(len(self.chunks), generator=g))
        return self._perm[1]

    def batch(self, c: int) -> torch.Tensor:  # [batch_size, seq_len]
        N = len(self.chunks)
        idx = torch.arange(c * self.batch_size, (c + 1) * self.batch_size)
        rows = [int(self._perm_of(int(i) // N)[int(i) % N]) for i in idx]
        return self.chunks[rows]

    def epoch_of(self, c: int) -> float:
        return c * self.batch_size / len(self.chunks)


def split_docs(cfg, rank: int, world: int) -> tuple[Iterator[str], Iterator[str]]:
    """(this rank's training documents, all validation documents) for a ``TrainConfig``.

    Without ``cfg.val_data`` every ``cfg.val_every_doc``-th document is held out.
    """
    kw = dict(
        text_field=cfg.text_field,
        name=cfg.data_name,
        data_dir=cfg.data_dir,
        revision=cfg.data_revision,
        streaming=cfg.streaming,
        max_docs=cfg.max_docs,
    )
    if cfg.val_data is not None:
        train = read_texts(cfg.data, rank=rank, world=world, **kw)
        val_kw = dict(kw, max_docs=None, data_dir=None, name=None, revision=None)
        return train, read_texts(cfg.val_data, **val_kw)
    every = cfg.val_every_doc

    def train_docs():
        docs = (t for i, t in enumerate(read_texts(cfg.data, **kw)) if i % every != every - 1)
        yield from (t for j, t in enumerate(docs) if j % world == rank)

    def val_docs():
        yield from (t for i, t in enumerate(read_texts(cfg.data, **kw)) if i % every == every - 1)

    return train_docs(), val_docs()
