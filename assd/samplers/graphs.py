"""A whole sampler round as one CUDA graph: drafts, the network call, acceptance, commit.

Why. With a small model a round's network call is a few hundred microseconds of GPU work, and
the sampler's own kernels (softmax, draws, acceptance, residual, bookkeeping) add dozens of
launches; launched one by one from Python they cost more than the call. Captured once and
replayed, a round costs one launch.

How. The samplers' steps are written without host syncs and with fixed shapes; the backend runs
sync-free for the capture (``session.sync_free(max_rows)``: fixed row counts, errors flagged on
the device). The state lives in static buffers that the round updates in place, and the round's
uniforms come from a static block refilled from the generator before each replay: the same
numbers an eager round reads (``assd.rng.TorchRng``), so the tokens are the same for the same
seed. Anything that cannot be captured falls back to eager rounds, with a warning. On other
devices the same machinery runs the round eagerly on the static buffers, which is how the tests
check it without a GPU.

Compiled rounds (``compile=True``). A replayed round still launches every kernel of the step:
a few hundred for a 6-layer model, most of them tiny elementwise ops (softmax pieces, masks,
gathers, acceptance, layer-norm and bias terms) that each cost a few microseconds of launch
and memory round-trip. ``torch.compile`` of the whole step (one graph: the sampler and the
backend are plain tensor code) fuses them into a few kernels, and the CUDA graph then replays
the fused kernels. The price is the compilation (tens of seconds per sampler and batch shape,
once per process). In float32 compiled rounds equal eager rounds to rounding (tested); in
bfloat16 fused kernels keep float32 intermediates that eager ops round to bfloat16, so the
probabilities differ at the bfloat16 rounding level and a seed's tokens may differ from an
uncompiled run's (each is still an exact sample of the model as that run computes it).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import fields, replace

import torch

from ..capture import CAPTURE_LOCK
from .state import RoundRecord, State

RECOMPILE_LIMIT = 64  # compiled steps kept per code object (every ASSD form shares ASSD.step)
# Distinct compiled rounds (sampler settings x batch shape x model) one process compiles; past
# this, new ones run uncompiled with a warning, rather than silently once dynamo's limit is hit.
MAX_COMPILED = 48
_compiled: set = set()
# Rounds whose compilation failed once (an op the compiler cannot take, no C++ compiler): not
# tried again in this process, since each try costs a full compilation before it fails.
_failed: set = set()
_compiled_lock = threading.Lock()

WARM_ROUNDS = 2  # eager rounds before the capture (the first round may compute many rows)


def max_new_rows(state: State) -> int:
    """Most new content rows one call can need, and most tokens one draft-head call reads: a
    round's proposals plus the last committed token (whose state no call has computed yet),
    and with a token tree one more: an accepted sibling replaces a proposal's state and is
    followed by one more token."""
    alt = getattr(state, "next_alt", None)
    return state.k + 1 + int(alt is not None and alt.shape[-1] > 0)


MAX_KEPT = 8  # round graphs a backend workspace keeps for later sessions (least recent dropped)
KEEP_ROUNDS = True  # False: every run captures its own (what evals/bench_speed.py compares)


class RoundGraph:
    """A captured round: ``replay(rng)`` runs one round, returns the (static) state and record.

    ``flags``: the checked session's device flags the round writes (a later session that
    reuses this graph adopts them); ``load(state)``: start a new run from ``state``;
    ``first_round``: the round read TorchRng's starting block, so a later run may replay its
    first round too."""

    def __init__(self, run: Callable[[], RoundRecord], state: State, block: torch.Tensor):
        self.run, self.state, self.block = run, state, block
        self.flags: torch.Tensor | None = None
        self.first_round = False  # may a later run replay its first round too (see run.py)

    def replay(self, rng) -> tuple[State, RoundRecord]:
        self.block.copy_(rng.draw(self.block.shape, self.block.device))
        return self.state, self.run()

    def load(self, state: State) -> State:
        """Copy a fresh run's ``state`` into the static buffers (in place); returns them."""
        for name in _tensors(state):
            getattr(self.state, name).copy_(getattr(state, name))
        return self.state


def round_key(sampler, state: State, rows: int, width: int, compile: bool) -> tuple:
    """What a captured round depends on besides the values in its buffers: the sampler's
    settings, the state's shapes, dtypes and plain fields, the row budget and the draws."""
    parts = []
    for f in fields(state):
        v = getattr(state, f.name)
        if isinstance(v, torch.Tensor):
            parts.append((f.name, tuple(v.shape), v.dtype, str(v.device)))
        else:
            parts.append((f.name, repr(v)))
    return (repr(sampler), tuple(parts), rows, width, bool(compile))


def kept_round(cache: dict | None, key: tuple) -> RoundGraph | None:
    """The graph ``cache`` (a backend session's ``round_graphs``) holds for ``key``, if any."""
    if cache is None or not KEEP_ROUNDS or key not in cache:
        return None
    cache[key] = graph = cache.pop(key)  # most recently used last
    return graph


