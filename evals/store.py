"""Resumable per-eval result files: one JSON line per finished item, keyed by ``id``.

Re-running an eval skips the ids already on disk; an item that raised is stored with an
``error`` field (and retried on the next run) so one bad item never kills the run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def json_safe(x: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (strict JSON), tuples become lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


class Store:
    """Append-only JSONL of item records; later lines for the same id win."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        try:
                            rec = json.loads(line)
                        except json.JSONDecodeError:  # a line cut by a crash: redo that item
                            continue
                        self._records[rec["id"]] = rec

    def done(self, item_id: str) -> bool:
        rec = self._records.get(item_id)
        return rec is not None and "error" not in rec

    def add(self, record: dict) -> None:
        if "id" not in record:
            raise ValueError("a record needs an 'id' field")
        record = json_safe(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self._records[record["id"]] = record

    def records(self, ok_only: bool = True) -> list[dict]:
        return [r for r in self._records.values() if not (ok_only and "error" in r)]

    def errors(self) -> list[dict]:
        return [r for r in self._records.values() if "error" in r]
