"""The fast exact engine: XLNet AS-ARM inference with an exact, rank-ordered KV cache.

Under the AS-ARM masks the content state of the token at rank s depends only on the tokens at
ranks <= s (the prompt sees only itself). So a session encodes the prompt once, keeps every
layer's keys/values per rank, and a call computes only

- the content rows of ranks whose cached state is missing or stale, up to the highest context
  the call needs (committed ranks and this call's proposals, causal by rank), and
- the query-stream rows, one per query (r, c), each with its own attention limit c.

Validity is checked by tokens, not trusted from ``n``: slot s is reused iff the token at every
rank <= s equals the one it was computed with. So proposal states computed in one call are
reused by the next call when the proposals were accepted (ASSD), and recomputed otherwise.
Any query set is served in ONE forward, whatever its ranks and contexts.

    engine = XLNetEngine.from_hf(hf_model, forbidden_ids, max_length, dtype=torch.bfloat16)
    results = assd.sample(engine, batch, assd.ASSD(5, bonus=True), torch.Generator().manual_seed(0))

Memory: a session holds ``cache_bytes`` = layers x 2 x B x heads x (L + 1, rounded to 8) x d_head
elements; the buffers (and their CUDA graphs) go back to the engine when the session is garbage
collected and serve the next session of the same shape (``engine.free_memory()`` drops them).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import deque

import torch

from ..model import (
    QUERY_RULES,
    TREE_RULES,
    Batch,
    Tree,
    check_mask_id,
    query_violations,
    tree_violations,
    write_rows,
)
from .engine_attention import Rows, forward_rows
from .engine_graphs import (
    MAX_GRAPH_ROWS,
    Step,
    Workspace,
    bucket,
    run_in_place,
    run_step,
    step,
    write_head_keys,
)
from .engine_weights import XLNetWeights, rel_tables, weights_from_hf

ALIGN = 8  # span/slot rounding: aligned attention masks keep the fused SDPA kernels usable


def _round_up(x: int, m: int = ALIGN) -> int:
    return -(-x // m) * m


class XLNetEngine:
    """The AS-ARM protocol over XLNet weights, KV-cached (see module docstring).

    cache: reuse states across calls of a session (False: every call recomputes all rows
    above the prompt, like a fresh session; for tests and measurements).
    graphs: replay CUDA graphs for small calls (default: on CUDA devices).
    static_shapes: pad small calls to a few fixed shapes (what graphs need; default: = graphs).
    reuse_proposals: keep the states of a call's proposals (ranks >= n) and reuse them next call
    if their tokens and all lower ranks are unchanged (False: recompute them; measurements).
    check: validate every query set against the protocol (folded into the call's one sync).
    max_idle: ended sessions' workspaces kept for reuse (the rest are freed; memory stays bounded).
    mask_id: the tokenizer's mask token id (``assd.load`` sets it): prompts must not contain it.
    compile_rounds: a preference the sampling loop reads (``assd.sample(compile=None)``): fuse
    each captured sampler round with ``torch.compile`` (``assd.samplers.graphs``). The engine
    itself does not change; it only runs sync-free, which is what makes whole rounds compilable.

    Thread-safe: sessions of one engine may run in several threads at once (each session owns its
    workspace; the shared pool of idle workspaces is guarded by a lock).
    """

    needs_prompt = True

    def __init__(
        self,
        weights: XLNetWeights,
        forbidden_ids: tuple[int, ...] = (),
        max_length: int | None = None,
        *,
        cache: bool = True,
        graphs: bool | None = None,
        static_shapes: bool | None = None,
        reuse_proposals: bool = True,
        check: bool = True,
        max_idle: int = 4,
        mask_id: int | None = None,
        head=None,
        compile_rounds: bool = False,
    ):
        self.w = weights
        self.compile_rounds = bool(compile_rounds)
        if head is not None:  # the draft head runs in the engine's dtype, on its device
            self.w.head = head.to(device=weights.emb.device, dtype=weights.emb.dtype)
        self.vocab_size = weights.vocab_size
        self.forbidden_ids = tuple(int(i) for i in forbidden_ids)
        self.max_length = max_length
        self.cache = cache
        self.graphs = self.device.type == "cuda" if graphs is None else bool(graphs)
        if self.graphs and self.device.type != "cuda":
            raise ValueError("graphs=True needs the weights on a CUDA device (or graphs=None)")
        self.check = check
        self.reuse_proposals = reuse_proposals
        if not isinstance(max_idle, int) or max_idle < 0:
            raise ValueError(f"max_idle must be an int >= 0, got {max_idle!r}")
        self.max_idle = max_idle
        self.mask_id = check_mask_id(mask_id, self.vocab_size)
        self.static_shapes = self.graphs if static_shapes is None else bool(static_shapes)
        self._tables: list[torch.Tensor] | None = None
        self._free: list[tuple[tuple[int, int], Workspace]] = []  # idle (shape, workspace), LRU
        # Ended sessions hand their workspace to ``_returned`` (a thread-safe deque); it joins
        # ``_free`` under ``_lock``. ``_owner``: the thread holding ``_lock`` (see ``_release``).
        self._returned: deque[tuple[tuple[int, int], Workspace]] = deque()
        self._lock = threading.RLock()
        self._owner: int | None = None

    @classmethod
    def from_hf(
        cls,
        model,
        forbidden_ids: tuple[int, ...] = (),
        max_length: int | None = None,
        dtype: torch.dtype | None = None,
        **kw,
    ) -> XLNetEngine:
        """Build from a ``transformers.XLNetLMHeadModel`` (on its device; dtype defaults to its own)."""
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype such as torch.bfloat16, got {dtype!r}")
        return cls(weights_from_hf(model, dtype), forbidden_ids, max_length, **kw)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        revision: str | None = None,
        *,
        forbidden_ids: tuple[int, ...] = (),
        max_length: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        **kw,
    ) -> XLNetEngine:
        """Load an ``XLNetLMHeadModel`` checkpoint (local dir or Hub id + revision, safetensors)."""
        from transformers import XLNetLMHeadModel

        net = XLNetLMHeadModel.from_pretrained(
            name_or_path, revision=revision, use_safetensors=True
        )
        return cls.from_hf(net.to(device).eval(), forbidden_ids, max_length, dtype, **kw)

    @property
    def device(self) -> torch.device:
        return self.w.emb.device

    @property
    def has_draft_head(self) -> bool:
        return self.w.head is not None

    @property
    def dtype(self) -> torch.dtype:
        return self.w.emb.dtype

    def tables(self, length: int) -> list[torch.Tensor]:
        """Relative-position keys for sequences of up to ``length`` tokens (grown on demand)."""
        with self._lock:  # never shrink them under another thread (it may need the longer ones)
            if self._tables is None or (self._tables[0].shape[-1] + 1) // 2 < length:
                self._tables = rel_tables(self.w, max(length, 2))
            return self._tables

    def head_tables(self, length: int) -> list[torch.Tensor] | None:
        """The draft head's relative-position keys (None without a head)."""
        if self.w.head is None:
            return None
        with self._lock:
            t = getattr(self, "_head_tables", None)
            if t is None or (t[0].shape[-1] + 1) // 2 < length:
                with torch.no_grad():
                    self._head_tables = self.w.head.rel_tables(max(length, 2))
            return self._head_tables

    def open(self, batch: Batch) -> EngineSession:
        return EngineSession(self, batch.to(self.device))

    def free_memory(self) -> None:
        """Drop the idle workspaces (KV buffers and CUDA graphs kept for the next session)."""
        with self._pooled() as free:
            free.clear()

    @property
    def idle_bytes(self) -> int:
        """Bytes of KV cache held by idle workspaces (graph memory pools not counted)."""
        with self._pooled() as free:
            return sum(ws.kv.numel() * ws.kv.element_size() for _, ws in free)

    @contextlib.contextmanager
    def _pooled(self):
        """Hold the pool lock; workspaces returned meanwhile join the pool, trimmed to max_idle.

        A session's finalizer may run in any thread at any allocation (garbage collection), even
        in this thread while it holds the lock: ``_release`` then only queues its workspace, and
        this block pools it on the way out.
        """
        with self._lock:
            outer, self._owner = self._owner, threading.get_ident()
            try:
                self._absorb()
                yield self._free
            finally:
                self._absorb()
                self._owner = outer

    def _absorb(self) -> None:
        while self._returned:
            self._free.append(self._returned.popleft())
        while len(self._free) > self.max_idle:  # keep the most recently used
            self._free.pop(0)

    def _acquire(self, B: int, L: int) -> Workspace:
        with self._pooled() as free:
            for i in range(len(free) - 1, -1, -1):
                if free[i][0] == (B, L):
                    return free.pop(i)[1]
        w = self.w  # a new workspace, allocated outside the lock
        slots = _round_up(L + 1)
        kv = torch.zeros(
            (len(w.layers), 2, B, w.n_head, slots, w.d_head), dtype=self.dtype, device=self.device
        )
        key_pos = torch.zeros(B, slots, dtype=torch.long, device=self.device)
        slot_tok = torch.full((B, L + 1), -1, dtype=torch.long, device=self.device)
        ws = Workspace(kv, key_pos, slot_tok, self.tables(L))
        if w.head is not None:
            c = w.head.config
            shape = (c.n_layer, 2, B, c.n_head, slots, c.d_head)
            ws.hkv = torch.zeros(shape, dtype=self.dtype, device=self.device)
            ws.htables = self.head_tables(L)
        return ws

    def _release(self, B: int, L: int, ws: Workspace) -> None:
        """A session's finalizer: give its workspace back (any thread, any time)."""
        self._returned.append(((B, L), ws))
        if self._owner == threading.get_ident():
            return  # this thread's ``_pooled`` block (up the stack) pools it
        if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return  # freeing a workspace (its graphs) now would break the capture: next time
        with self._pooled():
            pass


class EngineSession:
    """One batch's KV cache (a workspace borrowed from the engine). ``cache_bytes``: its size."""

    supports_tree = True  # token trees: node rows in the same forward (see engine_attention)

    rows_computed: int  # content rows computed after the prompt (widest row of each call)

    def __init__(self, engine: XLNetEngine, batch: Batch):
        self.engine = engine
        self.vocab_size = engine.vocab_size
        B, L = batch.tokens.shape
        self.ws = ws = engine._acquire(B, L)
        weakref.finalize(self, engine._release, B, L, ws)
        self.kv = ws.kv
        # The batch's tensors live in the workspace, so that a round graph captured in an
        # earlier session of this shape reads this session's values (``round_graphs``).
        if ws.batch is None:
            ws.batch = Batch(*(t.clone() for t in astuple_batch(batch)))
            ws.pos_of_rank = batch.pos_of_rank
            ws.prompt_tok = torch.full_like(batch.tokens, -1)
            ws.errors = torch.zeros(len(SYNC_FREE_ERRORS), dtype=torch.bool, device=engine.device)
            ws.encode_rows = torch.ones(B, dtype=torch.bool, device=engine.device)
        else:
            for dst, src in zip(astuple_batch(ws.batch), astuple_batch(batch)):
                dst.copy_(src)
            ws.pos_of_rank.copy_(batch.pos_of_rank)
            ws.errors.zero_()
        self.batch, self.pos_of_rank = ws.batch, ws.pos_of_rank  # [B, L]
        # Errors found on the device in sync-free calls, raised at the caller's next sync.
        self.errors = ws.errors
        # Captured sampler rounds of this shape, kept with the buffers they read and write.
        self.round_graphs = ws.rounds
        ws.key_pos[:, :L] = self.pos_of_rank
        ws.slot_tok.fill_(-1)
        self.calls = 0
        self.rows_computed = 0
        self.max_rows: int | None = None  # set by sync_free(): calls run without host syncs
        self._encode_prompt()

    @property
    def cache_bytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    @contextlib.contextmanager
    def sync_free(self, max_rows: int):
        """Calls inside never sync with the host and use fixed shapes, so a whole sampler round
        can be captured as one CUDA graph. The caller promises that no call needs more than
        ``max_rows`` new content rows (and no draft call reads more than ``max_rows`` tokens);
        a broken promise, or a broken protocol rule, sets ``errors`` on the device (see
        ``raise_errors``) instead of raising."""
        old, self.max_rows = self.max_rows, int(max_rows)
        try:
            yield self
        finally:
            self.max_rows = old

    def raise_errors(self, flags: list[bool]) -> None:
        """Raise the first error among host copies of ``errors`` (then clear them)."""
        self.errors.zero_()
        for bad, msg in zip(flags, SYNC_FREE_ERRORS):
            if bad:
                raise ValueError(msg)

    @torch.no_grad()
    def refill(self, rows: torch.Tensor, batch: Batch) -> None:
        """Rows [R] take the R sequences of ``batch`` (``Session.refill``): their inputs are
        written into the workspace, every cached state of theirs is forgotten, and their new
        prompts are encoded (the same kept graph as at the session's start, for these rows)."""
        ws, L = self.ws, self.batch.tokens.shape[1]
        rows, batch = rows.to(self.kv.device), batch.to(self.kv.device)
        write_rows(self.batch, rows, batch)
        ws.pos_of_rank[rows] = batch.pos_of_rank
        ws.key_pos[rows, :L] = batch.pos_of_rank
        ws.slot_tok[rows] = -1  # no state of the old sequences is valid for the new ones
        ws.encode_rows.zero_()
        ws.encode_rows[rows] = True
        try:
            self._encode_prompt(batch.n_prompt)
        finally:
            ws.encode_rows.fill_(True)

    @torch.no_grad()
    def _encode_prompt(self, n_prompt: torch.Tensor | None = None) -> None:
        """Compute the prompt's states into the cache. Its rows are padded to a multiple of
        ALIGN, so a few shapes serve every prompt size; on CUDA the computation is replayed
        from a graph kept in the workspace (it reads the workspace's copy of the batch): eager,
        its few hundred launches cost about 4 ms a run on an H200, the run's largest fixed
        cost once sampler rounds are replayed (``evals/bench_phases.py``)."""
        b = self.batch
        L = b.tokens.shape[1]
        P = b.n_prompt if n_prompt is None else n_prompt  # of the rows encoded
        W = min(_round_up(int(P.max())), L)  # the session's one host sync
        if self.engine.graphs:
            run_in_place(self.ws, ("prompt", W), lambda: self._encode(W))
        else:
            self._encode(W)
        self.prompt_tok = self.ws.prompt_tok

    def _encode(self, W: int) -> None:
        """The prompt's first W ranks (the prompt and padding) through the target, in place,
        for the rows ``ws.encode_rows`` marks (every row but in a refill)."""
        b, ws = self.batch, self.ws
        B, L = b.tokens.shape
        P = b.n_prompt  # [B]
        r = torch.arange(W, device=P.device).expand(B, W)
        valid = (r < P[:, None]) & ws.encode_rows[:, None]
        pos = torch.gather(self.pos_of_rank, 1, r)
        tok = torch.gather(b.tokens, 1, pos)
        rows = Rows(
            tok=tok,
            pos=pos,
            lim=torch.where(valid, P[:, None], 1),
            slot=torch.where(valid, r, L),
            n_content=W,
        )
        x = forward_rows(self.engine.w, ws.tables, ws.kv, ws.key_pos, rows, _round_up(W))
        if self.engine.w.head is not None:
            write_head_keys(self.engine.w.head, ws, x, rows.slot)
        ws.slot_tok.scatter_(1, torch.where(valid, r, L), tok)
        ranks = torch.arange(L, device=P.device)
        ws.prompt_tok.copy_(torch.where(ranks < P[:, None], self._by_rank(b.tokens), -1))

    def _by_rank(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.gather(tokens, 1, self.pos_of_rank)  # [B, L] token at each rank

    @torch.no_grad()
    def logits(self, tokens, n, m, q_rank, q_ctx, tree: Tree | None = None) -> torch.Tensor:
        """[B, Q, V] float32 logits of the queries (see ``assd.model.Session``); a token
        ``tree``'s nodes are extra rows of the same forward, padded to a multiple of 8."""
        b = self.batch
        B, L = tokens.shape
        tokens = tokens.to(self.kv.device)
        by_rank = self._by_rank(tokens)
        tree_in = () if tree is None else _padded_tree(tree)

        # Valid cache prefix: ranks < v hold states computed from today's tokens.
        if self.engine.cache:
            v = (self.ws.slot_tok[:, :L] == by_rank).long().cumprod(1).sum(1)  # [B]
            prompt_changed = (v < b.n_prompt).any()  # prompt slots are never invalidated
        else:
            v = b.n_prompt
            prompt_changed = ((self.prompt_tok >= 0) & (self.prompt_tok != by_rank)).any()
        # Rows to compute: ranks v .. hi-1, hi = everything committed and every needed context
        # (a query reading a tree node needs the main line below the node's path only).
        reads = torch.zeros_like(q_rank, dtype=torch.bool) if tree is None else tree.q_node >= 0
        need = [n[:, None], torch.where((q_rank >= 0) & ~reads, q_ctx, 0)]
        if tree is not None:  # nodes off the main line read it below their rank
            need.append(torch.where((tree.rank >= 0) & (tree.parent == -1), tree.rank, 0))
        hi = torch.minimum(torch.cat(need, 1).amax(1), b.length)
        checks = []
        if self.engine.check:
            # A query reading a node is checked against the tree's rules, not the main line's.
            checks = query_violations(b, n, m, q_rank, torch.where(reads, n[:, None], q_ctx))
            if tree is not None:
                checks += tree_violations(b, n, m, q_rank, q_ctx, tree)
        if self.max_rows is not None:  # sync-free: fixed shapes, errors flagged on the device
            W, span = self.max_rows, self.kv.shape[-2]
            errs = [(hi - v > W).any(), prompt_changed, *checks[: len(QUERY_RULES)]]
            self.errors[: len(errs)] |= torch.stack(errs)
            if len(checks) > len(QUERY_RULES):  # the tree's rules, at the end of the flags
                self.errors[-len(TREE_RULES) :] |= torch.stack(checks[len(QUERY_RULES) :])
            call = Step(tokens, v, hi, q_rank, q_ctx, *tree_in)
            return step(self.engine.w, self.ws, call, W, span)
        flags = [(hi - v).clamp(min=0).max(), hi.max(), prompt_changed, *checks]
        W, S, *errs = torch.stack(flags).tolist()  # the call's one host sync
        for bad, msg in zip(errs, (PROMPT_CHANGED,) + QUERY_RULES + TREE_RULES):
            if bad:
                raise ValueError(msg)
        self.calls += 1
        self.rows_computed += W

        Q = q_rank.shape[1] + (0 if tree is None else tree_in[0].shape[1])
        static = self.engine.static_shapes and bucket(W) is not None
        static = static and bucket(W) + Q <= MAX_GRAPH_ROWS
        if static:
            W, span = bucket(W), self.kv.shape[-2]  # fixed shapes: padded rows, every slot
        else:
            span = _round_up(max(S, 1))
        call = Step(tokens, v, hi, q_rank, q_ctx, *tree_in)
        logits = run_step(self.engine.w, self.ws, call, W, span, static and self.engine.graphs)
        if not self.engine.reuse_proposals:  # ablation: forget proposal states (ranks >= n)
            ranks = torch.arange(L, device=n.device)
            self.ws.slot_tok[:, :L].masked_fill_(ranks >= n[:, None], -1)
        return logits

    @torch.no_grad()
    def draft_logits(self, tokens, q_rank, q_ctx, q_feat) -> torch.Tensor:
        """[B, Q, V] float32 draft-head logits (see ``assd.model.Session.draft_logits``).

        Ranks < q_feat come from the cached head keys of the target's states (they must be
        valid for today's tokens); ranks q_feat .. q_ctx-1 are read as tokens, computed here.
        """
        head, ws, b = self.engine.w.head, self.ws, self.batch
        if head is None:
            raise ValueError("this engine has no draft head (load a model that ships one)")
        B, L = tokens.shape
        tokens = tokens.to(self.kv.device)
        valid_q = q_rank >= 0
        f_lo = torch.where(valid_q, q_feat, L).amin(1).clamp(max=L)  # [B] first token-read rank
        width = torch.where(valid_q, q_ctx - f_lo[:, None], 0).amax()
        checks = []  # the protocol checks, in DRAFT_RULES order (only with engine.check)
        if self.engine.check:
            by_rank = self._by_rank(tokens)
            v = (ws.slot_tok[:, :L] == by_rank).long().cumprod(1).sum(1)  # valid target states
            checks = [
                (valid_q & (q_feat > v[:, None])).any(),
                (valid_q & ((q_feat > q_ctx) | (q_ctx > q_rank))).any(),
                (valid_q & (q_feat < b.n_prompt[:, None])).any(),
                (valid_q & (q_rank >= b.length[:, None])).any(),
            ]
        if self.max_rows is not None:  # sync-free: fixed shapes, errors flagged on the device
            W, span = self.max_rows, self.kv.shape[-2]
            self.errors[0] |= width > W
            if checks:
                first = 2 + len(QUERY_RULES)  # see SYNC_FREE_ERRORS
                self.errors[first : first + len(checks)] |= torch.stack(checks)
        else:
            S = torch.where(valid_q, q_feat, 0).amax()
            W, S, any_q, *errs = torch.stack([width, S, valid_q.any(), *checks]).tolist()
            for bad, msg in zip(errs, DRAFT_RULES):  # (that was the call's one host sync)
                if bad:
                    raise ValueError(msg)
            if not any_q:  # padding queries only (drafting stopped, e.g. ASSD(stop_below=)):
                return torch.zeros(B, q_rank.shape[1], head.config.vocab_size, device=tokens.device)
            span = _round_up(max(S, 1))
        t_rank = f_lo[:, None] + torch.arange(W, device=tokens.device)  # [B, W] token-read ranks
        t_pos = torch.gather(self.pos_of_rank, 1, t_rank.clamp(max=L - 1))
        t_tok = torch.gather(tokens, 1, t_pos)  # the tokens at those ranks
        t_keys = head.keys(
            head.token_inputs(torch.nn.functional.embedding(t_tok, self.engine.w.emb))
        )
        keys = [
            (torch.cat([hkv_l[0][:, :, :span], k], 2), torch.cat([hkv_l[1][:, :, :span], v_], 2))
            for hkv_l, (k, v_) in zip(ws.hkv, t_keys)
        ]
        slots = torch.arange(span, device=tokens.device)
        see_state = slots[None, None, :] < q_feat[:, :, None]  # [B, Q, span]
        tr = t_rank[:, None, :]
        see_token = (tr >= q_feat[:, :, None]) & (tr < q_ctx[:, :, None])  # [B, Q, W]
        visible = torch.cat([see_state, see_token], 2) | ~valid_q[:, :, None]
        key_pos = torch.cat([ws.key_pos[:, :span], t_pos], 1)
        q_pos = torch.gather(self.pos_of_rank, 1, q_rank.clamp(min=0))
        w = self.engine.w
        return head.attend(q_pos, keys, key_pos, visible, ws.htables, w.emb, w.emb_t)


def astuple_batch(b: Batch) -> tuple[torch.Tensor, ...]:
    return (b.tokens, b.sigma, b.n_prompt, b.length)


def _padded_tree(tree: Tree) -> tuple[torch.Tensor, ...]:
    """(tok, rank, parent, q_node) with the nodes padded to a multiple of ALIGN (padding nodes
    have rank -1): the attention's key count stays aligned for the fused kernels."""
    B, N = tree.tok.shape
    pad = _round_up(N) - N
    if pad == 0:
        return tree.tok, tree.rank, tree.parent, tree.q_node
    fill = torch.full((B, pad), -1, dtype=torch.long, device=tree.tok.device)
    return (
        torch.cat([tree.tok, fill.clamp(min=0)], 1),
        torch.cat([tree.rank, fill], 1),
        torch.cat([tree.parent, fill], 1),
        tree.q_node,
    )


PROMPT_CHANGED = "the prompt tokens changed: open a new session for a new prompt"
DRAFT_RULES = (
    "draft query reads target states that are not valid for these tokens (q_feat too high): "
    "q_feat may not exceed the ranks the target has computed with the current tokens",
    "draft query must have q_feat <= q_ctx <= q_rank",
    "draft query must read the whole prompt through states (q_feat >= n_prompt)",
    "draft query rank lies in the padding (q_rank >= length)",
)

SYNC_FREE_ERRORS = (
    "a call needed more new rows than the sampler's bound (sync_free(max_rows)): a sampler bug",
    PROMPT_CHANGED,
    *QUERY_RULES,
    *DRAFT_RULES,
    *TREE_RULES,
)
