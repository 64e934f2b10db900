"""Models are loaded once and kept in a small LRU cache (switching models frees the old one)."""

from __future__ import annotations

import gc
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

import assd
from assd.text import Infill, infills_to_batch

EMBEDDED = ("prose", "code")
HUB_EXAMPLES = ("therealgabeguo/ASARM",)  # revisions "nlp" and "code"


class DemoError(Exception):
    """A problem with the user's input or choices: its message is shown in the page as is."""


class ModelCache:
    """Thread-safe LRU of loaded models keyed by (name, revision)."""

    def __init__(
        self,
        maxsize: int = 2,
        loader: Callable[..., assd.Loaded] = assd.load,
        hub_reachable: Callable[[], bool] | None = None,
    ):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize, self.loader = maxsize, loader
        self.hub_reachable = hub_reachable or hub_is_reachable
        self._models: OrderedDict[tuple[str, str | None], assd.Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._models)

    def keys(self) -> list[tuple[str, str | None]]:
        return list(self._models)

    def get(self, name: str | None, revision: str | None = None) -> assd.Loaded:
        name = (name or "").strip()
        revision = (revision or "").strip() or None
        if not name:
            raise DemoError("Choose a model: 'prose', 'code', a local directory or a Hub id.")
        if name in EMBEDDED:
            revision = None  # embedded models have no revisions
        key = (name, revision)
        with self._lock:  # one load at a time; concurrent requests for the same model wait
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            self._models[key] = self._load(name, revision)
            evicted = False
            while len(self._models) > self.maxsize:
                self._models.popitem(last=False)
                evicted = True
            if evicted:
                free_memory()
            return self._models[key]

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
        free_memory()

    def _load(self, name: str, revision: str | None) -> assd.Loaded:
        if (
            looks_like_hub_id(name)
            and not in_hub_cache(name, revision)
            and not self.hub_reachable()
        ):
            # Fail fast: the Hub client would otherwise retry for half a minute.
            raise DemoError(
                f"Could not load model {name!r}: the Hugging Face Hub is unreachable from this "
                "machine and the model is not in the local cache. Use 'prose' or 'code' (embedded, "
                "offline) or a local directory."
            )
        try:
            lm = self.loader(name, revision=revision)
        except Exception as e:  # any failure to load is the user's choice of model: explain it
            raise DemoError(load_message(name, revision, e)) from e
        warm_up(lm)
        return lm


def load_message(name: str, revision: str | None, err: Exception) -> str:
    """A readable explanation of why a model did not load, with what to try instead."""
    rev = f" (revision {revision!r})" if revision else ""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if len(first) > 400:
        first = first[:400] + "..."
    hint = (
        "Use 'prose' or 'code' (embedded, work offline), a local directory with an XLNet-format "
        "checkpoint, or a Hub id such as therealgabeguo/ASARM with revision 'nlp' or 'code' "
        "(needs access to huggingface.co)."
    )
    return f"Could not load model {name!r}{rev}: {first}. {hint}"


def free_memory() -> None:
    """Drop unreferenced models now rather than at some later collection."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def warm_up(lm: assd.Loaded) -> None:
    """Tiny sampling runs, so that first-call overheads do not land in a measured run."""
    try:
        batch = infills_to_batch([Infill.from_parts(lm.tokenizer, "a", 3, " b")])
        for sampler in (assd.Sequential(), assd.ASSD(k=2), assd.ASSD(k=2, one_call=True)):
            assd.sample(lm.model, batch, sampler, trace=False)
    except Exception:  # best effort: a model that cannot do this fails later with a message
        pass


def looks_like_hub_id(name: str) -> bool:
    """'owner/name' (or a bare legacy name) that is neither embedded nor a local path."""
    if name in EMBEDDED or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return False
    return not os.path.exists(os.path.expanduser(name))


def in_hub_cache(repo_id: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # a malformed id: let the loader explain
        return False
    return isinstance(hit, str)


def hub_is_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Quick TCP check; HF_HUB_OFFLINE=1 counts as unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
