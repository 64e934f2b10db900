"""Sampler state and the per-round record, both batched tensors with a leading batch dim B."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from ..model import Batch


@dataclass
class State:
    """Where every row of a batch stands between two rounds.

    tokens:  [B, L]  committed tokens in place (other positions hold the batch's blanks)
    blank:   [B, L]  the batch's original tokens (what uncommitted positions are reset to)
    sigma, pos_of_rank: [B, L]  the order and its inverse
    n:       [B]     ranks < n are committed
    end:     [B]     the row is done when n == end (its length)
    pend_x:  [B, K]  proposals carried to the next round (one-call variant), ranks n..n+pend_k-1
    pend_q:  [B, K, V] their draft distributions
    pend_k:  [B]     number of carried proposals
    nfe, rounds: [B] statistics (not part of the state's identity)
    forbidden: token ids that are never generated; vocab_size: V
    """

    tokens: torch.Tensor
    blank: torch.Tensor
    sigma: torch.Tensor
    pos_of_rank: torch.Tensor
    n: torch.Tensor
    end: torch.Tensor
    pend_x: torch.Tensor
    pend_q: torch.Tensor
    pend_k: torch.Tensor
    nfe: torch.Tensor
    rounds: torch.Tensor
    forbidden: tuple[int, ...] = ()
    vocab_size: int = 0

    @property
    def active(self) -> torch.Tensor:  # [B] bool
        return self.n < self.end

    def rank_to_pos(self, ranks: torch.Tensor) -> torch.Tensor:
        """ranks [B, K] (any values; out of range -> clamped) -> positions [B, K]."""
        L = self.tokens.shape[1]
        return torch.gather(self.pos_of_rank, 1, ranks.clamp(0, L - 1))

    def place(
        self, tokens: torch.Tensor, ranks: torch.Tensor, values: torch.Tensor, valid: torch.Tensor
    ):
        """Copy of tokens with values [B, K] written at ranks [B, K] where valid."""
        L = tokens.shape[1]
        # Invalid entries may alias valid positions: send them to a spare column (no host sync).
        pos = torch.where(valid, self.rank_to_pos(ranks), L)
        out = torch.cat([tokens, tokens[:, :1]], 1)
        out.scatter_(1, pos, values)
        return out[:, :L]

    def commit(self, tokens: torch.Tensor, new_n: torch.Tensor, calls: torch.Tensor) -> State:
        """Keep ranks < new_n of tokens, reset the rest to blanks, count calls and a round."""
        kept = torch.where(self.sigma < new_n[:, None], tokens, self.blank)
        return replace(
            self,
            tokens=kept,
            n=new_n,
            nfe=self.nfe + calls,
            rounds=self.rounds + (calls > 0).long(),
        )


def init_state(batch: Batch, forbidden: tuple[int, ...], vocab_size: int, k: int = 0) -> State:
    B = batch.size
    dev = batch.tokens.device
    zeros = torch.zeros(B, dtype=torch.long, device=dev)
    return State(
        tokens=batch.tokens.clone(),
        blank=batch.tokens.clone(),
        sigma=batch.sigma,
        pos_of_rank=batch.pos_of_rank,
        n=batch.n_prompt.clone(),
        end=batch.length.clone(),
        pend_x=torch.zeros(B, k, dtype=torch.long, device=dev),
        pend_q=torch.zeros(B, k, vocab_size if k else 0, device=dev),
        pend_k=zeros.clone(),
        nfe=zeros.clone(),
        rounds=zeros.clone(),
        forbidden=tuple(forbidden),
        vocab_size=int(vocab_size),
    )


STAT_FIELDS = ("nfe", "rounds")


def index_state(state: State, idx: torch.Tensor) -> State:
    """Rows idx of a state (every batched tensor indexed along dim 0)."""
    return replace(state, **{f.name: getattr(state, f.name)[idx] for f in _tensor_fields(state)})


def _tensor_fields(state: State):
    return [f for f in fields(state) if isinstance(getattr(state, f.name), torch.Tensor)]


def state_key(state: State, row: int) -> bytes:
    """Identity of one row (everything that determines its future; statistics excluded)."""
    parts = []
    for f in _tensor_fields(state):
        if f.name in STAT_FIELDS:
            continue
        t = getattr(state, f.name)[row]
        if f.name in ("pend_x", "pend_q"):
            t = t[: int(state.pend_k[row])]
        parts.append(t.detach().cpu().contiguous().numpy().tobytes())
    return b"|".join(parts)


@dataclass
class RoundRecord:
    """What one round did, per row (batched). Drafted ranks are start .. start+drafted-1.

    active:    [B] bool   the row took part in this round
    start:     [B]        n before the round
    drafted:   [B]        proposals verified this round
    accepted:  [B]        proposals accepted (a prefix of the drafted ones)
    extra:     [B]        0 none, 1 resampled (rejection at rank start+accepted), 2 bonus/exact draw
    committed: [B]        tokens committed this round
    calls:     [B]        network calls this round
    p_draft:   [B, K]     draft probability of each proposal
    p_oracle:  [B, K]     oracle probability of each proposal
    """

    active: torch.Tensor
    start: torch.Tensor
    drafted: torch.Tensor
    accepted: torch.Tensor
    extra: torch.Tensor
    committed: torch.Tensor
    calls: torch.Tensor
    p_draft: torch.Tensor
    p_oracle: torch.Tensor


def cat_states(states: list[State]) -> State:
    """Stack states (same L, K, V) along the batch dim."""
    first = states[0]
    return replace(
        first,
        **{f.name: torch.cat([getattr(s, f.name) for s in states]) for f in _tensor_fields(first)},
    )
