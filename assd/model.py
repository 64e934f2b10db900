"""The AS-ARM interface: one protocol every backend implements and every sampler uses.

Everything is phrased in *ranks* of a decoding order (see ``assd.orders``):

- a :class:`Batch` holds B sequences, each with its own order ``sigma``, prompt size ``n_prompt``
  (ranks ``< n_prompt`` are the visible prompt) and ``length`` (ranks ``>= length`` are padding);
- ``model.open(batch)`` returns a :class:`Session`; ``session.logits(...)`` answers a set of
  *queries*. Query ``(rank r, context c)`` asks for the logits of the token at rank ``r``
  conditioned on the tokens at ranks ``< c`` (``n_prompt <= c <= r``).

With that one primitive:

- draft   = queries ``(n+i, n)`` for i < k: k mutually independent predictions given ranks < n;
- oracle  = queries ``(n+i, n+i)`` with proposals filled in at ranks n..n+k-1: exact chain rule;
- likelihood = oracle over every masked rank with the completed tokens (teacher forcing).

A call also says which ranks are *committed* (``< n``: fixed for the rest of the session, so a
backend may cache their states) and which are *proposals* (``n .. n+m-1``: may change next call).
The prompt attends bidirectionally to itself; everything else attends to lower ranks only.
Backends never sample; samplers never build attention masks.

A call may also carry a token :class:`Tree`: more proposals beside the main line (several
candidates for one rank, each with the proposals that follow it), and queries that read the
path to one of them. ``logits_by_paths`` answers such a call with plain calls, one per query
that reads a node (the ground truth; the reference and toy backends use it); the engine
computes every node as an extra content row of the same forward.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch

from .orders import inverse_order, validate_order

__all__ = [
    "Batch",
    "ASARM",
    "Session",
    "make_batch",
    "checked_batch",
    "check_mask_id",
    "check_queries",
    "query_violations",
    "QUERY_RULES",
    "draft_queries",
    "oracle_queries",
    "one_call_queries",
    "Tree",
    "TREE_RULES",
    "tree_violations",
    "path_tokens",
    "logits_by_paths",
]


@dataclass(frozen=True)
class Batch:
    """B sequences to infill. Positions at ranks >= n_prompt are generated (their token is ignored).

    tokens:   [B, L] long   prompt tokens in place; other positions hold any id (e.g. the mask id)
    sigma:    [B, L] long   rank of each position
    n_prompt: [B] long      number of visible (prompt) positions
    length:   [B] long      real length of each row; positions/ranks beyond it are padding
    """

    tokens: torch.Tensor
    sigma: torch.Tensor
    n_prompt: torch.Tensor
    length: torch.Tensor

    def __post_init__(self):
        # Shapes and types only (no values, no device sync): values are make_batch's job.
        for name in ("tokens", "sigma", "n_prompt", "length"):
            if not isinstance(getattr(self, name), torch.Tensor):
                t = type(getattr(self, name)).__name__
                raise TypeError(f"Batch.{name} must be a torch tensor, got {t}: use make_batch")
        if self.tokens.dim() != 2 or self.sigma.shape != self.tokens.shape:
            raise ValueError(
                f"Batch.tokens and Batch.sigma must both have shape [B, L], got "
                f"{tuple(self.tokens.shape)} and {tuple(self.sigma.shape)}: use make_batch"
            )
        B = self.tokens.shape[0]
        if self.n_prompt.shape != (B,) or self.length.shape != (B,):
            raise ValueError(
                f"Batch.n_prompt and Batch.length must have shape [B]=[{B}], got "
                f"{tuple(self.n_prompt.shape)} and {tuple(self.length.shape)}: use make_batch"
            )

    @property
    def pos_of_rank(self) -> torch.Tensor:  # [B, L]
        return inverse_order(self.sigma)

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in (self.tokens, self.sigma, self.n_prompt, self.length)))

    def with_tokens(self, tokens: torch.Tensor) -> Batch:
        return replace(self, tokens=tokens)


def rows_of(batch: Batch, rows: torch.Tensor) -> Batch:
    """The sub-batch of rows [R] (long) of ``batch``."""
    return Batch(*(t[rows] for t in (batch.tokens, batch.sigma, batch.n_prompt, batch.length)))


def write_rows(dst: Batch, rows: torch.Tensor, src: Batch) -> None:
    """Overwrite rows [R] of ``dst`` in place with the R rows of ``src`` (same L): how a
    session's batch takes new sequences into finished rows (``Session.refill``)."""
    if src.tokens.shape[1] != dst.tokens.shape[1] or src.size != rows.numel():
        raise ValueError(
            f"refill needs {rows.numel()} rows of length {dst.tokens.shape[1]}, got a batch of "
            f"shape {tuple(src.tokens.shape)}: pad every sequence to one length"
        )
    rows = rows.to(dst.tokens.device)
    for name in ("tokens", "sigma", "n_prompt", "length"):
        d = getattr(dst, name)
        d[rows] = getattr(src, name).to(d.device)


