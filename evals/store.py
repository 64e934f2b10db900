"""Resumable per-eval result files: one JSON line per finished item, keyed by ``id``.

Re-running an eval skips the ids already on disk; an item that raised is stored with an
``error`` field (and retried on the next run) so one bad item never kills the run.

Under several processes (``accelerate launch``) each process appends to its own shard file
(``spec.rank1.jsonl``) and reads all of them; the main process merges the shards into the one
file (``spec.jsonl``) after every process has finished its share.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def json_safe(x: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (strict JSON), tuples become lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_atomic(path: str | Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Store:
    """Append-only JSONL of item records; a successful record beats an error, later lines win."""

    def __init__(self, path: str | Path, rank: int = 0, world: int = 1):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shard = self.path.with_name(f"{self.path.stem}.rank{rank}{self.path.suffix}")
        self.write_path = self.path if world == 1 else shard
        self._records: dict[str, dict] = {}
        for f in [self.path, *self.shards()]:
            self._load(f)

    def shards(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.stem}.rank*{self.path.suffix}"))

    def _load(self, f: Path) -> None:
        if not f.exists():
            return
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash: redo that item
                    continue
                old = self._records.get(rec["id"])
                if old is None or "error" in old or "error" not in rec:
                    self._records[rec["id"]] = rec

    def done(self, item_id: str) -> bool:
        rec = self._records.get(item_id)
        return rec is not None and "error" not in rec

    def add(self, record: dict) -> None:
        if "id" not in record:
            raise ValueError("a record needs an 'id' field")
        record = json_safe(record)
        with open(self.write_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self._records[record["id"]] = record

    def add_error(self, item_id: str, exc: BaseException, **fields) -> None:
        """Record that an item raised (it is retried on the next run)."""
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-12))
        self.add({"id": item_id, **fields, "error": repr(exc), "traceback": tb})

    def guard(self, item_id: str, **fields) -> _Guard:
        """``with store.guard(id): ...``: an exception inside is recorded for ``id``, not raised."""
        return _Guard(self, item_id, fields)

    def run_chunk(
        self, chunk: list[T], fn: Callable[[list[T]], list], item_id: Callable[[T], str]
    ) -> list:
        """``fn(chunk)`` for a batch; if it raises, ``fn([item])`` per item, recording each
        item that still fails (so one bad item costs only itself)."""
        try:
            return fn(chunk)
        except Exception:  # retried item by item below; each failure is recorded there
            out: list = []
            for item in chunk:
                with self.guard(item_id(item)):
                    out += fn([item])
            return out

    def records(self, ok_only: bool = True) -> list[dict]:
        return [r for r in self._records.values() if not (ok_only and "error" in r)]

    def errors(self) -> list[dict]:
        return [r for r in self._records.values() if "error" in r]

    def merge(self) -> None:
        """Fold every shard file into the main file (one line per id) and delete the shards."""
        self._records = {}
        shards = self.shards()
        for f in [self.path, *shards]:
            self._load(f)
        lines = "".join(json.dumps(r) + "\n" for r in self._records.values())
        write_atomic(self.path, lines)
        for f in shards:
            f.unlink()


class _Guard:
    def __init__(self, store: Store, item_id: str, fields: dict):
        self.store, self.item_id, self.fields = store, item_id, fields

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ, exc, tb) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self.store.add_error(self.item_id, exc, **self.fields)
        return True


def shard(items: Iterable[T], rank: int, world: int) -> list[T]:
    """This process's share of ``items`` (every ``world``-th, from ``rank``): disjoint, complete."""
    return [x for i, x in enumerate(items) if i % world == rank]
