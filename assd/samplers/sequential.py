"""Sequential decoding (the exact reference) and mean-field parallel decoding (not exact)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import Batch, Session, draft_queries
from ..probs import to_probs
from ..rng import Rng
from .state import Outcome, RoundRecord, State, init_state
from .validate import check_k, check_temperature


def _commit_parallel(state: State, session: Session, rng: Rng, k: int, temperature: float):
    """One call: predict ranks n..n+k-1 given ranks < n, commit all of them."""
    act = state.active
    q_rank, q_ctx = draft_queries(state.n, k, state.end)
    valid = (q_rank >= 0) & act[:, None]
    q_rank, q_ctx = torch.where(valid, q_rank, -1), torch.where(valid, q_ctx, -1)
    zero = torch.zeros_like(state.n)
    p = to_probs(
        session.logits(state.tokens, state.n, zero, q_rank, q_ctx), temperature, state.forbidden
    )
    x = rng.categorical(p, valid)
    tokens = state.place(state.tokens, q_rank, x, valid)
    drafted = valid.sum(-1)
    calls = act.long()
    px = torch.gather(p, -1, x.unsqueeze(-1)).squeeze(-1)
    rec = RoundRecord(
        active=act,
        start=state.n,
        drafted=drafted,
        accepted=drafted,
        outcome=torch.full_like(zero, int(Outcome.NONE)),
        committed=drafted,
        calls=calls,
        draft_calls=zero,
        p_draft=px,
        p_oracle=px,
    )
    return state.commit(tokens, state.n + drafted, calls), rec


@dataclass(frozen=True)
class Sequential:
    """One rank per network call, each drawn from its exact conditional: the reference sampler."""

    temperature: float = 1.0
    name = "sequential"
    exact = True

    def __post_init__(self):
        check_temperature(self.temperature)

    def init(self, batch: Batch, forbidden: tuple[int, ...], vocab_size: int) -> State:
        return init_state(batch, forbidden, vocab_size, 1)

    def step(self, state: State, session: Session, rng: Rng) -> tuple[State, RoundRecord]:
        return _commit_parallel(state, session, rng, 1, self.temperature)


@dataclass(frozen=True)
class MeanField:
    """Unverified parallel decoding (diffusion-style): k independent drafts committed per call.

    NOT exact: the k tokens are drawn from their marginals given ranks < n, ignoring each
    other. It is the baseline that exact ASSD is compared against.
    """

    k: int = 2
    temperature: float = 1.0
    name = "mean-field"
    exact = False

    def __post_init__(self):
        check_k(self.k)
        check_temperature(self.temperature)

    def init(self, batch: Batch, forbidden: tuple[int, ...], vocab_size: int) -> State:
        return init_state(batch, forbidden, vocab_size, self.k)

    def step(self, state: State, session: Session, rng: Rng) -> tuple[State, RoundRecord]:
        return _commit_parallel(state, session, rng, state.k, self.temperature)
