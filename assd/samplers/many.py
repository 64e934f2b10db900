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

CPU_LAG = 0  # rounds a CPU run sees its "finished" flags late (tests: what a GPU run sees)


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
    :func:`assd.sample`). Which rows finished is read without waiting for the device: each
    round's flags are copied to the host asynchronously and looked at once they arrive (on a
    GPU a round or two later), so the host keeps queueing rounds and a finished row idles only
    until its flag is seen. A refill itself waits for the device (it reads the finished rows'
    results and the new prompts' sizes): once per round in which rows finish.
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

    # Each round's "row finished" flags, copied to the host without a sync: (round, event,
    # flags); a row's flag counts only if taken after the row's last refill.
    pending: list = []
    refilled_at = [0] * B
    n_round = 0
    cuda = dev.type == "cuda"

    def finished_rows(state: State, wait: bool) -> list[bool]:
        """Rows seen finished in the newest flags that reached the host (waiting for them
        only when ``wait``: before a host read that ends the run if no row is active)."""
        nonlocal n_round
        n_round += 1
        done = ~state.active
        if not cuda:  # flags arrive at once (or CPU_LAG rounds late: how tests mimic a GPU)
            due = n_round + CPU_LAG
            pending.append((n_round, lambda due=due: n_round >= due, done.tolist(), None))
        else:
            host = torch.empty(done.shape, dtype=torch.bool, pin_memory=True)
            host.copy_(done, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            pending.append((n_round, event.query, host, event))
        seen = None
        while pending and (wait or pending[0][1]()):
            seen = pending.pop(0)
        if seen is None:
            return [False] * B
        r, _, flags, event = seen
        if event is not None:
            event.synchronize()  # done already unless ``wait``
        flags = flags if isinstance(flags, list) else flags.tolist()
        return [bool(f) and r > refilled_at[i] for i, f in enumerate(flags)]

    def refill(state: State, session: CheckedSession, read: bool) -> None:
        if queue and n_round == 0:
            session.check_refill()  # after the first round, not when the first row finishes
        done = finished_rows(state, read)
        if not queue or not any(d and slot_of[i] >= 0 for i, d in enumerate(done)):
            return
        rows = collect(state, done)[: len(queue)]
        if not rows:
            return
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
            refilled_at[r] = n_round

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
