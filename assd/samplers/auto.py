"""The library's fastest exact sampler for a model on its device, chosen by measuring.

Why measure: which exact form is fastest depends on the ratio of a round's cost to a target
call's cost, and that depends on the device, the model's size and how well its drafts agree
with it. Measured on the trained embedded models: on an H200 a whole round replays as one CUDA
graph and its time is its kernel count, so a 6-layer model's own parallel drafts or draft-head
steps (each worth a fraction of a target call in kernels) can cost more than the calls they
save; on a 2-core CPU every call first reads all weights, so calls dominate and fewer of them
pay. A fixed table would be wrong somewhere; a short timing on the model itself is not.

How: the model writes its own calibration text (a sequential sample from one visible token),
which is then masked at the paper's rate (95%) and filled by each candidate: once to warm up,
then REPEATS times round-robin, the median timed. After the first timed pass a candidate whose
fastest run is beyond PRUNE times the fastest run of its kind (speculative or sequential) is
dropped: noise only ever adds time, so a fastest run is a fair bound, and such a candidate can win
neither choice (on the 2-core CPU a full calibration took 60 s, a demo visitor's first wait).
Warm-ups run at the timed shape only where shapes matter (CUDA graphs, compiled rounds); on a
CPU in eager mode a short warm-up does the same work for a fraction of the time.
A speculative form is chosen only if it beats Sequential by MARGIN per token; otherwise the
answer is Sequential: the default is never slower than sequential decoding beyond the noise of
that timing. Results are cached per model, device, temperature and whether the model's rounds
are compiled (``assd.load(..., compile=True)``: then every candidate is timed compiled, its
compilation in the untimed first run).
"""

from __future__ import annotations

import statistics
import threading
import time
import weakref

import torch

from ..model import make_batch
from .sequential import Sequential
from .speculative import ASSD

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()  # guards _CACHE
_CALIBRATING = threading.Lock()  # held while a calibration measures
MARGIN = 0.05  # a speculative form must be this much faster per token than Sequential
# Timed runs per candidate after its warm-up, round-robin; the median counts. On a shared
# 2-core CPU the best of two runs (the previous rule) once picked a form 14% slower than
# sequential decoding (ASSD(k=5, bonus), 0.86x on 256-token prose).
REPEATS = 3
PRUNE = 1.3  # dropped after the first timed pass if beyond this times its kind's fastest


class CalibrationCancelled(RuntimeError):
    """A calibration stopped because its ``cancel`` event was set (nothing is cached)."""


def candidates(model, temperature: float = 1.0) -> list:
    """Exact samplers worth timing for ``model`` (Sequential first)."""
    t = temperature
    out = [Sequential(t), ASSD(3, t, one_call=True), ASSD(5, t, bonus=True)]
    if getattr(model, "has_draft_head", False):
        # Block verification costs ~30 kernels a round and gains little with one or two
        # proposals (none with one): measured on an H200, token verification wins at k <= 2.
        out += [ASSD(k, t, draft="head") for k in (1, 2)]
        out += [ASSD(k, t, draft="head", verify="block") for k in (3, 5)]
    return out


