"""Reusable per-shape workspaces (KV cache buffers) and CUDA-graph replay of a cached call.

A cached call is a few small matrix products per layer: on a GPU its time is kernel-launch
overhead. Replaying a captured CUDA graph removes it. Graphs need fixed shapes and addresses,
so calls are padded to a few shapes (content rows rounded up to a power of two, attention
over every slot) and every buffer a graph touches lives in a :class:`Workspace` that outlives
a session: the next session of the same batch shape reuses it and its graphs. A workspace
returns to its engine's pool when its session is garbage collected.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from ..capture import CAPTURE_LOCK
from .engine_attention import Rows, forward_rows, lm_head
from .engine_weights import XLNetWeights

BUCKETS = (1, 2, 4, 8, 16, 32)  # content-row counts with a graph; more rows run eagerly
MAX_GRAPH_ROWS = 160  # calls with more rows (content + queries) run eagerly


@dataclass
class Workspace:
    """Buffers of one batch shape [B, L]: KV cache, slot positions and tokens, graphs."""

    kv: torch.Tensor  # [n_layer, 2, B, H, slots, D]  keys/values of the token at each rank
    key_pos: torch.Tensor  # [B, slots]  position of each slot's token (= pos_of_rank, padded)
    slot_tok: torch.Tensor  # [B, L + 1]  token each slot was computed with (-1 none; L: trash)
    tables: list[torch.Tensor]
    graphs: dict = field(default_factory=dict)  # (W, Q) -> (graph, static inputs, logits)
    pool: object = None
    hkv: torch.Tensor | None = None  # [head layers, 2, B, Hh, slots, Dh] draft-head keys/values
    htables: list[torch.Tensor] | None = None  # the draft head's relative-position keys
    # A session's own inputs, copied here so that graphs captured in one session (the
    # samplers' whole rounds, kept in ``rounds``) read the next session's values:
    batch: object = None  # assd.Batch of [B, L] / [B] tensors, refilled in place
    pos_of_rank: torch.Tensor | None = None  # [B, L]
    prompt_tok: torch.Tensor | None = None  # [B, L] prompt token at each rank, -1 elsewhere
    errors: torch.Tensor | None = None  # [n] device flags of sync-free calls
    encode_rows: torch.Tensor | None = None  # [B] bool: rows the prompt encoding writes
    rounds: dict = field(default_factory=dict)  # sampler round graphs (assd.samplers.graphs)


@dataclass
class Step:
    """One call's inputs. tokens [B, L]; v, hi [B]: compute content rows of ranks v .. hi-1;
    q_rank, q_ctx [B, Q]: the queries (-1 = padding); t_tok, t_rank, t_parent [B, N] and
    q_node [B, Q]: a token tree's nodes and the node each query reads (``assd.model.Tree``;
    None without a tree)."""

    tokens: torch.Tensor
    v: torch.Tensor
    hi: torch.Tensor
    q_rank: torch.Tensor
    q_ctx: torch.Tensor
    t_tok: torch.Tensor | None = None
    t_rank: torch.Tensor | None = None
    t_parent: torch.Tensor | None = None
    q_node: torch.Tensor | None = None

    def clone(self) -> Step:
        return Step(*(None if t is None else t.clone() for t in vars(self).values()))

    @property
    def n_nodes(self) -> int:
        return 0 if self.t_tok is None else self.t_tok.shape[1]


def bucket(w: int) -> int | None:
    """Smallest graph size >= w content rows (None: too many, run eagerly)."""
    return next((b for b in BUCKETS if b >= w), None)


def step(weights: XLNetWeights, ws: Workspace, s: Step, W: int, span: int) -> torch.Tensor:
    """Compute content rows v..hi-1 (padded to W) and the queries; update the cache's records.

    Returns logits [B, Q, V] float32. Only tensor ops on fixed shapes: capturable as a graph.
    """
    B, L = s.tokens.shape
    trash = L  # the slot (and slot_tok column) padding rows write to; never visible
    pos_of_rank = ws.key_pos[:, :L]
    r = s.v[:, None] + torch.arange(W, device=s.v.device)  # [B, W] content rows (ranks)
    ok = r < s.hi[:, None]
    pos_c = torch.gather(pos_of_rank, 1, r.clamp(max=L - 1))
    tok_c = torch.gather(s.tokens, 1, pos_c)
    valid_q = s.q_rank >= 0
    pos_q = torch.gather(pos_of_rank, 1, s.q_rank.clamp(min=0))
    lim_q = torch.where(valid_q, s.q_ctx, 1)
    N = s.n_nodes
    tok_t = pos_t = lim_t = see = None
    if N:  # token-tree nodes: content rows of this call only, each seeing its own path
        path, base = tree_paths(s.t_rank, s.t_parent)  # [B, N, N], [B, N]
        ok_t = s.t_rank >= 0
        tok_t = torch.where(ok_t, s.t_tok, 0)
        pos_t = torch.gather(pos_of_rank, 1, s.t_rank.clamp(min=0))
        lim_t = torch.where(ok_t, base, 1)
        reads = valid_q & (s.q_node >= 0)
        node = s.q_node.clamp(min=0)
        lim_q = torch.where(reads, torch.gather(base, 1, node), lim_q)
        see_q = torch.gather(path, 1, node[:, :, None].expand(-1, -1, N)) & reads[:, :, None]
        see_c = torch.zeros(B, W, N, dtype=torch.bool, device=path.device)
        see = torch.cat([see_c, path, see_q], 1)  # [B, W + N + Q, N]
    rows = Rows(
        tok=torch.cat([t for t in (tok_c, tok_t, torch.zeros_like(s.q_rank)) if t is not None], 1),
        pos=torch.cat([t for t in (pos_c, pos_t, pos_q) if t is not None], 1),
        lim=torch.cat([t for t in (torch.where(ok, r + 1, 1), lim_t, lim_q) if t is not None], 1),
        slot=torch.where(ok, r, trash),
        n_content=W,
        n_nodes=N,
        see=see,
    )
    x = forward_rows(weights, ws.tables, ws.kv, ws.key_pos, rows, span)
    if weights.head is not None:
        write_head_keys(weights.head, ws, x[:, :W], rows.slot)
    logits = lm_head(weights, x[:, W + N :])
    # Slots >= hi may depend on tokens that just changed: forget them; record what was computed.
    ranks = torch.arange(L, device=s.v.device)
    ws.slot_tok[:, :L].masked_fill_(ranks >= s.hi[:, None], -1)
    ws.slot_tok.scatter_(1, rows.slot, torch.where(ok, tok_c, -1))
    return logits


def tree_paths(rank: torch.Tensor, parent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A token tree's paths: path [B, N, N] bool, node j is on node i's path (an ancestor of i
    or i itself; valid nodes only), and base [B, N], the rank where i's path leaves the main
    line (i sees the main line's ranks < base). Fixed shapes, no host sync: doubling the
    reach ceil(log2 N) times covers every depth."""
    B, N = rank.shape
    ok = rank >= 0
    own = torch.eye(N, dtype=torch.bool, device=rank.device)[None] & ok[:, :, None]
    idx = torch.arange(N, device=rank.device)
    up = (parent[:, :, None] == idx[None, None, :]) & ok[:, :, None]  # [B, N, N] i's parent
    path = own | up
    for _ in range(max(N - 1, 1).bit_length()):
        path = path | (torch.bmm(path.float(), path.float()) > 0)
    path &= ok[:, None, :]
    base = torch.where(path, rank[:, None, :], torch.iinfo(rank.dtype).max).amin(-1)
    return path, torch.where(ok, base, 0)