def _counts(x, name: str, device: torch.device) -> torch.Tensor:
    """An int or integer tensor/sequence of per-row counts -> a long tensor (TypeError otherwise)."""
    if isinstance(x, bool) or (isinstance(x, torch.Tensor) and x.dtype == torch.bool):
        raise TypeError(f"{name} must be an int or an integer tensor, got a bool")
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, numbers.Integral):
        if not -(2**63) <= int(x) < 2**63:
            raise ValueError(f"{name} must fit in int64, got {int(x)}")
        t = torch.tensor(int(x))
    else:
        try:
            t = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise TypeError(f"{name} must be an int or an integer tensor, got {x!r:.80}") from e
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(
            f"{name} must be an int or an integer tensor, got {x!r:.80} ({t.dtype}): "
            "counts of positions are whole numbers"
        )
    return t.to(device=device, dtype=torch.long)


def check_mask_id(mask_id: int | None, vocab_size: int | None = None) -> int | None:
    """Validate an optional mask token id (an int in [0, vocab_size)); returns it as an int."""
    if mask_id is None:
        return None
    if isinstance(mask_id, bool) or not isinstance(mask_id, numbers.Integral):
        raise TypeError(f"mask_id must be an int token id or None, got {mask_id!r}")
    if mask_id < 0 or (vocab_size is not None and mask_id >= vocab_size):
        raise ValueError(f"mask_id must lie in [0, vocab_size={vocab_size}), got {mask_id}")
    return int(mask_id)


