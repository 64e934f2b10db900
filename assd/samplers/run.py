"""The sampling loop: batched, streaming, seeded through ``torch.Generator``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm.auto import tqdm

from ..model import ASARM, Batch, Session, Tree, checked_batch, logits_by_paths, write_rows
from ..rng import Rng, TorchRng
from .graphs import (
    WARM_ROUNDS,
    capture_round,
    copy_state,
    keep_round,
    kept_round,
    max_new_rows,
    round_key,
)
from .result import RoundTrace, SampleResult
from .state import Outcome, RoundRecord, State

SYNC_EVERY = 8  # rounds between host reads in sample(trace=False) on CUDA (see rounds)


class Sampler(Protocol):
    name: str

    def init(self, batch: Batch, forbidden: tuple[int, ...], vocab_size: int) -> State: ...

    def step(self, state: State, session: Session, rng: Rng) -> tuple[State, RoundRecord]: ...


@dataclass
class RoundEvent:
    """Yielded after every round: the batch's tokens so far and each row's trace of the round."""

    round: int
    tokens: torch.Tensor  # [B, L] on the CPU
    traces: list[RoundTrace | None]  # None for rows that were already done
    nfe: list[int]  # target-model calls so far, per row
    rounds: list[int]  # rounds so far, per row
    generated: list[int]  # tokens committed so far, per row
    done: list[bool]
    draft_calls: list[int] | None = None  # draft-head calls so far, per row


def check_arguments(model, batch, sampler, generator) -> None:
    """TypeErrors that name the argument and the fix, before anything runs."""
    if not (hasattr(model, "open") and hasattr(model, "vocab_size")):
        raise TypeError(
            f"model must be an assd model (ASARM: .open, .vocab_size), got {type(model).__name__}: "
            "use assd.load(...).model or a backend from assd.backends"
        )
    if not isinstance(batch, Batch):
        raise TypeError(
            f"batch must be an assd.Batch, got {type(batch).__name__}: build one with "
            "assd.make_batch(tokens, sigma, n_prompt) or assd.text.infills_to_batch(...)"
        )
    if not (hasattr(sampler, "init") and hasattr(sampler, "step")):
        raise TypeError(
            f"sampler must be an assd sampler such as assd.ASSD(k=5) or assd.Sequential(), "
            f"got {type(sampler).__name__}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}: "
            "use assd.rng.generator(seed, device) (or torch.Generator(device).manual_seed(seed))"
        )
    V = int(model.vocab_size)
    bad = [i for i in getattr(model, "forbidden_ids", ()) if not 0 <= int(i) < V]
    if bad:
        raise ValueError(
            f"{type(model).__name__}.forbidden_ids holds ids outside the vocabulary [0, {V}): "
            f"{bad[:5]}: drop them or fix vocab_size"
        )
    if len(set(int(i) for i in getattr(model, "forbidden_ids", ()))) >= V:
        raise ValueError(
            f"every token id of {type(model).__name__} is forbidden (forbidden_ids covers the "
            f"whole vocabulary of {V}): nothing could be generated; forbid fewer ids"
        )
    if getattr(sampler, "needs_draft_head", False) and not getattr(model, "has_draft_head", False):
        raise ValueError(
            f"{sampler.name} drafts with the model's draft head, but {type(model).__name__} has "
            "none: load a model that ships one (e.g. assd.load('prose')) or use draft='self'"
        )


class CheckedSession:
    """A backend's session whose answers are checked: a wrong shape or dtype raises at once;
    non-finite logits raise at the next round's sync (the flag stays on the device)."""

    def __init__(self, session: Session, model: ASARM, batch: Batch):
        self.session, self.name, self.batch = session, type(model).__name__, batch
        device = batch.tokens.device
        self.vocab_size = int(model.vocab_size)
        # [1 + backend errors] bools on the device: some logits were not finite, then whatever
        # the backend flags in sync-free mode. Read (and cleared) at the round's one sync.
        self.n_backend = len(getattr(session, "errors", ()))
        self.flags = torch.zeros(1 + self.n_backend, dtype=torch.bool, device=device)

    def logits(self, tokens, n, m, q_rank, q_ctx, tree: Tree | None = None) -> torch.Tensor:
        if tree is None:
            out = self.session.logits(tokens, n, m, q_rank, q_ctx)
        elif getattr(self.session, "supports_tree", False):
            out = self.session.logits(tokens, n, m, q_rank, q_ctx, tree=tree)
        else:  # a backend without trees: one plain call per query that reads a node
            fn = self.session.logits
            out = logits_by_paths(fn, self.batch, tokens, n, m, q_rank, q_ctx, tree)
        return self._check(out, q_rank, "logits")

    def check_refill(self) -> None:
        """Raise a clear error unless the backend's sessions can take new sequences."""
        if getattr(self.session, "refill", None) is None:
            raise TypeError(
                f"{self.name} sessions cannot take new sequences into finished rows (no "
                "refill method): use assd.sample on batches instead of assd.sample_many"
            )

    def refill(self, rows: torch.Tensor, batch: Batch) -> None:
        """Rows [R] take the sequences of ``batch`` (``Session.refill``; ``sample_many``)."""
        self.check_refill()
        write_rows(self.batch, rows, batch)
        self.session.refill(rows, batch)

    def draft_logits(self, tokens, q_rank, q_ctx, q_feat) -> torch.Tensor:
        out = self.session.draft_logits(tokens, q_rank, q_ctx, q_feat)
        return self._check(out, q_rank, "draft_logits")

    def _check(self, out, q_rank, what: str) -> torch.Tensor:
        want = (*q_rank.shape, self.vocab_size)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"{self.name}.open(...).{what} returned {type(out).__name__}: a backend must "
                f"return a torch.Tensor of shape {want} (convert with torch.as_tensor)"
            )
        if tuple(out.shape) != want:
            raise ValueError(
                f"{self.name}.open(...).{what} returned shape {tuple(out.shape)}, expected "
                f"{want} (batch, queries, vocab_size={self.vocab_size}): the last dimension "
                "must be the model's vocabulary size"
            )
        if not out.is_floating_point():
            raise TypeError(
                f"{self.name}.open(...).{what} returned {out.dtype}: logits must be float"
            )
        # Padding queries may hold anything finite, real ones must be finite: one flag, no sync.
        self.flags[0] |= ~torch.isfinite(out).all()
        return out

    def round_flags(self) -> torch.Tensor:
        """[1 + backend errors] device bools to read with the round's one sync."""
        if self.n_backend:
            self.flags[1:] = self.session.errors
        return self.flags

    def raise_if_bad(self, flags: list[bool]) -> None:
        """Raise for the flags read at the sync (and clear them)."""
        self.flags.zero_()
        if flags and flags[0]:
            raise ValueError(
                f"{self.name} returned NaN or infinite logits: check the model's weights and "
                "dtype (float16 overflow?) and the inputs"
            )
        if any(flags[1:]):
            self.session.raise_errors(flags[1:])

    def sync_free(self, max_rows: int):
        return self.session.sync_free(max_rows)

    @property
    def can_sync_free(self) -> bool:
        return hasattr(self.session, "sync_free")