def _sync(device: torch.device) -> None:
    # The stream, not the device: a calibration may run in a background thread (the demo's)
    # while another thread captures a CUDA graph, and a device-wide sync breaks that capture.
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def calibrate(
    model,
    temperature: float = 1.0,
    length: int = 128,
    seed: int = 0,
    cancel: threading.Event | None = None,
) -> list[dict]:
    """Time every candidate on a text the model wrote itself; returns one dict per candidate
    (sampler, seconds per token), fastest first. ``cancel`` is checked before every run (the
    calibration text's included): once set, :class:`CalibrationCancelled` is raised, so that a
    caller dropping the model does not keep it alive for the rest of a measurement."""
    from .run import sample  # here: run imports this package

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise CalibrationCancelled("calibration cancelled")

    check()

    dev = model.device
    L = min(length, model.max_length or length)
    V = model.vocab_size
    allowed = [i for i in range(V) if i not in set(model.forbidden_ids)]
    g = torch.Generator().manual_seed(seed)
    first = allowed[int(torch.randint(len(allowed), (1,), generator=g))]
    tokens = torch.full((L,), first, dtype=torch.long)
    sigma = torch.arange(L)  # position 0 visible, the rest written left to right
    text = sample(
        model,
        make_batch(tokens, sigma, 1),
        Sequential(temperature),
        torch.Generator().manual_seed(seed),
        trace=False,
    )[0].tokens
    keep = torch.randperm(L, generator=g)[: max(1, L // 20)]  # 95% masked, the paper's rate
    mask = torch.ones(L, dtype=torch.bool)
    mask[keep] = False
    key = mask.long() * L + torch.arange(L)  # visible first, then masked left to right
    sigma = torch.empty(L, dtype=torch.long)
    sigma[key.argsort()] = torch.arange(L)
    batch = make_batch(torch.tensor(text), sigma, int((~mask).sum()))
    cands = candidates(model, temperature)
    shaped = dev.type == "cuda" or getattr(model, "compile_rounds", False)
    W = min(L, 16)  # eager CPU/MPS warm-up: first-call costs only, no shape to capture
    warm = batch if shaped else make_batch(torch.tensor(text[:W]), torch.arange(W), 1)

    def timed(s, rep: int, problem=batch) -> float:
        check()
        _sync(dev)
        t0 = time.perf_counter()
        r = sample(model, problem, s, torch.Generator(dev).manual_seed(seed + rep), trace=False)
        _sync(dev)
        return (time.perf_counter() - t0) / r[0].n_generated

    for s in cands:  # warm-up: captures graphs, compiles compiled rounds; not counted
        timed(s, 0, warm)
    runs: list[list[float]] = [[] for _ in cands]
    live = list(range(len(cands)))
    for rep in range(REPEATS):  # round-robin, so that a slow spell of the machine hits all
        for i in live:
            runs[i].append(timed(cands[i], rep))
        if rep == 0:
            live = [i for i in live if not _pruned(cands, runs, i)]
    out = [
        {"sampler": s, "seconds_per_token": statistics.median(t), "runs": t}
        for s, t in zip(cands, runs)
    ]
    # Candidates timed REPEATS times first: a pruned one's median is of a single run.
    return sorted(out, key=lambda d: (len(d["runs"]) < REPEATS, d["seconds_per_token"]))


def _pruned(cands: list, runs: list[list[float]], i: int) -> bool:
    """Is candidate i beyond PRUNE times the fastest run among candidates of its kind?"""
    kind = isinstance(cands[i], Sequential)
    best = min(min(runs[j]) for j in range(len(cands)) if isinstance(cands[j], Sequential) == kind)
    return min(runs[i]) > PRUNE * best


def fastest(
    model,
    *,
    temperature: float = 1.0,
    speculative: bool = False,
    calibration: list[dict] | None = None,
    wait: bool = True,
    cancel: threading.Event | None = None,
):
    """An exact sampler: the fastest of :func:`candidates` for ``model`` on its device, measured
    once (seconds on a CPU) and cached. Sequential decoding unless a speculative form is at least
    MARGIN faster per token. ``speculative=True``: the fastest speculative form even when
    sequential decoding is faster (to show ASSD at its best). ``calibration``: a result of
    :func:`calibrate` to choose from instead of measuring. ``wait=False``: never measure (nor
    wait for a measurement under way); None until a result is cached (a server calibrating in
    the background serves its first requests meanwhile). On a model loaded with
    ``compile=True`` every candidate is compiled for the calibration shape first (about a
    minute or two on a GPU, once per process). ``cancel``: an event that stops a measurement
    between two timed runs (:class:`CalibrationCancelled`; e.g. a server dropping the model)."""
    key = (str(model.device), float(temperature), getattr(model, "compile_rounds", False))
    ranked = calibration or _cached(model, key)
    if ranked is None and not wait:
        return None
    if ranked is None:
        # One measurement at a time; a second caller uses the first's result. A cancellable
        # caller polls for the lock, so that a cancel lands while it queues behind another.
        while not _CALIBRATING.acquire(timeout=0.1 if cancel is not None else -1):
            if cancel.is_set():
                raise CalibrationCancelled("calibration cancelled while waiting for another")
        try:
            ranked = _cached(model, key)
            if ranked is None:
                ranked = calibrate(model, temperature, cancel=cancel)
                with _LOCK:
                    _CACHE.setdefault(model, {})[key] = ranked
        finally:
            _CALIBRATING.release()
    spec = [d for d in ranked if not isinstance(d["sampler"], Sequential)]
    seq = [d for d in ranked if isinstance(d["sampler"], Sequential)]
    if (speculative and spec) or not seq:
        return spec[0]["sampler"]
    best = spec[0] if spec else seq[0]
    if best["seconds_per_token"] < (1 - MARGIN) * seq[0]["seconds_per_token"]:
        return best["sampler"]
    return seq[0]["sampler"]


def _cached(model, key) -> list[dict] | None:
    with _LOCK:
        return _CACHE.get(model, {}).get(key)
