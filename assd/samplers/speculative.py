"""Any-Subset Speculative Decoding (ASSD): exact samples from the AS-ARM's joint, in parallel.

Why it is exact. Let p_i be the exact conditional of rank n+i given ranks < n+i and q_i any
draft distribution that does not look at the proposal x_i it produces (it may look at committed
tokens and at the proposals x_<i). Draw x_i ~ q_i, accept with probability min(1, p_i/q_i),
and on the first rejection draw from norm(max(p_i - q_i, 0)). Then
P(output = y) = q(y) min(1, p(y)/q(y)) + (1 - sum_z min(q(z), p(z))) * (p(y) - q(y))^+ / Z
            = min(q(y), p(y)) + (p(y) - q(y))^+ = p(y),
so each committed token follows its exact chain-rule conditional given the committed prefix,
and by induction the committed sequence follows the joint. Only the oracle rows (p) must be
exact; the drafts may come from anywhere (``assd.samplers.drafts``): the model's own parallel
prediction (the paper's), a context bigram, rows computed a round early in the oracle call
(one call per round), or a draft head that conditions each proposal on the ones before it.

A round: the drafter proposes x_n..x_{n+k-1} with their q; ONE oracle call scores them (rows
(n+i, n+i)) plus, where wanted, the exact row of rank n+k (a free token when every proposal
passes) and any rows the drafter asks for; the accepted prefix, then one draw from the residual
or the exact row, is committed; the drafter may then draw the next round's proposals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import Batch, Session, Tree
from ..probs import residual, to_probs
from ..rng import Rng
from .drafts import DRAFTS, Proposals, drafter_for
from .state import Outcome, RoundRecord, State
from .validate import check_k, check_temperature

VERIFY = ("token", "block")
MAX_CANDIDATES = 16  # proposals tried per rank in a token tree


@dataclass(frozen=True)
class ASSD:
    """Any-subset speculative decoding. ``ASSD(k=5)`` is the paper's algorithm.

    k: proposals per round (capped at the tokens left). temperature: the target is the
    temperature-T joint. draft: where proposals come from, "self" (the paper's parallel draft
    call), "bigram" (context bigrams, no call), "head" (the model's draft head: proposals that
    condition on each other, see ``assd.heads``). bonus: add the exact row of rank n+k to the
    oracle call (a free token when every proposal passes). one_call: the oracle call also
    computes the next round's drafts, so a round costs one call ("self" drafts only).
    untempered_oracle: verify against the T=1 oracle (drafts at T, first draft at T=1 as the
    paper does), so the output follows the T=1 joint. r_atol: the paper's lossy acceptance
    ``u < min(1, p/q + r_atol)`` (NOT exact for r_atol > 0; 0 = off). verify: "token" (the
    paper's token-by-token acceptance) or "block" (block verification, Sun et al., ICLR 2025:
    the accepted prefix decided jointly, exact and never shorter in expectation).
    candidates: proposals tried per rank (1: a chain). C > 1 makes each round a token tree
    (SpecInfer / SpecTr style; head drafts, token verification): every proposal gets C - 1
    siblings from the same draft distribution, drawn without replacement, scored in the same
    oracle call as tree nodes (``assd.model.Tree``), each with the exact row after it. When a
    proposal is rejected its siblings are tried in turn by recursive rejection sampling (the
    target becomes norm(max(p - q', 0)) after each rejected candidate, q' the draft without the
    candidates already tried); an accepted sibling takes the rank and is followed by one exact
    token. Exact for any C; more tokens per call for more query rows.
    stop_below: head drafts only, an adaptive draft length: a round's drafting stops after a
    proposal the head itself gave probability below this (EAGLE-2 / SpecDec++ style: an
    unlikely proposal is likely rejected, and what would follow it is wasted). Exact, since
    whether proposal i+1 is drawn depends only on proposals already drawn (a stopping rule);
    the stopped steps' head queries are padding, which backends may skip. 0 = always k.
    adapt_k: head drafts only, k per row from its running acceptance: each row keeps an
    estimate a of its proposals' acceptance probability (an exponential average of min(1, p/q)
    over the proposals it verified) and drafts proposal i (0-based, up to k) only while
    a^(i+1) >= adapt_k, the chance it is reached and accepted: long drafts where the head is
    right (boilerplate, a predictable phrase), one proposal where it is not. Exact, since a
    round's k depends only on earlier rounds. 0 = always k.
    """

    k: int = 5
    temperature: float = 1.0
    draft: str = "self"
    untempered_oracle: bool = False
    r_atol: float = 0.0
    bonus: bool = False
    one_call: bool = False
    verify: str = "token"
    candidates: int = 1
    stop_below: float = 0.0
    adapt_k: float = 0.0

    def __post_init__(self):
        check_k(self.k)
        check_temperature(self.temperature)
        if self.draft not in DRAFTS:
            raise ValueError(f"draft must be one of {DRAFTS}, got {self.draft!r}")
        if not isinstance(self.r_atol, (int, float)) or not 0.0 <= self.r_atol <= 1.0:
            raise ValueError(f"r_atol must lie in [0, 1] (0 = exact), got {self.r_atol!r}")
        if self.one_call and self.draft != "self":
            raise ValueError("one_call=True uses the model's own drafts: set draft='self'")
        if self.verify not in VERIFY:
            raise ValueError(f"verify must be one of {VERIFY}, got {self.verify!r}")
        if self.verify == "block" and self.r_atol:
            raise ValueError("r_atol (lossy token acceptance) needs verify='token'")
        self._check_head_option("stop_below", "stops the draft head's proposals early")
        self._check_head_option("adapt_k", "sets the draft head's k per row from its acceptance")
        c = self.candidates
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CANDIDATES:
            raise ValueError(
                f"candidates must be an int in [1, {MAX_CANDIDATES}] (proposals tried per "
                f"rank; 1 = a chain), got {c!r}"
            )
        if c > 1 and (self.draft != "head" or self.verify != "token" or self.r_atol):
            raise ValueError(
                f"candidates={c} (a token tree) needs draft='head' and exact token "
                "verification (verify='token', r_atol=0)"
            )

    def _check_head_option(self, field: str, what: str) -> None:
        """A head-drafting threshold: a number in [0, 1) (0 = off), set only with draft='head'."""
        v = getattr(self, field)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"{field} must lie in [0, 1) (0 = off), got {v!r}")
        if v and self.draft != "head":
            raise ValueError(f"{field}={v} {what}: set draft='head'")

    @property
    def name(self) -> str:
        block = "+block" if self.verify == "block" else ""
        block += f"+tree{self.candidates}" if self.candidates > 1 else ""
        block += f"+stop{self.stop_below:g}" if self.stop_below else ""
        block += f"+adapt{self.adapt_k:g}" if self.adapt_k else ""
        if self.one_call:
            return f"assd-onecall{block}(k={self.k})"
        return f"assd-{self.draft}{'+bonus' if self.bonus else ''}{block}(k={self.k})"

    @property
    def exact(self) -> bool:
        return self.r_atol == 0.0

    @property
    def needs_draft_head(self) -> bool:
        return self.draft == "head"

    @property
    def oracle_temperature(self) -> float:
        return 1.0 if self.untempered_oracle else self.temperature

    @property
    def drafter(self):
        return drafter_for(self)

    def init(self, batch: Batch, forbidden: tuple[int, ...], vocab_size: int) -> State:
        return self.drafter.init(self, batch, forbidden, vocab_size)

    def step(self, st: State, session: Session, rng: Rng) -> tuple[State, RoundRecord]:
        drafter = self.drafter
        props = drafter.propose(self, st, session, rng)
        K = st.k
        ar = torch.arange(K, device=st.n.device)
        ranks = st.n[:, None] + ar  # [B, K]
        valid = ar < props.k[:, None]
        tokens = st.place(st.tokens, ranks, props.x, valid)

        # One oracle row per proposal, then the exact row of rank n+k where wanted, then the
        # drafter's own rows (next round's drafts in the one-call form).
        has_next = props.next_row & (st.n + props.k < st.end)
        o_rank = torch.cat(
            [torch.where(valid, ranks, -1), torch.where(has_next, st.n + props.k, -1)[:, None]], 1
        )
        d_rank, d_ctx = drafter.extra_queries(self, st, props)
        t_rank, t_ctx, tree = sibling_tree(st, props, valid, d_rank.shape[1])
        logits = session.logits(
            tokens,
            st.n,
            props.k,
            torch.cat([o_rank, t_rank, d_rank], 1),
            torch.cat([o_rank, t_ctx, d_ctx], 1),
            **({} if tree is None else {"tree": tree}),
        )
        T = K + 1 + t_rank.shape[1]  # oracle rows, then the siblings' next rows
        p_all = to_probs(logits[:, :T], self.oracle_temperature, st.forbidden)
        calls = props.calls + st.active.long()
        tokens, verdict = self._verify(st, tokens, props, p_all, has_next, rng)
        carried, draft_calls = drafter.carry(
            self, st, tokens, verdict, p_all[:, K], logits[:, T:], session, rng
        )
        record = RoundRecord(
            active=st.active,
            start=st.n,
            drafted=props.k,
            accepted=verdict.accepted,
            outcome=verdict.outcome,
            committed=verdict.new_n - st.n,
            calls=calls,
            draft_calls=draft_calls + props.draft_calls,
            p_draft=verdict.qx,
            p_oracle=verdict.px,
        )
        new = st.commit(tokens, verdict.new_n, calls, record.draft_calls, **carried)
        return new, record

    def _verify(self, st: State, tokens, props: Proposals, p_all, has_next, rng: Rng):
        """Accept a prefix of the proposals, then draw the token after it (rank n+a): from the
        residual at the first rejection, or from the exact next row when every proposal passed
        and that row exists. -> (tokens with that token placed, Verdict)."""
        K = st.k
        p, p_next = p_all[:, :K], p_all[:, K]
        B, _, V = p.shape
        if props.alt is not None:  # a token tree: the siblings' exact next rows follow
            p_sib = p_all[:, K + 1 :].view(B, K, -1, V)  # [B, K, C-1, V]
        q = props.q
        px = torch.gather(p, -1, props.x.unsqueeze(-1)).squeeze(-1)  # [B, K]
        qx = torch.gather(q, -1, props.x.unsqueeze(-1)).squeeze(-1)
        ratio = px / qx.clamp(min=torch.finfo(qx.dtype).tiny)
        if props.exact_first and K:  # q_0 *is* the exact conditional: p_0 == q_0, up to rounding
            ratio = torch.cat([torch.ones_like(ratio[:, :1]), ratio[:, 1:]], 1)
        if self.verify == "block":
            a, w = block_accept(p, q, ratio, props.k, rng)  # w: [B] weight of the kept prefix
        else:
            a = rng.first_rejection((ratio + self.r_atol).clamp(max=1.0), props.k)
            w = None  # token verification: the plain residual norm(max(p - q, 0))

        rejected = st.active & (a < props.k)
        ai = a.clamp(max=max(K - 1, 0))[:, None, None].expand(B, 1, V)
        p_a, q_a = torch.gather(p, 1, ai)[:, 0], torch.gather(q, 1, ai)[:, 0]
        # norm(max(w p - q, 0)) after a kept prefix of weight w (block), or norm(max(p - q, 0))
        r = residual(p_a if w is None else w[:, None] * p_a, q_a)
        won = torch.zeros_like(rejected)
        if props.alt is not None:  # the rejected proposal's siblings, in turn
            x_a = torch.gather(props.x, 1, a.clamp(max=K - 1)[:, None])[:, 0]
            alt_a = torch.gather(props.alt, 1, ai[:, :, :1].expand(B, 1, props.alt.shape[2]))
            j, r = recursive_rejection(r, q_a, x_a, alt_a[:, 0], rejected, rng)
            won = rejected & (j < alt_a.shape[2])
        dist = torch.where(rejected[:, None], r, p_next)
        need = (rejected & ~won) | (has_next & (a == props.k))
        y = rng.categorical(dist[:, None], need[:, None])
        tokens = st.place(tokens, (st.n + a)[:, None], y, need[:, None])
        outcome = torch.where(
            rejected, int(Outcome.RESIDUAL), torch.where(need, int(Outcome.EXACT), 0)
        )
        new_n = st.n + a + need.long()
        if props.alt is not None:  # an accepted sibling, then the exact token after it
            jj = j.clamp(max=alt_a.shape[2] - 1)
            sib = torch.gather(alt_a[:, 0], 1, jj[:, None])  # [B, 1]
            tokens = st.place(tokens, (st.n + a)[:, None], sib, won[:, None])
            rows = p_sib[torch.arange(B, device=a.device), a.clamp(max=K - 1), jj]  # [B, V]
            bonus = won & (st.n + a + 1 < st.end)
            z = rng.categorical(rows[:, None], bonus[:, None])
            tokens = st.place(tokens, (st.n + a + 1)[:, None], z, bonus[:, None])
            outcome = torch.where(won, int(Outcome.SIBLING), outcome)
            new_n = new_n + won.long() + bonus.long()
        return tokens, Verdict(a, outcome, new_n, px, qx)


def sibling_tree(st: State, props: Proposals, valid, n_extra: int):
    """The oracle call's token tree: each proposal's siblings (``props.alt``) as nodes at its
    rank, hanging off the main line, and one query per sibling for the rank after it.
    -> (q_rank, q_ctx [B, K * (C-1)], Tree or None); n_extra: drafter queries after them."""
    B, K = valid.shape
    if props.alt is None:
        empty = torch.empty(B, 0, dtype=torch.long, device=st.n.device)
        return empty, empty, None
    C1 = props.alt.shape[2]
    rank = (st.n[:, None] + torch.arange(K, device=st.n.device))[:, :, None].expand(B, K, C1)
    ok = valid[:, :, None] & (props.alt >= 0)  # [B, K, C-1]
    ask = ok & (rank + 1 < st.end[:, None, None])  # the sibling's next rank exists
    q = torch.where(ask, rank + 1, -1).flatten(1)
    node = torch.arange(K * C1, device=st.n.device).view(1, K, C1).expand(B, K, C1)
    none = torch.full((B, K + 1 + n_extra), -1, dtype=torch.long, device=st.n.device)
    # Queries in call order: oracle rows (K + 1), the siblings' rows, the drafter's rows.
    q_node = torch.cat(
        [none[:, : K + 1], torch.where(ask, node, -1).flatten(1), none[:, K + 1 :]], 1
    )
    tree = Tree(
        tok=props.alt.clamp(min=0).flatten(1),
        rank=torch.where(ok, rank, -1).flatten(1),
        parent=torch.full((B, K * C1), -1, dtype=torch.long, device=st.n.device),
        q_node=q_node,
    )
    return q, q, tree


def recursive_rejection(target, q, x, alt, rejected, rng: Rng):
    """Recursive rejection sampling over the siblings of a rejected proposal x ~ q.

    target [B, V]: norm(max(p - q, 0)), what the token must follow now that x was rejected;
    alt [B, C-1]: the siblings in the order they were drawn from q without replacement (-1:
    none). Sibling i is drawn from q' = q without x and the siblings before it, renormalised,
    so it is accepted with min(1, target(y) / q'(y)); on rejection the target becomes
    norm(max(target - q', 0)). Each step is a speculative-sampling step for the current target,
    so the result follows ``target`` (Chen et al. 2023; Jeon et al. 2024, recursive
    speculative decoding). -> (index of the accepted sibling [B] (C-1: none), the target
    after every sibling was rejected [B, V])."""
    tiny = torch.finfo(q.dtype).tiny
    rest = q.scatter(1, x[:, None], 0.0)
    alphas = []
    for i in range(alt.shape[1]):
        y = alt[:, i]
        live = rejected & (y >= 0)
        yi = y.clamp(min=0)[:, None]
        qn = rest / rest.sum(-1, keepdim=True).clamp(min=tiny)
        ty, qy = torch.gather(target, 1, yi)[:, 0], torch.gather(qn, 1, yi)[:, 0]
        alphas.append(torch.where(live, (ty / qy.clamp(min=tiny)).clamp(max=1.0), 0.0))
        target = torch.where(live[:, None], residual(target, qn), target)
        rest = torch.where(live[:, None], rest.scatter(1, yi, 0.0), rest)
    alpha = torch.stack(alphas, 1)  # [B, C-1]: acceptance of each, given the ones before failed
    count = torch.where(rejected, alt.shape[1], 0)
    # The first sibling accepted = the first "rejection" of the coins with probability 1 - alpha.
    return rng.first_rejection(1 - alpha, count), target


def block_accept(p, q, ratio, count, rng: Rng):
    """Block verification (Sun et al., "Block verification accelerates speculative decoding",
    ICLR 2025): how many of ``count`` proposals to keep, decided jointly.

    p, q [B, K, V]: oracle and draft rows; ratio [B, K] = p(x_i) / q(x_i). With prefix weights
    w_0 = 1, w_j = min(w_{j-1} ratio_{j-1}, 1) and residual masses
    S_j = sum_x max(w_j p_j(x) - q_j(x), 0), prefix j < count is kept with probability
    h_j = S_j / (S_j + 1 - w_j) and the whole block with h_count = w_count, tested from
    j = count down to 1 with independent coins; the token after a kept prefix j < count comes
    from norm(max(w_j p_j - q_j, 0)). Exact (tested by enumeration), and in expectation it keeps
    at least as many proposals as token-by-token verification. -> (kept [B], w_kept [B]).
    """
    B, K = ratio.shape
    ws = [torch.ones_like(ratio[:, 0])]
    for j in range(K):  # w_j = min(w_{j-1} r_{j-1}, 1): a running min, not a clamped cumprod
        ws.append(torch.minimum(ws[-1] * ratio[:, j], torch.ones_like(ratio[:, j])))
    w = torch.stack(ws, 1)  # [B, K+1]: weight of prefix length 0..K
    S = (w[:, :K, None] * p - q).clamp(min=0).sum(-1)  # [B, K]: residual mass after prefix j
    den = S + 1 - w[:, :K]
    h = torch.where(den > 0, S / den.clamp(min=torch.finfo(den.dtype).tiny), torch.ones_like(S))
    # Column c: the probability of keeping prefix length c + 1.
    lengths = torch.arange(1, K + 1, device=ratio.device)[None]
    h_next = torch.cat([h[:, 1:], h.new_zeros(B, 1)], 1)
    h_len = torch.where(lengths < count[:, None], h_next, 0.0)
    h_len = torch.where(lengths == count[:, None], w[:, 1:], h_len)
    # The backward scan as a forward first-rejection: position t tests prefix count - t, and a
    # "rejection" there means that prefix's coin came up: it is kept.
    t = torch.arange(K, device=ratio.device)[None]
    keep = torch.gather(h_len, 1, (count[:, None] - 1 - t).clamp(min=0))
    miss = rng.first_rejection(1 - keep, count)
    kept = count - miss
    return kept, torch.gather(w, 1, kept[:, None])[:, 0]


@dataclass
class Verdict:
    """What the oracle call decided, per row: ``accepted`` proposals, then ``outcome``; the
    committed prefix now ends at ``new_n``. px, qx [B, K]: oracle and draft probabilities."""

    accepted: torch.Tensor
    outcome: torch.Tensor
    new_n: torch.Tensor
    px: torch.Tensor
    qx: torch.Tensor
