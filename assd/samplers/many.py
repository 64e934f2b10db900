"""Continuous batching: many sequences through a fixed number of rows, refilled as rows finish.

Why. A batch of speculative rows runs until its slowest row is done, and rows finish apart:
on an H200 with the trained embedded models a batch of 8 ran 7-18% more rounds than its mean
row needed (sequential decoding has no such tail: every row takes one token a round). With more
sequences than rows, a row that finishes can take the next sequence at once, so the rows stay
busy and only the very last sequences leave a tail. Measured on the H200 (round 10, README):
about as fast as plain batches of 8, not faster, since a refill event costs ~2 ms (half of it
encoding the new prompts) and a finished row waits for the next host read; it is for serving a
stream of sequences through fixed rows.

Exact: a refilled row starts from the sampler's own initial state for its new sequence
(``sampler.init``) and the backend forgets everything of the row's old sequence
(``Session.refill``), so each sequence's tokens are a fresh run of the sampler on it; when it
starts depends only on other sequences, whose random numbers are independent of its own.
"""

from __future__ import annotations

from dataclasses import fields

import torch

from ..model import ASARM, Batch, checked_batch, rows_of
from .result import SampleResult
from .run import SYNC_EVERY, CheckedSession, Sampler, check_arguments, rounds
from .state import State


def sample_many(
    model: ASARM,
    batch: Batch,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    *,
    batch_size: int,
    graphs: bool | None = None,
    compile: bool | None = None,
    sync_every: int | None = None,
) -> list[SampleResult]:
    """Sample every row of ``batch`` (N sequences of one length L), at most ``batch_size`` at a
    time: a finished row takes the next sequence. One :class:`SampleResult` per row of
    ``batch``, in its order (``rounds`` counts the sequence's own rounds; traces are empty).

    sync_every: finished rows are refilled every this many rounds only (default: as in
    :func:`assd.sample`: 8 on CUDA, 1 elsewhere), where CUDA-graph rounds read the host anyway
    (eager rounds read it every round but refill at the same rounds), so the tokens for a seed
    do not depend on how far the host runs ahead of the device; a finished row idles until the
    next refill (on average about sync_every / 2 rounds).
    graphs, compile: as in :func:`assd.sample` (whole rounds replayed as CUDA graphs; compiled).
    The backend must support ``Session.refill`` (the engine, the reference and the toy do).
    """
    check_arguments(model, batch, sampler, generator)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"batch_size must be an int >= 1 (rows sampled at once), got {batch_size!r}"
        )
    batch = checked_batch(model, batch)
    N, B, L = batch.size, min(batch_size, batch.size), batch.tokens.shape[1]
    dev = batch.tokens.device
    every = sync_every if sync_every is not None else (SYNC_EVERY if dev.type == "cuda" else 1)
    # The sequence with the most tokens to generate goes first: the state's proposal width k
    # is capped at the most any row of the first batch generates, and must fit every later one.
    gen = batch.length - batch.n_prompt
    widest = int(gen.argmax())
    order = [widest] + [i for i in range(N) if i != widest]
    slot_of = order[:B]  # the sequence each row holds (-1: none)
    n_next = B  # order[n_next:] still wait
    # Finished rows' results stay on the device until the end (a refill launches a few copies
    # and never waits for them): tokens and (nfe, rounds, draft_calls) of each sequence.
    out_tokens = torch.zeros(N, L, dtype=torch.long, device=dev)
    out_stats = torch.zeros(N, 3, dtype=torch.long, device=dev)

    def collect(state: State, rows: list[int]) -> None:
        """Copy the results of ``rows`` (finished) to their sequences' places."""
        idx = _indices([rows, [slot_of[r] for r in rows]], dev)
        out_tokens.index_copy_(0, idx[1], state.tokens.index_select(0, idx[0]).long())
        stats = torch.stack([state.nfe, state.rounds, state.draft_calls], 1)
        out_stats.index_copy_(0, idx[1], stats.index_select(0, idx[0]).long())
        for r in rows:
            slot_of[r] = -1

    # Initial states of the next sequences, made B at a time (one sampler.init, not one a
    # refill), with the widest sequence last so that k (and every shape that depends on it)
    # is the running state's: (first order index covered, state).
    chunk: list = [0, None]
    n_round = 0

    def initial(first: int, R: int, k: int) -> tuple[State, list[int]]:
        """The initial state holding order[first:first+R] (made if not made yet), its rows.
        (``first`` only grows, so a chunk made at c0 serves until it runs out.)"""
        if chunk[1] is None or first + R > chunk[0] + B:
            take = order[first : first + B] + [widest]
            fresh = rows_of(batch, _indices([take], dev)[0])
            chunk[:] = [first, sampler.init(fresh, model.forbidden_ids, model.vocab_size)]
            if chunk[1].k != k:  # cannot happen: the widest sequence is in both
                raise RuntimeError(f"refill: proposal width {chunk[1].k} != {k}")
        c0, made = chunk
        return made, list(range(first - c0, first - c0 + R))

    def refill(state: State, session: CheckedSession, read: bool) -> bool:
        """Every ``every`` rounds (where a CUDA-graph run reads the host anyway; the same
        rounds eager, so both give the same tokens for a seed), finished rows take the next
        sequences. Returns whether sequences still wait (the run must not stop yet)."""
        nonlocal n_round, n_next
        n_round += 1
        waiting = n_next < N
        if waiting and n_round == 1:
            session.check_refill()  # after the first round, not when the first row finishes
        if not waiting or n_round % every:
            return waiting
        done = (~state.active).tolist()  # the host waits for the device here
        rows = [r for r in range(B) if done[r] and slot_of[r] >= 0]
        if not rows:
            return True
        collect(state, rows)
        rows = rows[: N - n_next]
        R = len(rows)
        fresh, sel = initial(n_next, R, state.k)
        seqs = order[n_next : n_next + R]
        n_next += R
        idx = _indices([rows, sel, seqs], dev)
        session.refill(idx[0], rows_of(batch, idx[2]))
        for f in fields(state):
            dst = getattr(state, f.name)
            if isinstance(dst, torch.Tensor):
                src = getattr(fresh, f.name).index_select(0, idx[1])
                dst.index_copy_(0, idx[0], src.to(dst.device, dst.dtype))
        for r, i in zip(rows, seqs):
            slot_of[r] = i
        return n_next < N

    first = rows_of(batch, _indices([slot_of], dev)[0])
    last = None
    run = rounds(
        model,
        first,
        sampler,
        generator,
        graphs=graphs,
        compile=compile,
        sync_every=every,
        between=refill,
    )
    for state, _ in run:
        last = state
    held = [r for r in range(B) if slot_of[r] >= 0]
    if last is not None and held:  # rows that finished in the last rounds
        collect(last, held)
    if n_next < N:  # cannot happen: every sequence was put into a row and ran until done
        raise RuntimeError(f"sample_many: {N - n_next} sequences never got a row")
    toks, stats, n_gen = out_tokens.tolist(), out_stats.tolist(), gen.tolist()
    return [
        SampleResult(toks[i], nfe, rnd, n_gen[i], [], dc) for i, (nfe, rnd, dc) in enumerate(stats)
    ]


def _indices(lists: list[list[int]], device: torch.device) -> torch.Tensor:
    """Equal-length index lists -> a long tensor [len(lists), R] on ``device``, copied without
    waiting for the device (a pageable source is staged at once)."""
    return torch.tensor(lists, dtype=torch.long).to(device, non_blocking=True)
