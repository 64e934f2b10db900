"""Any-Subset Speculative Decoding (ASSD): exact samples from the AS-ARM's joint, in parallel.

Why it is exact. Let p_i be the exact conditional of rank n+i given ranks < n+i and q_i any
draft distribution that does not look at the proposal x_i it produces (it may look at committed
tokens and at the proposals x_<i). Draw x_i ~ q_i, accept with probability min(1, p_i/q_i),
and on the first rejection draw from norm(max(p_i - q_i, 0)). Then
P(output = y) = q(y) min(1, p(y)/q(y)) + (1 - sum_z min(q(z), p(z))) * (p(y) - q(y))^+ / Z
            = min(q(y), p(y)) + (p(y) - q(y))^+ = p(y),
so each committed token follows its exact chain-rule conditional given the committed prefix,
and by induction the committed sequence follows the joint. Only the oracle rows (p) must be
exact; the drafts may come from anywhere: the model's own parallel prediction (``draft="self"``),
a context bigram (``draft="bigram"``), or, in the one-call variant, rows computed a round early.

Variants (all exact unless ``r_atol > 0``):
- paper ASSD: a draft call (k parallel predictions given ranks < n) and an oracle call per round.
  The first draft row is the exact conditional of rank n, so its token is always accepted.
- ``bonus=True``: when every draft is accepted, the oracle call also holds the exact conditional
  of the next rank (one more query row), so one more token is drawn for free.
- ``one_call=True``: the oracle call also computes the *next* round's drafts. For every possible
  outcome a (a proposals accepted, then a resampled or bonus token at rank n+a) it adds draft rows
  for ranks n+a+1 .. n+a+k conditioned on ranks < n+a: all committed once the outcome is known,
  and none of them the token that follows (rank n+a). So each round costs one call and commits
  at least one token: the next call verifies the proposals drawn from those rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import Batch, Session
from ..probs import residual, to_probs
from ..rng import Rng
from .bigram import bigram_draft
from .sequential import _check_k, _check_temperature
from .state import RoundRecord, State, init_state

DRAFTS = ("self", "bigram")


@dataclass(frozen=True)
class ASSD:
    """Any-subset speculative decoding. ``ASSD(k=5)`` is the paper's algorithm.

    k: proposals per round. temperature: target is the temperature-T joint (draft and oracle
    both tempered). untempered_oracle: drafts at T, verification against the T=1 oracle, so the
    output follows the T=1 joint. r_atol: also accept a proposal when p/q >= 1 - r_atol
    (LOSSY: more acceptance, no longer exact; 0 = off). bonus, one_call: see module docstring.
    """

    k: int = 5
    temperature: float = 1.0
    draft: str = "self"
    untempered_oracle: bool = False
    r_atol: float = 0.0
    bonus: bool = False
    one_call: bool = False

    def __post_init__(self):
        _check_k(self.k)
        _check_temperature(self.temperature)
        if self.draft not in DRAFTS:
            raise ValueError(f"draft must be one of {DRAFTS}, got {self.draft!r}")
        if not 0.0 <= self.r_atol < 1.0:
            raise ValueError(f"r_atol must lie in [0, 1), got {self.r_atol}")
        if self.one_call and self.draft != "self":
            raise ValueError("one_call=True uses the model's own drafts: set draft='self'")

    @property
    def name(self) -> str:
        if self.one_call:
            return f"assd-onecall(k={self.k})"
        extra = "+bonus" if self.bonus else ""
        return f"assd-{self.draft}{extra}(k={self.k})"

    @property
    def exact(self) -> bool:
        return self.r_atol == 0.0

    def init(self, batch: Batch, forbidden: tuple[int, ...], vocab_size: int) -> State:
        return init_state(batch, forbidden, vocab_size, self.k if self.one_call else 0)

    def step(self, state: State, session: Session, rng: Rng) -> tuple[State, RoundRecord]:
        if self.one_call:
            return self._step_one_call(state, session, rng)
        return self._step(state, session, rng)

    # -- acceptance shared by both forms -----------------------------------------------------
    def _accept(self, p, q, x, count, rng, first_exact: bool):
        """p, q [B, K, V]; x [B, K]; count [B] -> (a [B], p(x) [B, K], q(x) [B, K])."""
        px = torch.gather(p, -1, x.unsqueeze(-1)).squeeze(-1)
        qx = torch.gather(q, -1, x.unsqueeze(-1)).squeeze(-1)
        ratio = px / qx.clamp(min=torch.finfo(qx.dtype).tiny)
        alpha = ratio.clamp(max=1.0)
        if self.r_atol > 0:
            alpha = torch.where(ratio >= 1.0 - self.r_atol, torch.ones_like(alpha), alpha)
        if first_exact:  # draft row 0 *is* the exact conditional: p_0 == q_0
            alpha[:, 0] = 1.0
        return rng.first_rejection(alpha, count), px, qx

    def _resolve(self, st, tokens, p, q, p_next, a, kk, has_next, calls, px, qx, rng):
        """Draw the token after the accepted prefix (rank n+a): from the residual at the first
        rejection, or from the exact next row when every proposal passed and that row exists.
        -> (tokens, new_n, record)."""
        B, K, V = p.shape
        act = st.active
        rejected = act & (a < kk)
        ai = a.clamp(max=K - 1)[:, None, None].expand(B, 1, V)
        p_a, q_a = torch.gather(p, 1, ai)[:, 0], torch.gather(q, 1, ai)[:, 0]
        dist = torch.where(rejected[:, None], residual(p_a, q_a), p_next)
        need = rejected | (has_next & (a == kk))
        y = rng.categorical(dist[:, None], need[:, None])
        tokens = st.place(tokens, (st.n + a)[:, None], y, need[:, None])
        new_n = st.n + a + need.long()
        rec = RoundRecord(
            active=act, start=st.n, drafted=kk, accepted=a,
            extra=torch.where(rejected, 1, torch.where(need, 2, 0)),
            committed=new_n - st.n, calls=calls, p_draft=qx, p_oracle=px,
        )  # fmt: skip
        return tokens, new_n, rec

    def _oracle_temperature(self) -> float:
        return 1.0 if self.untempered_oracle else self.temperature

    # -- the paper's form: draft call + oracle call --------------------------------------------
    def _step(self, st: State, session: Session, rng: Rng):
        B, L = st.tokens.shape
        K, T = self.k, self.temperature
        dev = st.tokens.device
        act = st.active
        rem = st.end - st.n
        single = act & (rem == 1)  # the single-remaining-token shortcut: one oracle row
        multi = act & (rem > 1)
        kk = torch.where(multi, rem.clamp(max=K), 0)
        ar = torch.arange(K, device=dev)
        ranks = st.n[:, None] + ar  # [B, K]
        valid = ar < kk[:, None]
        zero = torch.zeros_like(st.n)
        calls = torch.zeros_like(st.n)

        if self.draft == "self":
            if bool(multi.any()):
                qr = torch.where(valid, ranks, -1)
                qc = torch.where(valid, st.n[:, None].expand(B, K), -1)
                q = to_probs(session.logits(st.tokens, st.n, zero, qr, qc), T, st.forbidden)
                x = rng.categorical(q, valid)
                calls = calls + multi.long()
            else:
                q, x = None, torch.zeros(B, K, dtype=torch.long, device=dev)
            tokens = st.place(st.tokens, ranks, x, valid)
        else:
            tokens, x, q = self._bigram_proposals(st, ranks, valid, rng)

        # One oracle row per proposal, plus the exact row of rank n+kk: the bonus row, or the only
        # row of a row with a single token left (the paper's shortcut: kk = 0 there).
        has_next = (multi & self.bonus & (st.n + kk < st.end)) | single
        o_rank = torch.cat(
            [torch.where(valid, ranks, -1), torch.where(has_next, st.n + kk, -1)[:, None]], 1
        )
        logits = session.logits(tokens, st.n, kk, o_rank, o_rank)  # [B, K+1, V]
        p_all = to_probs(logits, self._oracle_temperature(), st.forbidden)
        calls = calls + act.long()
        p, p_next = p_all[:, :K], p_all[:, K]
        if q is None:
            q = p  # no multi row: nothing to verify
        first_exact = self.draft == "self" and not self.untempered_oracle
        a, px, qx = self._accept(p, q, x, kk, rng, first_exact)
        tokens, new_n, rec = self._resolve(
            st, tokens, p, q, p_next, a, kk, has_next, calls, px, qx, rng
        )
        return st.commit(tokens, new_n, calls), rec

    def _bigram_proposals(self, st: State, ranks, valid, rng: Rng):
        """Sequential bigram drafts for ranks n..n+kk-1 (each may use the proposal on its left)."""
        B, K = ranks.shape
        tokens = st.tokens
        V = st.vocab_size
        qs, xs = [], []
        for i in range(K):
            qi = bigram_draft(st, tokens, ranks[:, i], st.n + i, V)  # [B, V]
            xi = rng.categorical(qi[:, None], valid[:, i : i + 1])  # [B, 1]
            tokens = st.place(tokens, ranks[:, i : i + 1], xi, valid[:, i : i + 1])
            qs.append(qi)
            xs.append(xi)
        return tokens, torch.cat(xs, 1), torch.stack(qs, 1)

    # -- the one-call form ---------------------------------------------------------------------
    def _step_one_call(self, st: State, session: Session, rng: Rng):
        B, L = st.tokens.shape
        K, T = self.k, self.temperature
        dev = st.tokens.device
        act = st.active
        ar = torch.arange(K, device=dev)
        kk = torch.where(act, st.pend_k, 0)  # proposals to verify at ranks n..n+kk-1
        ranks = st.n[:, None] + ar
        valid = ar < kk[:, None]
        tokens = st.place(st.tokens, ranks, st.pend_x, valid)

        # Query rows: [K oracle | 1 next exact | (K+1) x K next drafts]
        has_next = act & (st.n + kk < st.end)
        o_rank = torch.where(valid, ranks, -1)
        nx_rank = torch.where(has_next, st.n + kk, -1)[:, None]
        a_all = torch.arange(K + 1, device=dev)  # possible outcomes a
        d_rank = st.n[:, None, None] + a_all[None, :, None] + 1 + ar[None, None, :]  # [B, K+1, K]
        d_ctx = (st.n[:, None] + a_all)[:, :, None].expand(B, K + 1, K)
        d_ok = (
            act[:, None, None]
            & (a_all[None, :, None] <= kk[:, None, None])
            & (d_rank < st.end[:, None, None])
        )
        q_rank = torch.cat([o_rank, nx_rank, torch.where(d_ok, d_rank, -1).flatten(1)], 1)
        q_ctx = torch.cat([o_rank, nx_rank, torch.where(d_ok, d_ctx, -1).flatten(1)], 1)
        logits = session.logits(tokens, st.n, kk, q_rank, q_ctx)
        p_oracle = to_probs(logits[:, : K + 1], self._oracle_temperature(), st.forbidden)
        p, p_next = p_oracle[:, :K], p_oracle[:, K]
        q_next = to_probs(logits[:, K + 1 :], T, st.forbidden).view(B, K + 1, K, -1)
        calls = act.long()

        q = st.pend_q if st.pend_q.shape[-1] else p
        a, px, qx = self._accept(p, q, st.pend_x, kk, rng, first_exact=False)
        tokens, new_n, rec = self._resolve(
            st, tokens, p, q, p_next, a, kk, has_next, calls, px, qx, rng
        )

        # Next round's proposals: the draft rows of the outcome that happened.
        new_k = torch.where(new_n < st.end, (st.end - new_n).clamp(max=K), 0)
        sel = a.clamp(max=K)[:, None, None, None].expand(B, 1, K, q_next.shape[-1])
        nq = torch.gather(q_next, 1, sel)[:, 0]  # [B, K, V]
        n_valid = ar < new_k[:, None]
        nq = torch.where(n_valid[:, :, None], nq, torch.zeros_like(nq))
        nx = rng.categorical(torch.where(n_valid[:, :, None], nq, p_next[:, None]), n_valid)
        out = st.commit(tokens, new_n, calls)
        out.pend_x, out.pend_q, out.pend_k = nx, nq, new_k
        return out, rec
