"""Per-sequence results and per-round traces (what the demo and the evals display)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RoundTrace:
    """One round of one sequence. Positions are sequence positions (not ranks).

    drafted:   positions whose proposals were verified this round, in rank order
    accepted:  the accepted prefix of ``drafted``
    resampled: position drawn from the residual after the first rejection, or filled by an
               accepted sibling candidate (a token tree) in its place (or None)
    exact:     position drawn from an exact conditional (bonus row / single remaining token)
    p_draft, p_oracle: draft and oracle probability of each drafted proposal
    tokens:    {position: token} committed this round
    calls:     target-model calls spent this round
    draft_calls: draft-head calls spent this round
    """

    drafted: list[int]
    accepted: list[int]
    resampled: int | None
    exact: int | None
    p_draft: list[float]
    p_oracle: list[float]
    tokens: dict[int, int]
    calls: int
    draft_calls: int = 0


@dataclass
class SampleResult:
    """One completed sequence: tokens (length L, prompt included), target-model calls (NFE),
    rounds, tokens generated, the per-round trace, and draft-head calls (cheaper, counted apart)."""

    tokens: list[int]
    nfe: int
    rounds: int
    n_generated: int
    trace: list[RoundTrace] = field(default_factory=list)
    draft_calls: int = 0

    @property
    def tokens_per_call(self) -> float:
        return self.n_generated / max(self.nfe, 1)

    @property
    def acceptance_rate(self) -> float:
        """Accepted proposals / verified proposals, over all rounds (nan if none verified)."""
        d = sum(len(r.drafted) for r in self.trace)
        return sum(len(r.accepted) for r in self.trace) / d if d else float("nan")