def keep_round(cache: dict | None, key: tuple, graph: RoundGraph, flags: torch.Tensor) -> None:
    """Keep a CUDA round graph for the next session of the same shape (at most MAX_KEPT)."""
    if cache is None or not KEEP_ROUNDS or graph.state.n.device.type != "cuda":
        return  # elsewhere the "graph" runs Python on this run's session: never reused
    graph.flags = flags
    cache[key] = graph
    while len(cache) > MAX_KEPT:
        cache.pop(next(iter(cache)))


def _tensors(state: State) -> list[str]:
    return [f.name for f in fields(state) if isinstance(getattr(state, f.name), torch.Tensor)]


def compiled_step(sampler) -> Callable:
    """``sampler.step`` through ``torch.compile`` (static shapes, one graph per sampler and
    batch shape; each distinct sampler configuration is a separate compiled entry)."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # renamed across torch releases
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
    return torch.compile(sampler.step, dynamic=False)


def _compile_key(sampler, state: State, session) -> tuple:
    """(sampler settings, batch shape, device, model): one compiled round each."""
    backend = getattr(session, "session", session)
    model = getattr(backend, "engine", backend)
    return (repr(sampler), tuple(state.tokens.shape), state.k, str(state.n.device), id(model))


def _may_compile(sampler, state: State, session) -> bool:
    """Count this (sampler settings, batch shape, model) as compiled, unless its compilation
    failed before (False, silently: it warned then) or MAX_COMPILED distinct ones already are
    (then warn: this round runs uncompiled)."""
    key = _compile_key(sampler, state, session)
    with _compiled_lock:
        if key in _failed:
            return False
        if key in _compiled or len(_compiled) < MAX_COMPILED:
            _compiled.add(key)
            return True
    warnings.warn(
        f"{MAX_COMPILED} distinct rounds (sampler settings x batch shape x model) are compiled "
        f"in this process already: {sampler.name} at width {state.tokens.shape[1]} runs "
        "uncompiled (use fewer temperatures, k or widths, e.g. infills_to_batch(pad_to=64))",
        stacklevel=4,
    )
    return False


def _step_on(step, st: State, session, rng, block: torch.Tensor, rows: int):
    """``step(st)`` reading the static block of uniforms, with the backend sync-free."""
    saved = rng.block, rng.used, rng.frozen
    rng.block, rng.used, rng.frozen = block, 0, True
    try:
        with session.sync_free(rows):
            return step(st, session, rng)
    finally:
        rng.block, rng.used, rng.frozen = saved


def copy_state(state: State) -> State:
    """The state with every tensor cloned."""
    return replace(state, **{f: getattr(state, f).clone() for f in _tensors(state)})


def capture_round(sampler, state: State, session, rng, compile: bool = False) -> RoundGraph | None:
    """Capture one round of ``sampler`` from ``state`` (None, with a warning, if it fails).
    ``compile``: the round's step goes through ``torch.compile`` first (module docstring); if
    compiling fails, rounds run uncompiled, with a warning.

    Warm-up rounds run on a copy of the state: their cache writes are the ones the first replay
    makes again (same tokens); their state change is discarded."""
    device = state.n.device
    static = copy_state(state)
    block = torch.zeros(state.n.shape[0], rng.width, device=device)
    rows = max_new_rows(state)
    step = sampler.step
    if compile and _may_compile(sampler, state, session):
        try:  # compile now, on a copy (on CUDA: before the capture, which cannot compile);
            with CAPTURE_LOCK:  # no other thread captures while this one compiles
                step = compiled_step(sampler)
                _step_on(step, copy_state(static), session, rng, block, rows)
        except Exception as e:  # no compiler on this machine, an unsupported op, ...
            warnings.warn(
                f"compiling the round failed, rounds run uncompiled (not tried again for "
                f"{sampler.name} at this shape in this process): {e}",
                stacklevel=3,
            )
            with _compiled_lock:
                key = _compile_key(sampler, state, session)
                _compiled.discard(key)
                _failed.add(key)
            step = sampler.step

    def round_in_place() -> RoundRecord:
        """One round on the static buffers, reading the static block of uniforms."""
        out, record = _step_on(step, static, session, rng, block, rows)
        # The record may hold the round's *input* buffers (start = n, active): copy those out
        # before the in-place update below overwrites them with the next round's state.
        inputs = {id(getattr(static, name)) for name in _tensors(static)}
        record = replace(
            record,
            **{
                f.name: getattr(record, f.name).clone()
                for f in fields(record)
                if id(getattr(record, f.name)) in inputs
            },
        )
        for name in _tensors(static):
            src, dst = getattr(out, name), getattr(static, name)
            if src is not dst:
                dst.copy_(src)
        return record

    if device.type != "cuda":
        return RoundGraph(round_in_place, static, block)
    try:
        # One capture at a time per process; other threads' sessions keep running meanwhile.
        with CAPTURE_LOCK:
            # Warm up on a side stream (lazy allocations, library handles).
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                _step_on(step, copy_state(static), session, rng, block, rows)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                record = round_in_place()
    except Exception as e:  # anything not capturable on this build: stay eager
        warnings.warn(f"round capture failed, running rounds eagerly: {e}", stacklevel=3)
        return None

    def replay() -> RoundRecord:
        graph.replay()
        return record

    return RoundGraph(replay, static, block)