def traces_of(record: RoundRecord, state: State) -> list[RoundTrace | None]:
    """Turn a batched round record into per-row traces (one host sync)."""
    r = {k: v.tolist() for k, v in vars(record).items()}
    pos = state.pos_of_rank.tolist()
    toks = state.tokens.tolist()
    out: list[RoundTrace | None] = []
    for b in range(len(r["active"])):
        if not r["active"][b]:
            out.append(None)
            continue
        s, d, a = r["start"][b], r["drafted"][b], r["accepted"][b]
        outcome, c = Outcome(r["outcome"][b]), r["committed"][b]
        drafted = [pos[b][s + i] for i in range(d)]
        last = pos[b][s + a] if outcome != Outcome.NONE else None
        if outcome == Outcome.SIBLING:  # a sibling replaced the rejected proposal, then maybe
            resampled, exact = last, (pos[b][s + a + 1] if c > a + 1 else None)  # a bonus
        else:
            resampled = last if outcome == Outcome.RESIDUAL else None
            exact = last if outcome == Outcome.EXACT else None
        out.append(
            RoundTrace(
                drafted=drafted,
                accepted=drafted[:a],
                resampled=resampled,
                exact=exact,
                p_draft=r["p_draft"][b][:d],
                p_oracle=r["p_oracle"][b][:d],
                tokens={pos[b][s + i]: toks[b][pos[b][s + i]] for i in range(c)},
                calls=r["calls"][b],
                draft_calls=r["draft_calls"][b],
            )
        )
    return out


