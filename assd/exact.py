"""Exact output distributions, by enumeration, for checking samplers on toy models.

``sampler_distribution`` runs the *real* sampler code (its ``step``) with an enumerating
:class:`EnumRng` in place of the random number generator: every random choice the sampler makes
(categorical draws, the speculative accept/reject outcome) is branched over with its probability,
round by round, and identical sampler states are merged. The result is the sampler's exact output
distribution, to compare with ``sequential_joint``, the chain rule of the model's conditionals.
Both need a stateless backend (e.g. ``assd.backends.ToyASARM``) and tiny sizes (V^m outcomes).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from .model import ASARM, Batch
from .probs import to_probs
from .samplers.state import State, cat_states, index_state, state_key


class EnumRng:
    """An Rng that replays a forced prefix of choices per row and records the next open choice.

    A choice point with a single possible outcome is taken without branching (and without
    consuming the prefix), consistently across replays.
    """

    def __init__(self, prefixes: list[list[int]]):
        self.prefix = prefixes
        self.cursor = [0] * len(prefixes)
        self.pending: list[list[tuple[int, float]] | None] = [None] * len(prefixes)

    def _choose(self, b: int, options: list[tuple[int, float]]) -> int:
        opts = [(v, p) for v, p in options if p > 0]
        if len(opts) == 1 or self.pending[b] is not None:
            return opts[0][0]
        c = self.cursor[b]
        if c < len(self.prefix[b]):
            self.cursor[b] += 1
            return self.prefix[b][c]
        self.pending[b] = opts
        return opts[0][0]

    def categorical(self, probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        P, ok = probs.tolist(), valid.tolist()
        out = torch.zeros(valid.shape, dtype=torch.long)
        for b, row in enumerate(P):
            for s, dist in enumerate(row):
                if ok[b][s]:  # normalised, as TorchRng draws u * total
                    z = sum(dist)
                    out[b, s] = self._choose(b, [(v, p / z) for v, p in enumerate(dist)])
        return out.to(probs.device)

    def first_rejection(self, accept: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        A, C = accept.tolist(), count.tolist()
        out = []
        for b, (alpha, c) in enumerate(zip(A, C)):
            opts, reach = [], 1.0
            for j in range(c):
                opts.append((j, reach * (1.0 - alpha[j])))
                reach *= alpha[j]
            opts.append((c, reach))
            out.append(self._choose(b, opts))
        return torch.tensor(out, dtype=torch.long, device=accept.device)


def _repeat(batch: Batch, n: int) -> Batch:
    return Batch(
        *(
            t.expand(n, *t.shape[1:]).clone()
            for t in (batch.tokens, batch.sigma, batch.n_prompt, batch.length)
        )
    )


def _completion(state: State, row: int, batch: Batch) -> tuple[int, ...]:
    """The generated tokens of a finished row, in position order."""
    gen = (batch.sigma[0] >= batch.n_prompt[0]) & (batch.sigma[0] < batch.length[0])
    return tuple(state.tokens[row][gen.to(state.tokens.device)].tolist())


def sampler_distribution(
    model: ASARM, batch: Batch, sampler, max_rows: int = 200_000
) -> dict[tuple, float]:
    """Exact distribution of ``sampler``'s completions of the single sequence in ``batch``."""
    if batch.size != 1:
        raise ValueError("sampler_distribution takes a batch of one sequence")
    frontier: list[tuple[State, float]] = [
        (sampler.init(batch, model.forbidden_ids, model.vocab_size), 1.0)
    ]
    out: dict[tuple, float] = defaultdict(float)
    while frontier:
        live = []
        for st, p in frontier:
            if bool(st.active[0]):
                live.append((st, p))
            else:
                out[_completion(st, 0, batch)] += p
        if not live:
            break
        states = cat_states([s for s, _ in live])
        merged: dict[bytes, tuple[State, float]] = {}
        rows = [(i, [], p) for i, (_, p) in enumerate(live)]
        while rows:
            if len(rows) > max_rows:
                raise RuntimeError(
                    f"enumeration needs more than {max_rows} rows: use a smaller case"
                )
            st = index_state(states, torch.tensor([r[0] for r in rows]))
            rng = EnumRng([r[1] for r in rows])
            new, _ = sampler.step(st, model.open(_repeat(batch, len(rows))), rng)
            nxt = []
            for j, (i, prefix, p) in enumerate(rows):
                if rng.pending[j] is None:
                    row = index_state(new, torch.tensor([j]))
                    key = state_key(row, 0)
                    old = merged.get(key)
                    merged[key] = (row, p + (old[1] if old else 0.0))
                else:
                    nxt += [(i, prefix + [v], p * q) for v, q in rng.pending[j]]
            rows = nxt
        frontier = list(merged.values())
    return dict(out)


@torch.no_grad()
def sequential_joint(model: ASARM, batch: Batch, temperature: float = 1.0) -> dict[tuple, float]:
    """The chain rule: P(x) = prod_r p(x_r | ranks < r), over every completion (tiny cases only)."""
    if batch.size != 1:
        raise ValueError("sequential_joint takes a batch of one sequence")
    P, end = int(batch.n_prompt[0]), int(batch.length[0])
    pos_of_rank = batch.pos_of_rank[0]
    tokens = batch.tokens.clone()  # [N, L] one row per partial completion
    probs = torch.ones(1, dtype=torch.float64)
    for r in range(P, end):
        N = tokens.shape[0]
        sub = _repeat(batch, N)
        q = torch.full((N, 1), r, dtype=torch.long)
        logits = model.open(sub).logits(
            tokens, torch.full((N,), r), torch.zeros(N, dtype=torch.long), q, q
        )
        p = to_probs(logits[:, 0], temperature, model.forbidden_ids).double()  # [N, V]
        V = p.shape[1]
        tokens = tokens.repeat_interleave(V, 0)
        tokens[:, pos_of_rank[r]] = torch.arange(V).repeat(N)
        probs = (probs[:, None] * p).flatten()
        keep = probs > 0
        tokens, probs = tokens[keep], probs[keep]
    gen = (batch.sigma[0] >= P) & (batch.sigma[0] < end)
    out: dict[tuple, float] = defaultdict(float)
    for t, p in zip(tokens[:, gen].tolist(), probs.tolist()):
        out[tuple(t)] += p
    return dict(out)


def max_abs_difference(p: dict, q: dict) -> float:
    """max over outcomes x of |p(x) - q(x)|, a missing outcome having probability 0 (the tests'
    1e-9 criterion; not the total variation distance, which is half the sum)."""
    keys = set(p) | set(q)
    return max(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)
