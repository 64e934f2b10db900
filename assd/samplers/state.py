"""Sampler state between rounds and the per-round record, batched with a leading batch dim B.

Every sampler carries a :class:`State`; samplers that draw the next round's proposals ahead of
time (the one-call form, head drafts) carry a :class:`Carried` state with those proposals. A
round ends in one named :class:`Outcome` per row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import IntEnum
from typing import ClassVar

import torch

from ..model import Batch

# A row's running acceptance starts here (a trained draft head accepts 0.5-0.65 of its
# proposals) and moves by ACCEPT_RATE of the gap after each round with proposals.
ACCEPT_PRIOR = 0.6
ACCEPT_RATE = 0.25


class Outcome(IntEnum):
    """How a round ended, after its accepted prefix of proposals."""

    NONE = 0  # nothing drawn after the accepted proposals (all passed, no exact row left)
    RESIDUAL = 1  # the first rejected proposal was replaced by a draw from the residual
    EXACT = 2  # a token was drawn from an exact conditional (every proposal passed, or none)
    SIBLING = 3  # a sibling candidate replaced the first rejected proposal (a token tree), then
    # one exact token after it where one is left


@dataclass(kw_only=True)
class State:
    """Where every row of a batch stands between two rounds.

    tokens:  [B, L]  committed tokens in place (other positions hold the batch's blanks)
    blank:   [B, L]  the batch's original tokens (what uncommitted positions are reset to)
    sigma, pos_of_rank: [B, L]  the order and its inverse
    n:       [B]     ranks < n are committed
    end:     [B]     the row is done when n == end (its length)
    nfe, draft_calls, rounds: [B]  statistics: target-model calls, draft-head calls, rounds
    k: proposals per round, capped at the most tokens any row generates (shapes use it)
    forbidden: token ids that are never generated; vocab_size: V
    """

    tokens: torch.Tensor
    blank: torch.Tensor
    sigma: torch.Tensor
    pos_of_rank: torch.Tensor
    n: torch.Tensor
    end: torch.Tensor
    nfe: torch.Tensor
    draft_calls: torch.Tensor
    rounds: torch.Tensor
    k: int = 0
    forbidden: tuple[int, ...] = ()
    vocab_size: int = 0

    STATS: ClassVar[tuple[str, ...]] = ("nfe", "draft_calls", "rounds")  # not a row's identity
    PADDED: ClassVar[dict[str, str]] = {}  # field -> count field: only its first count entries

    @property
    def active(self) -> torch.Tensor:  # [B] bool
        return self.n < self.end

    def rank_to_pos(self, ranks: torch.Tensor) -> torch.Tensor:
        """ranks [B, K] (any values; out of range -> clamped) -> positions [B, K]."""
        L = self.tokens.shape[1]
        return torch.gather(self.pos_of_rank, 1, ranks.clamp(0, L - 1))

    def place(
        self, tokens: torch.Tensor, ranks: torch.Tensor, values: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Copy of tokens with values [B, K] written at ranks [B, K] where valid."""
        L = tokens.shape[1]
        # Invalid entries may alias valid positions: send them to a spare column (no host sync).
        pos = torch.where(valid, self.rank_to_pos(ranks), L)
        out = torch.cat([tokens, tokens[:, :1]], 1)
        out.scatter_(1, pos, values)
        return out[:, :L]

    def commit(
        self,
        tokens: torch.Tensor,
        new_n: torch.Tensor,
        calls: torch.Tensor,
        draft_calls: torch.Tensor | None = None,
        **carried: torch.Tensor,
    ) -> State:
        """Keep ranks < new_n of tokens, reset the rest to blanks, count calls and a round;
        ``carried`` sets the sampler's own fields (e.g. the next round's proposals)."""
        kept = torch.where(self.sigma < new_n[:, None], tokens, self.blank)
        spent = calls if draft_calls is None else calls + draft_calls
        return replace(
            self,
            tokens=kept,
            n=new_n,
            nfe=self.nfe + calls,
            draft_calls=self.draft_calls + (0 if draft_calls is None else draft_calls),
            rounds=self.rounds + (spent > 0).long(),
            **carried,
        )


@dataclass(kw_only=True)
class Carried(State):
    """A state that carries the next round's proposals, drawn a round ahead.

    next_x: [B, K]     proposals for ranks n .. n+next_k-1
    next_q: [B, K, V]  the draft distribution each was drawn from
    next_k: [B]        how many there are (0: none, e.g. before the first round)
    next_alt: [B, K, C-1]  sibling candidates of each proposal (a token tree of C candidates per
                       rank; -1: none), drawn from the same q without replacement
    accept:  [B]       running estimate of a proposal's acceptance probability (an exponential
                       average of min(1, p/q) over the row's verified proposals; ``adapt_k``)
    """

    next_x: torch.Tensor
    next_q: torch.Tensor
    next_k: torch.Tensor
    next_alt: torch.Tensor
    accept: torch.Tensor

    PADDED: ClassVar[dict[str, str]] = {
        "next_x": "next_k",
        "next_q": "next_k",
        "next_alt": "next_k",
    }


def init_state(
    batch: Batch,
    forbidden: tuple[int, ...],
    vocab_size: int,
    k: int = 0,
    carried: bool = False,
    siblings: int = 0,
) -> State:
    """The state before the first round. ``k`` is capped at the most tokens a row generates, so
    nothing is ever allocated for proposals that cannot exist (one host read, at the start).
    siblings: candidates carried beside each proposal (a token tree; carried states only)."""
    B = batch.size
    dev = batch.tokens.device
    zeros = torch.zeros(B, dtype=torch.long, device=dev)
    k = min(int(k), int((batch.length - batch.n_prompt).max())) if k else 0
    common = dict(
        tokens=batch.tokens.clone(),
        blank=batch.tokens.clone(),
        sigma=batch.sigma,
        pos_of_rank=batch.pos_of_rank,
        n=batch.n_prompt.clone(),
        end=batch.length.clone(),
        nfe=zeros.clone(),
        draft_calls=zeros.clone(),
        rounds=zeros.clone(),
        k=k,
        forbidden=tuple(forbidden),
        vocab_size=int(vocab_size),
    )
    if not carried:
        return State(**common)
    return Carried(
        **common,
        next_x=torch.zeros(B, k, dtype=torch.long, device=dev),
        next_q=torch.zeros(B, k, int(vocab_size), device=dev),
        next_k=zeros.clone(),
        next_alt=torch.full((B, k, siblings), -1, dtype=torch.long, device=dev),
        accept=torch.full((B,), ACCEPT_PRIOR, device=dev),
    )


def index_state(state: State, idx: torch.Tensor) -> State:
    """Rows idx of a state (every batched tensor indexed along dim 0)."""
    return replace(state, **{f.name: getattr(state, f.name)[idx] for f in _tensor_fields(state)})


def _tensor_fields(state: State):
    return [f for f in fields(state) if isinstance(getattr(state, f.name), torch.Tensor)]


def state_key(state: State, row: int) -> bytes:
    """Identity of one row (everything that determines its future; statistics excluded)."""
    parts = []
    for f in _tensor_fields(state):
        if f.name in state.STATS:
            continue
        t = getattr(state, f.name)[row]
        if f.name in state.PADDED:
            t = t[: int(getattr(state, state.PADDED[f.name])[row])]
        parts.append(t.detach().cpu().contiguous().numpy().tobytes())
    return b"|".join(parts)


def cat_states(states: list[State]) -> State:
    """Stack states (same type, L, K, V) along the batch dim."""
    first = states[0]
    return replace(
        first,
        **{f.name: torch.cat([getattr(s, f.name) for s in states]) for f in _tensor_fields(first)},
    )


@dataclass
class RoundRecord:
    """What one round did, per row (batched). Verified proposals are ranks start .. start+drafted-1.

    active:      [B] bool  the row took part in this round
    start:       [B]       n before the round
    drafted:     [B]       proposals verified this round
    accepted:    [B]       proposals accepted (a prefix of the drafted ones)
    outcome:     [B]       an :class:`Outcome` code: what was drawn after the accepted prefix
    committed:   [B]       tokens committed this round
    calls:       [B]       target-model calls this round
    draft_calls: [B]       draft-head calls this round (cheaper than target calls)
    p_draft:     [B, K]    draft probability of each proposal
    p_oracle:    [B, K]    oracle probability of each proposal
    """

    active: torch.Tensor
    start: torch.Tensor
    drafted: torch.Tensor
    accepted: torch.Tensor
    outcome: torch.Tensor
    committed: torch.Tensor
    calls: torch.Tensor
    draft_calls: torch.Tensor
    p_draft: torch.Tensor
    p_oracle: torch.Tensor