def rounds(
    model: ASARM,
    batch: Batch,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    *,
    graphs: bool | None = None,
    sync_free: bool | None = None,
    compile: bool | None = None,
    sync_every: int = 1,
    between: Callable[[State, CheckedSession, bool], bool] | None = None,
) -> Iterator[tuple[State, RoundRecord]]:
    """The bare loop: yields the device-side (state, record) after every round, no host copies.

    One host sync a round (is any row still active? did the backend return bad logits?) on top
    of what the backend needs. graphs (default: on CUDA, with a backend that can run sync-free):
    after WARM_ROUNDS eager rounds, each round is one replay of a captured CUDA graph of the
    sampler's whole step. sync_free (default: on CUDA, or with graphs): every round runs with
    the backend's fixed shapes, eager or replayed, so both give the same tokens for a seed.
    compile: the captured round's step goes through ``torch.compile`` (fused kernels: fewer
    launches per replay; compiles once per sampler and batch shape; see ``graphs.py``). It
    needs the round machinery (graphs is then on by default, on any device). None: the model's
    preference (``compile_rounds``, set by ``assd.load(..., compile=True)``), else off.
    sync_every: read the "any row active?" flag (and the error flags) every this many rounds
    only, so the host queues rounds ahead of the device instead of waiting for each one. Rounds
    after every row has finished change nothing (a finished row draws no calls and commits
    nothing; they do draw their uniforms from the generator), so up to sync_every - 1 idle
    rounds may be yielded at the end; errors surface at the next read. 1: every round (what
    streaming consumers need).
    between: called as between(state, session, read) after every round, before that round's
    host read if it has one (read: it has; the host then waits for the device anyway): it may
    change rows of the state in place (``sample_many`` puts new sequences into finished rows).
    It returns whether work is still waiting: then the loop goes on even if no row is active
    (the rows are refilled at a later round).
    """
    if not isinstance(sync_every, int) or sync_every < 1:
        raise ValueError(f"sync_every must be an int >= 1, got {sync_every!r}")
    check_arguments(model, batch, sampler, generator)
    if compile is None:  # the model's preference, unless graphs are explicitly off
        compile = bool(getattr(model, "compile_rounds", False)) and graphs is not False
    batch = checked_batch(model, batch)
    device = batch.tokens.device
    session = CheckedSession(model.open(batch), model, batch)
    state = sampler.init(batch, model.forbidden_ids, model.vocab_size)
    rng = TorchRng(generator)
    cuda = device.type == "cuda"
    graphs = ((cuda or compile) if graphs is None else graphs) and session.can_sync_free
    static = (cuda or graphs if sync_free is None else sync_free) and session.can_sync_free
    if compile and not graphs:
        raise ValueError(
            "compile=True compiles the captured round: it needs graphs=True or None (any device) "
            "and a backend that can run sync-free, such as the engine (XLNetEngine)"
        )
    rows = max_new_rows(state)
    graph, n_round = None, 0
    # A round graph captured by an earlier session of this backend workspace (CUDA): it reads
    # and writes the workspace's buffers, so this run replays it from its first round on,
    # without eager rounds and the capture (tens of milliseconds a run on a GPU). Unless the
    # round reads more uniforms than TorchRng's starting block: then the first round stays
    # eager, since it draws them in pieces and a replay would read other numbers for the seed.
    kept = getattr(session.session, "round_graphs", None) if graphs and cuda else None
    key = round_key(sampler, state, rows, rng.width, compile) if kept is not None else None
    pending = kept_round(kept, key) if kept is not None else None
    going = bool(state.active.any())
    while going:
        n_round += 1
        if pending is not None and (n_round > 1 or pending.first_round):
            graph, pending = pending, None
            state = graph.load(state)
            session.flags = graph.flags
            session.flags.zero_()
        if graphs and graph is None and n_round > WARM_ROUNDS:
            graph = capture_round(sampler, state, session, rng, compile)  # None: cannot capture
            graphs = graph is not None
            if graph is not None and kept is not None:
                graph.first_round = not rng.grown  # the first round read the same block
                keep_round(kept, key, graph, session.flags)
        if graph is not None:
            state, rec = graph.replay(rng)
        else:
            rng.start_round(batch.size, device)
            with session.sync_free(rows) if static else contextlib.nullcontext():
                state, rec = sampler.step(state, session, rng)
        read = n_round % sync_every == 0 or graph is None  # eager rounds: every round
        waiting = between is not None and between(state, session, read)
        if read:
            flags = torch.cat([state.active.any()[None], session.round_flags()]).tolist()
            going = flags[0] or waiting  # the round's one host sync
            session.raise_if_bad(flags[1:])
        if graph is not None and not going:  # the static buffers serve the next run: a copy
            state = copy_state(state)
        yield state, rec


