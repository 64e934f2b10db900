"""Where ASSD's proposals come from: one small class per drafting strategy.

A drafter answers four questions for :class:`assd.samplers.speculative.ASSD`:

- ``init``: the sampler's state (a :class:`Carried` state if proposals are drawn a round early);
- ``propose``: this round's proposals (:class:`Proposals`), possibly spending a call;
- ``extra_queries``: rows the drafter wants in the oracle call (none, except the one-call form);
- ``carry``: after the round is decided, the fields to carry to the next round (the next
  proposals, for drafters that draw them early) and the draft-head calls spent doing so.

Exactness only needs every proposal's q to ignore the proposal itself: q may look at committed
tokens and at earlier proposals of the same round (``assd.samplers.speculative``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import Batch, Session, one_call_queries
from ..probs import to_probs
from ..rng import Rng
from .bigram import bigram_draft
from .state import ACCEPT_RATE, Carried, State, init_state

DRAFTS = ("self", "bigram", "head")


@dataclass
class Proposals:
    """This round's proposals for ranks n .. n+k-1 (all tensors batched).

    x: [B, K] tokens; q: [B, K, V] the distributions they were drawn from; k: [B] how many.
    next_row: [B] bool, add the exact row of rank n+k to the oracle call (a free token when all
    pass; the only token when k = 0). exact_first: q[:, 0] is the exact conditional at the oracle
    temperature (accepted with probability 1). calls / draft_calls: [B] target / head calls spent.
    alt: [B, K, C-1] sibling candidates of each proposal, drawn from its q without replacement
    after it (-1: none), or None: a token tree of C candidates per rank (see ``ASSD``).
    """

    x: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    next_row: torch.Tensor
    calls: torch.Tensor
    draft_calls: torch.Tensor
    exact_first: bool = False
    alt: torch.Tensor | None = None


def _no_queries(st: State) -> tuple[torch.Tensor, torch.Tensor]:
    empty = torch.empty(st.n.shape[0], 0, dtype=torch.long, device=st.n.device)
    return empty, empty


def _zeros(st: State):
    return torch.zeros_like(st.n)


class SelfDraft:
    """The paper's drafts: one call predicts ranks n..n+k-1 given ranks < n (mean field).

    Draft row 0 *is* the exact conditional of rank n (drawn at the oracle temperature, as the
    paper does), so its proposal is always accepted and a round with k >= 2 commits >= 2 tokens
    for 2 calls. A row with one token left (or k = 1) takes one exact row instead: 1 call, 1
    token. So calls never exceed tokens.
    """

    def init(self, s, batch: Batch, forbidden, vocab_size) -> State:
        return init_state(batch, forbidden, vocab_size, s.k)

    def propose(self, s, st: State, session: Session, rng: Rng) -> Proposals:
        K, B, V = st.k, st.n.shape[0], st.vocab_size
        act = st.active
        multi = act & (st.end - st.n > 1) & (K > 1)
        kk = torch.where(multi, (st.end - st.n).clamp(max=K), 0)
        ar = torch.arange(K, device=st.n.device)
        valid = ar < kk[:, None]
        if K > 1:
            qr = torch.where(valid, st.n[:, None] + ar, -1)
            qc = torch.where(valid, st.n[:, None].expand(B, K), -1)
            logits = session.logits(st.tokens, st.n, _zeros(st), qr, qc)
            q = torch.cat(
                [
                    to_probs(logits[:, :1], s.oracle_temperature, st.forbidden),
                    to_probs(logits[:, 1:], s.temperature, st.forbidden),
                ],
                1,
            )
            x = rng.categorical(q, valid)
        else:
            q = torch.zeros(B, K, V, device=st.n.device)
            x = torch.zeros(B, K, dtype=torch.long, device=st.n.device)
        next_row = (act & ~multi) | (multi & s.bonus)
        return Proposals(x, q, kk, next_row, multi.long(), _zeros(st), exact_first=True)

    def extra_queries(self, s, st, props):
        return _no_queries(st)

    def carry(self, s, st, tokens, verdict, p_next, extra_logits, session, rng):
        return {}, _zeros(st)


class BigramDraft:
    """Context-bigram drafts, each conditioned on the proposal to its left: no network call."""

    def init(self, s, batch: Batch, forbidden, vocab_size) -> State:
        return init_state(batch, forbidden, vocab_size, s.k)

    def propose(self, s, st: State, session: Session, rng: Rng) -> Proposals:
        K = st.k
        act = st.active
        kk = torch.where(act, (st.end - st.n).clamp(max=K), 0)
        ar = torch.arange(K, device=st.n.device)
        ranks = st.n[:, None] + ar
        valid = ar < kk[:, None]
        tokens, qs, xs = st.tokens, [], []
        for i in range(K):
            qi = bigram_draft(st, tokens, ranks[:, i], st.n + i, st.vocab_size)  # [B, V]
            xi = rng.categorical(qi[:, None], valid[:, i : i + 1])  # [B, 1]
            tokens = st.place(tokens, ranks[:, i : i + 1], xi, valid[:, i : i + 1])
            qs.append(qi)
            xs.append(xi)
        q = torch.stack(qs, 1)
        return Proposals(torch.cat(xs, 1), q, kk, act & s.bonus, _zeros(st), _zeros(st))

    def extra_queries(self, s, st, props):
        return _no_queries(st)

    def carry(self, s, st, tokens, verdict, p_next, extra_logits, session, rng):
        return {}, _zeros(st)


class _CarriedDraft:
    """Proposals drawn at the end of the previous round (none before the first round)."""

    def init(self, s, batch: Batch, forbidden, vocab_size) -> State:
        sib = s.candidates - 1
        return init_state(batch, forbidden, vocab_size, s.k, carried=True, siblings=sib)

    def propose(self, s, st: Carried, session: Session, rng: Rng) -> Proposals:
        kk = torch.where(st.active, st.next_k, 0)
        z = _zeros(st)
        alt = None
        if st.next_alt.shape[-1]:  # a token tree: siblings of the proposals that exist
            ok = torch.arange(st.k, device=kk.device) < kk[:, None]
            alt = torch.where(ok[:, :, None], st.next_alt, -1)
        return Proposals(st.next_x, st.next_q, kk, st.active, z, z, alt=alt)

    @staticmethod
    def _next_k(st: State, new_n: torch.Tensor) -> torch.Tensor:
        return torch.where(new_n < st.end, (st.end - new_n).clamp(max=st.k), 0)


class OneCallDraft(_CarriedDraft):
    """The oracle call also computes the next round's drafts, for every possible outcome a
    (a proposals accepted, then a token at rank n+a): rows for ranks n+a+1 .. n+a+K given
    ranks < n+a, all committed once the outcome is known and none of them the token drawn at
    rank n+a. So each round costs one call and commits at least one token."""

    def extra_queries(self, s, st: Carried, props: Proposals):
        return one_call_queries(st.n, st.k, props.k, st.active, st.end)

    def carry(self, s, st: Carried, tokens, verdict, p_next, extra_logits, session, rng):
        B, K = st.n.shape[0], st.k
        q_all = to_probs(extra_logits, s.temperature, st.forbidden).view(B, K + 1, K, -1)
        V = q_all.shape[-1]
        new_k = self._next_k(st, verdict.new_n)
        sel = verdict.accepted.clamp(max=K)[:, None, None, None].expand(B, 1, K, V)
        nq = torch.gather(q_all, 1, sel)[:, 0]  # [B, K, V]: the rows of the outcome that happened
        valid = torch.arange(K, device=st.n.device) < new_k[:, None]
        nq = torch.where(valid[:, :, None], nq, torch.zeros_like(nq))
        # Padding rows hold zeros; the draw reads a valid distribution there and ignores it.
        nx = rng.categorical(torch.where(valid[:, :, None], nq, p_next[:, None]), valid)
        return {"next_x": nx, "next_q": nq, "next_k": new_k}, _zeros(st)


class HeadDraft(_CarriedDraft):
    """Proposals from the model's draft head (``Session.draft_logits``), one after another along
    the order, each conditioned on the committed tokens and the proposals before it. Drawn right
    after a round is decided, for the next round; the oracle call adds the exact next row (a free
    token when every proposal passes). Head calls are counted apart from target calls.

    With C > 1 candidates per rank (``ASSD(candidates=C)``) each proposal also gets C - 1
    siblings, drawn from the same head distribution without replacement (the proposal is the
    first draw): a token tree whose siblings the oracle call scores as tree nodes, at no extra
    head call."""

    def extra_queries(self, s, st, props):
        return _no_queries(st)

    def carry(self, s, st: Carried, tokens, verdict, p_next, extra_logits, session, rng):
        B, K, V = st.n.shape[0], st.k, st.vocab_size
        new_n = verdict.new_n
        new_k = self._next_k(st, new_n)
        carried = {}
        if s.adapt_k:  # k per row from its running acceptance: a function of the past, exact
            acc = running_acceptance(st, verdict)
            new_k = torch.minimum(new_k, adaptive_k(acc, s.adapt_k, K))
            carried["accept"] = acc
        # The target's states are valid below n + accepted (the token drawn after the accepted
        # proposals was never run through the target); the head reads later ranks as tokens.
        feat = st.n + verdict.accepted
        cur = torch.where(st.sigma < new_n[:, None], tokens, st.blank)
        ar = torch.arange(K, device=new_n.device)
        ok = ar < new_k[:, None]  # [B, K]: step i may draft
        ranks = torch.where(ok, new_n[:, None] + ar, -1)
        feats = torch.where(ok, feat[:, None], -1)
        go = None  # stop_below: [B] rows whose proposals so far keep drafting
        xs, qs, alts, oks = [], [], [], []
        for i in range(K):  # one head call per proposal, each reading the proposals before it
            r, f, oki = ranks[:, i : i + 1], feats[:, i : i + 1], ok[:, i : i + 1]
            if go is not None:  # stopped rows: padding queries (a backend may skip them)
                oki = oki & go[:, None]
                r, f = torch.where(oki, r, -1), torch.where(oki, f, -1)
            logits = session.draft_logits(cur, r, r, f)
            qi = to_probs(logits, s.temperature, st.forbidden)  # [B, 1, V]
            xi = rng.categorical(qi, oki)
            cur = st.place(cur, r, xi, oki)
            if s.stop_below:  # a stopping rule on the proposals drawn so far: still exact
                keep = torch.gather(qi[:, 0], 1, xi)[:, 0] >= s.stop_below
                go = keep if go is None else go & keep
            xs.append(xi)
            qs.append(qi * oki[:, :, None])  # rows past the drafted ones: zeros
            oks.append(oki)
            alts.append(self._siblings(s, qi, xi, oki, rng))
        if s.stop_below and K:
            new_k = torch.cat(oks, 1).sum(1)  # a prefix of the steps: the ones drafted
        nx = torch.cat(xs, 1) if K else torch.zeros(B, 0, dtype=torch.long, device=new_n.device)
        nq = torch.cat(qs, 1) if K else torch.zeros(B, 0, V, device=new_n.device)
        carried.update(next_x=nx, next_q=nq, next_k=new_k)
        if s.candidates > 1:
            carried["next_alt"] = torch.stack(alts, 1) if K else st.next_alt
        return carried, new_k

    @staticmethod
    def _siblings(s, q, x, ok, rng: Rng) -> torch.Tensor | None:
        """C - 1 more candidates from q [B, 1, V] without replacement after x [B, 1]:
        [B, C-1] tokens, -1 where q has no mass left (or the proposal does not exist)."""
        if s.candidates == 1:
            return None
        rest = q.scatter(2, x[:, :, None], 0.0)  # q without the candidates drawn so far
        out = []
        for _ in range(s.candidates - 1):
            live = ok & (rest.sum(-1) > 0)  # [B, 1]
            y = rng.categorical(rest, live)  # unnormalised: the draw scales by the mass left
            out.append(torch.where(live, y, -1))
            rest = rest.scatter(2, y[:, :, None], 0.0)
        return torch.cat(out, 1)


def running_acceptance(st: Carried, verdict) -> torch.Tensor:
    """[B]: each row's acceptance estimate after this round, moved towards the mean of
    min(1, p/q) over the proposals it verified (rows without proposals keep theirs). The mean
    of min(1, p/q) is the expected acceptance of those proposals: less noisy than counting."""
    K = st.k
    if K == 0:
        return st.accept
    drafted = torch.where(st.active, st.next_k, 0)  # [B] proposals verified this round
    ok = torch.arange(K, device=drafted.device) < drafted[:, None]
    px, qx = verdict.px.float(), verdict.qx.float()
    alpha = (px / qx.clamp(min=torch.finfo(qx.dtype).tiny)).clamp(max=1.0)
    obs = torch.where(ok, alpha, 0.0).sum(1) / drafted.clamp(min=1)
    moved = st.accept + ACCEPT_RATE * (obs - st.accept)
    return torch.where(drafted > 0, moved, st.accept)


def adaptive_k(acc: torch.Tensor, threshold: float, K: int) -> torch.Tensor:
    """[B] proposals to draft: proposal i (0-based) is drafted while acc^(i+1), the chance that
    it is reached and accepted if acceptances were independent at rate acc, is >= threshold;
    always at least one."""
    i = torch.arange(1, K + 1, device=acc.device, dtype=acc.dtype)
    reach = acc.clamp(0.0, 1.0)[:, None] ** i  # [B, K]
    return ((reach >= threshold) | (i == 1)).long().sum(1)


_DRAFTERS = {"self": SelfDraft(), "bigram": BigramDraft(), "head": HeadDraft()}
_ONE_CALL = OneCallDraft()


def drafter_for(sampler):
    """The drafter of an ASSD configuration."""
    return _ONE_CALL if sampler.one_call else _DRAFTERS[sampler.draft]
