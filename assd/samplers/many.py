"""Continuous batching: many sequences through a fixed number of rows, refilled as rows finish.

Why. A batch of speculative rows runs until its slowest row is done, and rows finish apart:
on an H200 with the trained embedded models a batch of 8 ran 7-18% more rounds than its mean
row needed (sequential decoding has no such tail: every row takes one token a round). With more
sequences than rows, a row that finishes can take the next sequence at once, so the rows stay
busy and only the very last sequences leave a tail.

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

    sync_every: rounds between the host's reads of "is any row active?" (default: as in
    :func:`assd.sample`: 8 on CUDA, 1 elsewhere). Finished rows are refilled at those reads
    only (the host then waits for the device anyway), in CUDA-graph and eager runs alike, so
    the tokens for a seed do not depend on how far the host runs ahead of the device; a
    finished row idles until the next read (on average about sync_every / 2 rounds).
    graphs, compile: as in :func:`assd.sample` (whole rounds replayed as CUDA graphs; compiled).
    The backend must support ``Session.refill`` (the engine, the reference and the toy do).
    """
    check_arguments(model, batch, sampler, generator)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"batch_size must be an int >= 1 (rows sampled at once), got {batch_size!r}"
        )
    batch = checked_batch(model, batch)
    N, B = batch.size, min(batch_size, batch.size)
    dev = batch.tokens.device
    every = sync_every if sync_every is not None else (SYNC_EVERY if dev.type == "cuda" else 1)
    # The sequence with the most tokens to generate goes first: the state's proposal width k
    # is capped at the most any row of the first batch generates, and must fit every later one.
    gen = batch.length - batch.n_prompt
    widest = int(gen.argmax())
    order = [widest] + [i for i in range(N) if i != widest]
    slot_of = order[:B]  # the sequence each row holds (-1: none)
    queue = order[B:]
    results: list[SampleResult | None] = [None] * N
    n_gen = gen.tolist()

    def collect(state: State, done: list[bool]) -> list[int]:
        """Results of the rows that finished since the last look; returns those rows."""
        rows = [r for r in range(B) if done[r] and slot_of[r] >= 0]
        if rows:
            idx = torch.tensor(rows, device=state.tokens.device)
            toks = state.tokens[idx].tolist()
            nfe, rnd = state.nfe[idx].tolist(), state.rounds[idx].tolist()
            dc = state.draft_calls[idx].tolist()
            for j, r in enumerate(rows):
                i = slot_of[r]
                results[i] = SampleResult(toks[j], nfe[j], rnd[j], n_gen[i], [], dc[j])
                slot_of[r] = -1
        return rows

    n_round = 0

    def refill(state: State, session: CheckedSession, read: bool) -> bool:
        """Every ``every`` rounds (where a CUDA-graph run reads the host anyway; the same
        rounds eager, so both give the same tokens for a seed), finished rows take the next
        sequences. Returns whether sequences still wait (the run must not stop yet)."""
        nonlocal n_round
        n_round += 1
        if queue and n_round == 1:
            session.check_refill()  # after the first round, not when the first row finishes
        if not queue or n_round % every:
            return bool(queue)
        done = (~state.active).tolist()  # the host waits for the device here
        rows = collect(state, done)[: len(queue)]
        if not rows:
            return True
        take = [queue.pop(0) for _ in rows]
        new = rows_of(batch, torch.tensor(take, device=dev))
        # Initial state of the new sequences, with the widest sequence beside them so that k
        # (and every shape that depends on it) is the running state's.
        fresh = sampler.init(
            rows_of(batch, torch.tensor(take + [widest], device=dev)),
            model.forbidden_ids,
            model.vocab_size,
        )
        if fresh.k != state.k:  # cannot happen: the widest sequence is in both
            raise RuntimeError(f"refill: proposal width {fresh.k} != {state.k}")
        idx = torch.tensor(rows, device=state.tokens.device)
        session.refill(idx, new)
        R = len(rows)
        for f in fields(state):
            dst = getattr(state, f.name)
            if isinstance(dst, torch.Tensor):
                dst[idx] = getattr(fresh, f.name)[:R].to(dst.device, dst.dtype)
        for r, i in zip(rows, take):
            slot_of[r] = i
        return bool(queue)

    first = rows_of(batch, torch.tensor(slot_of, device=dev))
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
    if last is not None:  # rows that finished in the last rounds
        collect(last, (~last.active).tolist())
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:  # cannot happen: every sequence was put into a row and ran until done
        raise RuntimeError(f"sample_many: no result for rows {missing[:5]}")
    return results  # type: ignore[return-value]