def generate(
    model: ASARM,
    batch: Batch,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    *,
    trace: bool = True,
    graphs: bool | None = None,
    compile: bool | None = None,
) -> Iterator[RoundEvent]:
    """Run ``sampler`` on ``batch``, yielding a :class:`RoundEvent` (on the CPU) after every round.

    The final state is the last event's tokens. Use :func:`sample` for finished results.
    """
    check_arguments(model, batch, sampler, generator)
    n_prompt = batch.n_prompt
    run = rounds(model, batch, sampler, generator, graphs=graphs, compile=compile)
    for i, (state, rec) in enumerate(run, 1):
        traces = traces_of(rec, state) if trace else [None] * batch.size
        yield RoundEvent(
            i,
            state.tokens.cpu(),
            traces,
            state.nfe.tolist(),
            state.rounds.tolist(),
            (state.n - n_prompt.to(state.n.device)).tolist(),
            (~state.active).tolist(),
            state.draft_calls.tolist(),
        )


def sample(
    model: ASARM,
    batch: Batch,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    *,
    trace: bool = True,
    callback: Callable[[RoundEvent], None] | None = None,
    progress: bool = False,
    graphs: bool | None = None,
    compile: bool | None = None,
    sync_every: int | None = None,
) -> list[SampleResult]:
    """Sample every row of ``batch`` to completion; one :class:`SampleResult` per row.

    With ``trace=False`` and no callback or progress bar nothing leaves the device until the end
    (the fast path for benchmarks and evaluations). ``graphs``: replay whole rounds as CUDA
    graphs (default: on CUDA with the engine; see :func:`rounds`); ``compile``: fuse each
    captured round's kernels with ``torch.compile`` (see :func:`rounds`). ``sync_every``: rounds
    between host reads of the "any row active?" flag on the fast path (None: SYNC_EVERY on CUDA,
    where the host then queues rounds ahead of the device, 1 elsewhere; see :func:`rounds`).
    """
    check_arguments(model, batch, sampler, generator)
    B = batch.size
    gen = (batch.length - batch.n_prompt).tolist()
    if not (trace or callback or progress):
        state = None
        dev = torch.device(getattr(model, "device", batch.tokens.device))  # where rounds run
        cuda_dev = dev.type == "cuda"  # a CPU has no queue of launches to fill
        every = sync_every if sync_every is not None else (SYNC_EVERY if cuda_dev else 1)
        run = rounds(
            model, batch, sampler, generator, graphs=graphs, compile=compile, sync_every=every
        )
        for last, _ in run:
            state = last
        assert state is not None
        toks, nfe, rnd = state.tokens.tolist(), state.nfe.tolist(), state.rounds.tolist()
        dc = state.draft_calls.tolist()
        return [SampleResult(toks[b], nfe[b], rnd[b], gen[b], [], dc[b]) for b in range(B)]
    traces: list[list[RoundTrace]] = [[] for _ in range(B)]
    event = None
    bar = tqdm(total=sum(gen), desc=sampler.name, disable=not progress, unit="tok")
    events = generate(model, batch, sampler, generator, trace=trace, graphs=graphs, compile=compile)
    for event in events:
        for b, t in enumerate(event.traces):
            if t is not None:
                traces[b].append(t)
        if progress:
            bar.n = sum(event.generated)
            bar.refresh()
        if callback is not None:
            callback(event)
    bar.close()
    assert event is not None
    return [
        SampleResult(
            event.tokens[b].tolist(),
            event.nfe[b],
            event.rounds[b],
            gen[b],
            traces[b],
            event.draft_calls[b],
        )
        for b in range(B)
    ]