def write_head_keys(head, ws: Workspace, content: torch.Tensor, slot: torch.Tensor) -> None:
    """Cache the draft head's keys/values of freshly computed content rows [B, W, d] at their
    slots [B, W] (padding rows write to the trash slot): the head reads committed ranks
    through the target's final states without recomputing them."""
    b_idx = torch.arange(slot.shape[0], device=slot.device)[:, None]
    for hkv_l, (k, v) in zip(ws.hkv, head.keys(head.feature_inputs(content))):
        hkv_l[:, b_idx, :, slot] = torch.stack([k.transpose(1, 2), v.transpose(1, 2)], 2)


def run_step(weights: XLNetWeights, ws: Workspace, s: Step, W: int, span: int, graphs: bool):
    """:func:`step`, replayed from (or captured into) a CUDA graph when ``graphs``."""
    if not graphs:
        return step(weights, ws, s, W, span)
    key = (W, s.q_rank.shape[1], s.n_nodes)
    if key not in ws.graphs:
        return _capture(weights, ws, s, W, span, key)
    if ws.graphs[key] is None:  # capture failed once: eager
        return step(weights, ws, s, W, span)
    graph, static, out = ws.graphs[key]
    for name, t in vars(s).items():
        if t is not None:
            getattr(static, name).copy_(t)
    graph.replay()
    return out.clone()


def _capture(weights: XLNetWeights, ws: Workspace, s: Step, W: int, span: int, key):
    """Run this call eagerly on a side stream (its result is returned), then capture it.

    Running the step twice with the same inputs is harmless: it writes the same keys/values.
    Thread-safe: captures are serialized, and a capture in "thread_local" mode lets other
    threads' sessions keep running (and syncing) meanwhile.
    """
    with CAPTURE_LOCK:  # one capture at a time per process (assd.capture)
        return _capture_locked(weights, ws, s, W, span, key)


def _capture_locked(weights: XLNetWeights, ws: Workspace, s: Step, W: int, span: int, key):
    static = s.clone()
    result, graph, out = _run_then_capture(ws, lambda: step(weights, ws, static, W, span))
    ws.graphs[key] = None if graph is None else (graph, static, out)
    return result


def _run_then_capture(ws: Workspace, fn):
    """Run ``fn`` eagerly on a side stream (lazy allocations, library handles; its result is
    the call's answer), then capture it into a CUDA graph in ``ws``'s memory pool.
    -> (eager result, graph or None if the capture failed, the captured call's output)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        result = fn()
    torch.cuda.current_stream().wait_stream(side)
    if ws.pool is None:
        ws.pool = torch.cuda.graph_pool_handle()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, pool=ws.pool, capture_error_mode="thread_local"):
            out = fn()
    except RuntimeError as e:  # e.g. an op that cannot be captured on this build: stay eager
        warnings.warn(f"CUDA graph capture failed, running eagerly: {e}", stacklevel=5)
        return result, None, None
    return result, graph, out


def run_in_place(ws: Workspace, key, fn) -> None:
    """``fn()``, a computation that reads and writes only ``ws``'s buffers, replayed from a
    CUDA graph kept in ``ws.graphs[key]`` (captured on first use; eager if capture fails)."""
    entry = ws.graphs.get(key, False)
    if entry is None:  # capture failed once: eager
        fn()
    elif entry is not False:
        entry.replay()
    else:
        with CAPTURE_LOCK:  # the eager run does this call's work; the capture only records it
            ws.graphs[key] = _run_then_capture(ws, fn)[1]