def make_batch(
    tokens: torch.Tensor,
    sigma: torch.Tensor,
    n_prompt: torch.Tensor | int,
    length: torch.Tensor | None = None,
    *,
    vocab_size: int | None = None,
    max_length: int | None = None,
    needs_prompt: bool = False,
    mask_id: int | None = None,
) -> Batch:
    """Validate and assemble a :class:`Batch` (1-D inputs are treated as one sequence).

    Ragged rows: give ``length`` and put padding positions at the end of the row; their ranks
    must be >= length (``order_from_mask`` on a mask that marks padding as masked, then trimming
    ``length``, does that for you).

    vocab_size: every token id must lie in [0, vocab_size) (masked and padding positions too:
    a backend may embed them even though they never influence the result).
    mask_id: the model's mask token id: the prompt must not contain it (a visible mask token is
    almost always a position that was meant to be masked).
    """
    if not isinstance(tokens, torch.Tensor) or not isinstance(sigma, torch.Tensor):
        raise TypeError(
            "tokens and sigma must be torch tensors, got "
            f"{type(tokens).__name__} and {type(sigma).__name__}"
        )
    if tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"tokens must be an integer tensor of token ids, got {tokens.dtype}")
    if sigma.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"sigma must be an integer tensor of ranks, got {sigma.dtype}")
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    if sigma.dim() == 1:
        sigma = sigma.unsqueeze(0)
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape [L] or [B, L], got {tuple(tokens.shape)}")
    if sigma.shape != tokens.shape:
        raise ValueError(
            f"sigma shape {tuple(sigma.shape)} must match tokens shape {tuple(tokens.shape)}"
        )
    B, L = tokens.shape
    if B == 0:
        raise ValueError("the batch is empty (tokens has 0 rows): give at least one sequence")
    if L == 0:
        raise ValueError("sequences are empty (tokens has 0 columns): give at least one position")
    sigma = sigma.to(tokens.device)
    n_prompt = _counts(n_prompt, "n_prompt", tokens.device)
    n_prompt = n_prompt.expand(B).clone() if n_prompt.dim() == 0 else n_prompt
    if length is None:
        length = torch.full((B,), L, dtype=torch.long, device=tokens.device)
    length = _counts(length, "length", tokens.device)
    if length.shape != (B,):
        raise ValueError(f"length must have shape [B]={B}, got {tuple(length.shape)}")
    if bool((length < 1).any()) or bool((length > L).any()):
        raise ValueError(f"length must lie in [1, L={L}] for every row")
    validate_order(sigma.long(), n_prompt, length)
    if max_length is not None and L > max_length:  # the padded width: what backends see
        pad = int(length.max()) < L
        raise ValueError(
            f"sequence length {L}{' (padding included)' if pad else ''} exceeds the model's "
            f"maximum of {max_length} tokens: "
            + ("trim the padding columns" if pad else "shorten the input or mask fewer tokens")
        )
    if bool((n_prompt >= length).any()):
        raise ValueError("nothing to generate: every row needs at least one masked position")
    if needs_prompt and bool((n_prompt == 0).any()):
        raise ValueError(
            "this model needs at least one visible (prompt) token: unmask at least one position"
        )
    pos_of_rank = inverse_order(sigma.long())
    ranks = torch.arange(L, device=tokens.device).expand(B, L)
    pad_pos = torch.gather(pos_of_rank, 1, ranks) if L else pos_of_rank
    is_pad = ranks >= length[:, None]
    if bool((is_pad & (pad_pos < length[:, None])).any()):
        raise ValueError(
            "padding ranks (>= length) must sit at positions >= length (pad at the end)"
        )
    prompt = sigma < n_prompt[:, None]
    if vocab_size is not None:
        bad = (tokens < 0) | (tokens >= vocab_size)
        if bool((bad & prompt).any()):
            raise ValueError(
                f"prompt token ids must lie in [0, vocab_size={vocab_size}); "
                f"found {tokens[bad & prompt][:5].tolist()}"
            )
        if bool(bad.any()):
            raise ValueError(
                f"token ids at masked and padding positions must lie in [0, "
                f"vocab_size={vocab_size}) too (they are placeholders: use the mask or pad id); "
                f"found {tokens[bad][:5].tolist()}"
            )
    mask_id = check_mask_id(mask_id, vocab_size)
    if mask_id is not None:
        hit = prompt & (tokens == mask_id)
        if bool(hit.any()):
            b, p = (int(i) for i in hit.nonzero()[0])
            raise ValueError(
                f"the prompt contains the mask token (id {mask_id}) at row {b}, position {p}: "
                "mark that position as masked (to be generated) or replace the token"
            )
    return Batch(tokens.long(), sigma.long(), n_prompt, length)


def checked_batch(model: ASARM, batch: Batch) -> Batch:
    """``batch`` validated against ``model`` (vocabulary, maximum length, prompt rules, mask id)
    and moved to the model's device: what every entry point that runs a model on a user's batch
    (sampling, likelihood) does first. Errors name the problem and the fix."""
    if not isinstance(batch, Batch):
        raise TypeError(
            f"batch must be an assd.Batch, got {type(batch).__name__}: build one with "
            "assd.make_batch(tokens, sigma, n_prompt) or assd.text.infills_to_batch(...)"
        )
    b = make_batch(
        batch.tokens,
        batch.sigma,
        batch.n_prompt,
        batch.length,
        vocab_size=model.vocab_size,
        max_length=model.max_length,
        needs_prompt=model.needs_prompt,
        mask_id=getattr(model, "mask_id", None),
    )
    return b.to(model.device)


