"""The models a demo server serves: an operator's allow-list, loaded once into a small LRU cache.

A public page must not let a visitor choose what the server loads: a model box that accepts any
directory or Hub id lets a request probe the server's disk, load any checkpoint found there, or
make the server download any Hub repository. So the cache serves only the models named at
start-up (``--model``, ``--models`` / ``ASSD_MODELS``); ``allow_any=True`` (``--allow-any-model``)
restores "any directory or Hub id" for local use.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable

import torch

import assd
from assd.loading import EMBEDDED, resolve
from assd.text import Infill, infills_to_batch

log = logging.getLogger(__name__)

HUB_EXAMPLES = ("therealgabeguo/ASARM@nlp", "therealgabeguo/ASARM@code")  # the paper's models


class DemoError(Exception):
    """A problem with the user's input or choices: its message is shown in the page as is."""


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'name' or 'name@revision' -> (name, revision); embedded models have no revision."""
    spec = (spec or "").strip()
    name, _, revision = spec.rpartition("@") if "@" in spec else (spec, "", "")
    name, revision = name.strip(), revision.strip() or None
    return name, None if name in EMBEDDED else revision


def spec_of(name: str, revision: str | None) -> str:
    return f"{name}@{revision}" if revision else name


class ModelCache:
    """Thread-safe LRU of loaded models keyed by (name, revision), limited to an allow-list."""

    def __init__(
        self,
        maxsize: int = 2,
        loader: Callable[..., assd.Loaded] = assd.load,
        hub_reachable: Callable[[], bool] | None = None,
        allowed: Iterable[str] = EMBEDDED,
        allow_any: bool = False,
        calibrate: bool = False,
    ):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize, self.loader = maxsize, loader
        self.hub_reachable = hub_reachable or hub_is_reachable
        self.allow_any, self.calibrate = allow_any, calibrate
        self._calibrations: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.allowed: list[tuple[str, str | None]] = []
        for spec in allowed:
            self.allow(*parse_spec(spec))
        self._models: OrderedDict[tuple[str, str | None], assd.Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, name: str, revision: str | None = None) -> None:
        """Serve this model too (the operator's choice, never a request's)."""
        key = parse_spec(spec_of(name, revision))
        if not key[0]:
            raise ValueError("an allowed model needs a name")
        if key not in self.allowed:
            self.allowed.append(key)

    @property
    def choices(self) -> list[str]:
        """The served models as 'name' or 'name@revision', for the model box."""
        return [spec_of(*key) for key in self.allowed]

    def __len__(self) -> int:
        return len(self._models)

    def keys(self) -> list[tuple[str, str | None]]:
        return list(self._models)

    def get(self, name: str | None, revision: str | None = None) -> assd.Loaded:
        name, spec_rev = parse_spec(name or "")
        revision = (revision or "").strip() or spec_rev
        if not name:
            raise DemoError(f"Choose a model: {', '.join(self.choices)}.")
        if name in EMBEDDED:
            revision = None  # embedded models have no revisions
        key = (name, revision)
        if not self.allow_any and key not in self.allowed:
            raise DemoError(
                f"The model {spec_of(name, revision)!r} is not served here: choose one of "
                f"{', '.join(self.choices)}. (Whoever runs the server can add models with "
                "--models or ASSD_MODELS.)"
            )
        with self._lock:  # one load at a time; concurrent requests for the same model wait
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            self._models[key] = self._load(name, revision)
            evicted = False
            while len(self._models) > self.maxsize:
                _, old = self._models.popitem(last=False)
                self._stop_calibration(old.model)  # else it keeps the model alive until done
                evicted = True
            if evicted:
                free_memory()
            return self._models[key]

    def calibration(self, model) -> threading.Thread | None:
        """The background calibration of ``model`` started when it loaded (None: none)."""
        entry = self._calibrations.get(model)
        return entry[0] if entry else None

    def _stop_calibration(self, model) -> None:
        entry = self._calibrations.get(model)
        if entry:
            entry[1].set()

    def calibrating(self, model) -> bool:
        """Is ``assd.fastest`` still being measured for ``model`` in the background? Also True
        once its calibration was cancelled (the model was dropped): a run still holding it must
        use the provisional form rather than measure a dropped model inside the request."""
        entry = self._calibrations.get(model)
        return entry is not None and (entry[0].is_alive() or entry[1].is_set())

    def clear(self) -> None:
        with self._lock:
            for lm in self._models.values():
                self._stop_calibration(lm.model)
            self._models.clear()
        free_memory()

    def _load(self, name: str, revision: str | None) -> assd.Loaded:
        try:
            _, local = resolve(name)
        except ValueError:
            local = True  # not a Hub id: the loader says what is wrong with it
        if not local and not in_hub_cache(name, revision) and not self.hub_reachable():
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
        if self.calibrate:
            cancel = threading.Event()
            thread = calibrate_in_background(lm, spec_of(name, revision), cancel=cancel)
            self._calibrations[lm.model] = (thread, cancel)
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
            # Not compiled: this tiny width is never served (compiled models see widths of 64).
            assd.sample(lm.model, batch, sampler, trace=False, compile=False)
    except Exception:  # best effort: a model that cannot do this fails later with a message
        pass


def calibrate_in_background(
    lm: assd.Loaded, label: str, temperature: float = 1.0, cancel: threading.Event | None = None
):
    """Start measuring ``assd.fastest`` for this model now, in a daemon thread.

    Why: the page's default lane is "fastest ASSD", and the first run that needs it would
    otherwise wait for the whole calibration (60 s on a 2-core CPU before it was pruned). The
    app finishes the calibration of the model it preloads before it listens (a visitor's run
    must not share the cores with it: both timings would suffer); a model loaded later is
    calibrated in the background while its first runs are served at once with a provisional
    form (``demo.run.exact_sampler``), the page saying so.
    Temperature 1.0: the page's default; other temperatures use the form measured at 1.0.
    ``cancel``: set it to stop the measurement after its current run (the cache does when it
    drops the model, so that the thread does not keep a dropped model in memory)."""

    holder = [lm]  # the thread's only reference to the model, dropped when it is cancelled
    del lm

    def work() -> None:
        t0, cancelled = time.perf_counter(), False
        try:
            s = assd.fastest(
                holder[0].model, temperature=temperature, speculative=True, cancel=cancel
            )
        except assd.CalibrationCancelled:
            cancelled = True  # leave the except block first: its traceback holds the model
        except Exception as e:  # best effort: the first run then calibrates and explains
            log.warning("calibrating %s failed: %s", label, e)
            return
        if cancelled:
            holder.clear()
            free_memory()  # the dropped model's memory now, not at some later collection
            print(f"{label}: calibration stopped (the model was dropped)", flush=True)
            return
        took = time.perf_counter() - t0
        print(f"{label}: fastest ASSD is {s.name} (calibrated in {took:.1f} s)", flush=True)

    t = threading.Thread(target=work, name=f"calibrate-{label}", daemon=True)
    t.start()
    return t


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
