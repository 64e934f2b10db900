"""The sampling loop: batched, streaming, seeded through ``torch.Generator``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm.auto import tqdm

from ..model import ASARM, Batch, Session, make_batch
from ..rng import Rng, TorchRng
from .result import RoundTrace, SampleResult
from .state import RoundRecord, State


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
    nfe: list[int]  # network calls so far, per row
    rounds: list[int]  # rounds so far, per row
    generated: list[int]  # tokens committed so far, per row
    done: list[bool]


def _checked_batch(model: ASARM, batch: Batch) -> Batch:
    b = make_batch(
        batch.tokens, batch.sigma, batch.n_prompt, batch.length,
        vocab_size=model.vocab_size, max_length=model.max_length, needs_prompt=model.needs_prompt,
    )  # fmt: skip
    return b.to(model.device)


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
        s, d, a, e, c = (
            r["start"][b],
            r["drafted"][b],
            r["accepted"][b],
            r["extra"][b],
            r["committed"][b],
        )
        drafted = [pos[b][s + i] for i in range(d)]
        extra_pos = pos[b][s + a] if e else None
        out.append(
            RoundTrace(
                drafted=drafted,
                accepted=drafted[:a],
                resampled=extra_pos if e == 1 else None,
                exact=extra_pos if e == 2 else None,
                p_draft=r["p_draft"][b][:d],
                p_oracle=r["p_oracle"][b][:d],
                tokens={pos[b][s + i]: toks[b][pos[b][s + i]] for i in range(c)},
                calls=r["calls"][b],
            )
        )
    return out


def rounds(
    model: ASARM, batch: Batch, sampler: Sampler, generator: torch.Generator | None = None
) -> Iterator[tuple[State, RoundRecord]]:
    """The bare loop: yields the device-side (state, record) after every round, no host copies.

    One host sync a round (is any row still active?) on top of what the backend needs.
    """
    batch = _checked_batch(model, batch)
    session = model.open(batch)
    state = sampler.init(batch, model.forbidden_ids, model.vocab_size)
    rng = TorchRng(generator)
    while bool(state.active.any()):
        state, rec = sampler.step(state, session, rng)
        yield state, rec


def generate(
    model: ASARM,
    batch: Batch,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    *,
    trace: bool = True,
) -> Iterator[RoundEvent]:
    """Run ``sampler`` on ``batch``, yielding a :class:`RoundEvent` (on the CPU) after every round.

    The final state is the last event's tokens. Use :func:`sample` for finished results.
    """
    n_prompt = batch.n_prompt
    for i, (state, rec) in enumerate(rounds(model, batch, sampler, generator), 1):
        traces = traces_of(rec, state) if trace else [None] * batch.size
        yield RoundEvent(
            i, state.tokens.cpu(), traces, state.nfe.tolist(), state.rounds.tolist(),
            (state.n - n_prompt.to(state.n.device)).tolist(), (~state.active).tolist(),
        )  # fmt: skip


def sample(
    model: ASARM,
    batch: Batch,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    *,
    trace: bool = True,
    callback: Callable[[RoundEvent], None] | None = None,
    progress: bool = False,
) -> list[SampleResult]:
    """Sample every row of ``batch`` to completion; one :class:`SampleResult` per row.

    With ``trace=False`` and no callback or progress bar nothing leaves the device until the end
    (the fast path for benchmarks and evaluations).
    """
    B = batch.size
    gen = (batch.length - batch.n_prompt).tolist()
    if not (trace or callback or progress):
        state = None
        for state, _ in rounds(model, batch, sampler, generator):  # noqa: B007 (the last one)
            pass
        assert state is not None
        toks, nfe, rnd = state.tokens.tolist(), state.nfe.tolist(), state.rounds.tolist()
        return [SampleResult(toks[b], nfe[b], rnd[b], gen[b], []) for b in range(B)]
    traces: list[list[RoundTrace]] = [[] for _ in range(B)]
    event = None
    bar = tqdm(total=sum(gen), desc=sampler.name, disable=not progress, unit="tok")
    for event in generate(model, batch, sampler, generator, trace=trace):
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
        SampleResult(event.tokens[b].tolist(), event.nfe[b], event.rounds[b], gen[b], traces[b])
        for b in range(B)
    ]