@runtime_checkable
class Session(Protocol):
    """An open inference session over one :class:`Batch` (a backend may keep a KV cache)."""

    def logits(
        self,
        tokens: torch.Tensor,  # [B, L] current tokens (ranks < n + m filled in)
        n: torch.Tensor,  # [B] ranks < n are committed (never change again in this session)
        m: torch.Tensor,  # [B] ranks n .. n+m-1 hold proposals (may change in later calls)
        q_rank: torch.Tensor,  # [B, Q] rank to predict; -1 = padding query
        q_ctx: torch.Tensor,  # [B, Q] condition on ranks < q_ctx; n_prompt <= q_ctx <= min(q_rank, n+m)
        tree: Tree | None = None,  # optional: more proposals beside the main line (see Tree)
    ) -> torch.Tensor:  # [B, Q, V] logits (padding queries: anything finite)
        ...

    # Optional, for models with a draft head (``ASARM.has_draft_head``; see ``assd.heads``):
    # draft_logits(tokens, q_rank, q_ctx, q_feat) -> [B, Q, V]: the head's logits for the token at
    # rank q_rank given ranks < q_ctx, reading ranks < q_feat through the target's states
    # (valid for the current tokens: n_prompt <= q_feat <= q_ctx <= q_rank) and ranks
    # q_feat .. q_ctx-1 as plain tokens. Cheap, approximate: proposals, never verification.

    # Optional, for continuous batching (``assd.sample_many``):
    # refill(rows, batch) -> None: rows [R] long of this session's batch take the R sequences of
    # ``batch`` (same L; see write_rows): their committed ranks are now the new prompts, and
    # nothing of the sequences they held before may influence them. Other rows are unchanged.


@runtime_checkable
class ASARM(Protocol):
    """An any-subset autoregressive model."""

    vocab_size: int
    max_length: int | None  # longest sequence the model takes (None: no limit)
    needs_prompt: bool  # True if at least one visible token is required
    forbidden_ids: tuple[int, ...]  # never generated (mask, pad, ...): logit -inf before softmax
    # has_draft_head: bool (optional, default False): sessions answer draft_logits

    @property
    def device(self) -> torch.device: ...

    def open(self, batch: Batch) -> Session: ...


QUERY_RULES = (
    "query context must not exceed its rank (q_ctx <= q_rank)",
    "query context reaches beyond the filled ranks (q_ctx <= n + m)",
    "query context must include the whole prompt (q_ctx >= n_prompt)",
    "query rank lies in the padding (q_rank >= length)",
)


def query_violations(
    batch: Batch, n: torch.Tensor, m: torch.Tensor, q_rank: torch.Tensor, q_ctx: torch.Tensor
) -> list[torch.Tensor]:
    """One 0-dim bool flag per rule of QUERY_RULES, on the device (no host sync)."""
    valid = q_rank >= 0
    return [
        (valid & (q_ctx > q_rank)).any(),
        (valid & (q_ctx > (n + m)[:, None])).any(),
        (valid & (q_ctx < batch.n_prompt[:, None])).any(),
        (valid & (q_rank >= batch.length[:, None])).any(),
    ]


def check_queries(
    batch: Batch, n: torch.Tensor, m: torch.Tensor, q_rank: torch.Tensor, q_ctx: torch.Tensor
) -> None:
    """For backends: raise ValueError if a query breaks the contract above."""
    flags = torch.stack(query_violations(batch, n, m, q_rank, q_ctx)).tolist()
    for bad, msg in zip(flags, QUERY_RULES):
        if bad:
            raise ValueError(msg)


def draft_queries(
    n: torch.Tensor, k: int, length: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries (n+i, n), i < k, padded with -1 past each row's length. Shapes [B, k]."""
    r = n[:, None] + torch.arange(k, device=n.device)
    valid = r < length[:, None]
    return torch.where(valid, r, -1), torch.where(valid, n[:, None].expand_as(r), -1)


def oracle_queries(
    n: torch.Tensor, k: int, length: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries (n+i, n+i), i < k: the exact chain rule. Shapes [B, k]."""
    r = n[:, None] + torch.arange(k, device=n.device)
    valid = r < length[:, None]
    return torch.where(valid, r, -1), torch.where(valid, r, -1)


def one_call_queries(
    n: torch.Tensor, k: int, kk: torch.Tensor, active: torch.Tensor, end: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next round's draft queries that one-call ASSD adds to its oracle call.

    For every possible outcome a = 0 .. k of this round (a proposals accepted, then one token at
    rank n+a): queries (n+a+1+i, n+a), i < k, the drafts of ranks n+a+1 .. n+a+k given ranks
    < n+a (the token at rank n+a is not drawn yet, so no draft may read it). Outcomes
    a > kk (more than this round's kk proposals) cannot happen; inactive rows and ranks >= end
    are padding (-1). n, kk, end: [B] long; active: [B] bool.
    Returns (q_rank, q_ctx), each [B, (k+1) * k], outcome-major (row a*k + i).
    """
    B = n.shape[0]
    ar = torch.arange(k, device=n.device)
    a = torch.arange(k + 1, device=n.device)  # possible outcomes
    rank = n[:, None, None] + a[None, :, None] + 1 + ar[None, None, :]  # [B, k+1, k]
    ctx = (n[:, None] + a)[:, :, None].expand(B, k + 1, k)
    ok = (
        active[:, None, None]
        & (a[None, :, None] <= kk[:, None, None])
        & (rank < end[:, None, None])
    )
    return torch.where(ok, rank, -1).flatten(1), torch.where(ok, ctx, -1).flatten(1)


@dataclass(frozen=True)
class Tree:
    """More proposals for one call, shaped as a token tree (SpecInfer / SpecTr style).

    The *main line* is what ``tokens`` holds: committed ranks < n, then proposals n .. n+m-1.
    Node j is the token ``tok[:, j]`` at rank ``rank[:, j]``; its parent ``parent[:, j]`` is
    -1, the main line (the node follows the main line's tokens at ranks < rank, which must be
    filled: n <= rank <= n + m), or an earlier node i < j at rank - 1. The node's *path* is
    its chain of ancestors up to the main line, itself included. Query i may read a node:
    ``q_node[:, i] = j`` conditions it on the main line below the path's first rank and on the
    path's tokens (then q_ctx = rank[j] + 1 <= q_rank); -1: an ordinary main-line query.

    tok, rank, parent: [B, N] long (rank -1: a padding node); q_node: [B, Q] long.
    """

    tok: torch.Tensor
    rank: torch.Tensor
    parent: torch.Tensor
    q_node: torch.Tensor

    def __post_init__(self):
        if not all(isinstance(t, torch.Tensor) for t in vars(self).values()):
            raise TypeError("Tree fields must be torch tensors")
        if self.tok.dim() != 2 or self.rank.shape != self.tok.shape:
            raise ValueError(f"Tree.tok and Tree.rank must be [B, N], got {tuple(self.tok.shape)}")
        if self.parent.shape != self.tok.shape:
            raise ValueError(f"Tree.parent must be [B, N]={tuple(self.tok.shape)}")
        if self.q_node.dim() != 2 or self.q_node.shape[0] != self.tok.shape[0]:
            raise ValueError(f"Tree.q_node must be [B, Q], got {tuple(self.q_node.shape)}")

    @property
    def size(self) -> int:
        return self.tok.shape[1]


TREE_RULES = (
    "tree node parent must be -1 (the main line) or an earlier valid node one rank below",
    "a tree node off the main line must follow filled ranks (n <= rank <= n + m)",
    "a tree node's rank lies in the padding (rank >= length)",
    "a query reading a tree node needs q_ctx = node rank + 1 <= q_rank and a valid node",
)


def tree_violations(
    batch: Batch,
    n: torch.Tensor,
    m: torch.Tensor,
    q_rank: torch.Tensor,
    q_ctx: torch.Tensor,
    tree: Tree,
) -> list[torch.Tensor]:
    """One 0-dim bool flag per rule of TREE_RULES, on the device (no host sync)."""
    N = tree.size
    valid = tree.rank >= 0
    par = tree.parent
    own = torch.arange(N, device=par.device)[None]
    par_rank = torch.gather(tree.rank, 1, par.clamp(min=0)) if N else par
    bad_par = valid & (par >= 0) & ((par >= own) | (par_rank < 0) | (par_rank != tree.rank - 1))
    bad_par |= valid & (par < -1)
    off_main = valid & (par == -1)
    bad_main = off_main & ((tree.rank < n[:, None]) | (tree.rank > (n + m)[:, None]))
    bad_len = valid & (tree.rank >= batch.length[:, None])
    reads = (tree.q_node >= 0) & (q_rank >= 0)
    node = tree.q_node.clamp(min=0, max=max(N - 1, 0))
    n_rank = torch.gather(tree.rank, 1, node) if N else torch.full_like(node, -1)
    bad_q = reads & ((tree.q_node >= N) | (n_rank < 0) | (q_ctx != n_rank + 1) | (q_ctx > q_rank))
    return [bad_par.any(), bad_main.any(), bad_len.any(), bad_q.any()]


def path_tokens(
    tokens: torch.Tensor, pos_of_rank: torch.Tensor, tree: Tree, node: torch.Tensor
) -> torch.Tensor:
    """tokens [B, L] with the path to ``node`` [B] (-1: none) written in place of the main line.

    Walks up the parents, at most N steps (a parent always precedes its child)."""
    B, L = tokens.shape
    out = torch.cat([tokens, tokens[:, :1]], 1)  # a spare column for rows with nothing to place
    cur = node.clone()
    for _ in range(tree.size):
        live = cur >= 0
        c = cur.clamp(min=0)[:, None]
        rank = torch.gather(tree.rank, 1, c)
        pos = torch.gather(pos_of_rank, 1, rank.clamp(min=0))
        out.scatter_(1, torch.where(live[:, None], pos, L), torch.gather(tree.tok, 1, c))
        cur = torch.where(live, torch.gather(tree.parent, 1, c)[:, 0], -1)
    return out[:, :L]


def logits_by_paths(logits_fn, batch: Batch, tokens, n, m, q_rank, q_ctx, tree: Tree):
    """Answer a call with a tree by plain calls (``logits_fn(tokens, n, m, q_rank, q_ctx)``):
    the main-line queries in one call, then one call per query column that reads a node, with
    that node's path written into the tokens. Exact by construction (the ground truth that fast
    tree implementations are tested against); costs one call per such column."""
    flags = torch.stack(tree_violations(batch, n, m, q_rank, q_ctx, tree)).tolist()
    for bad, msg in zip(flags, TREE_RULES):
        if bad:
            raise ValueError(msg)
    pos_of_rank = batch.pos_of_rank
    on_node = (tree.q_node >= 0) & (q_rank >= 0)
    out = logits_fn(tokens, n, m, torch.where(on_node, -1, q_rank), torch.where(on_node, -1, q_ctx))
    for i in range(q_rank.shape[1]):
        here = on_node[:, i]
        if not bool(here.any()):
            continue
        t = path_tokens(tokens, pos_of_rank, tree, torch.where(here, tree.q_node[:, i], -1))
        r = torch.where(here, q_rank[:, i], -1)[:, None]
        c = torch.where(here, q_ctx[:, i], -1)[:, None]
        mi = torch.where(here, torch.maximum(m, q_ctx[:, i] - n), m)
        li = logits_fn(t, n, mi, r, c)[:, 0]
        out[:, i] = torch.where(here[:, None], li.to(out.dtype), out[:, i])
    return out
