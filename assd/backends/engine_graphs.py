"""Reusable per-shape workspaces (KV cache buffers) and CUDA-graph replay of the engine's forward.

A cached call is a few small matrix products per layer: on a GPU its time is kernel-launch
overhead. Replaying a captured CUDA graph removes it. Graphs need fixed shapes and addresses,
so calls are padded to a few shapes (content rows rounded up to a power of two, attention
over every slot) and the buffers a graph reads live in a :class:`Workspace` that outlives a
session: the next session of the same batch shape reuses it and its graphs. A workspace
returns to its engine's pool when its session is garbage collected.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from .engine_attention import Rows, forward_rows, lm_head
from .engine_weights import XLNetWeights

BUCKETS = (1, 2, 4, 8, 16, 32)  # content-row counts with a graph; more rows run eagerly
MAX_GRAPH_ROWS = 160  # calls with more rows (content + queries) run eagerly


@dataclass
class Workspace:
    """Buffers of one batch shape: KV cache, slot positions, tables, captured graphs."""

    kv: torch.Tensor  # [n_layer, 2, B, H, slots, D]
    key_pos: torch.Tensor  # [B, slots]
    tables: list[torch.Tensor]
    graphs: dict = field(default_factory=dict)  # (W, I) -> (graph, static Rows, static logits)
    pool: object = None


def bucket(w: int) -> int | None:
    """Smallest graph size >= w content rows (None: too many, run eagerly)."""
    return next((b for b in BUCKETS if b >= w), None)


def run_rows(weights: XLNetWeights, ws: Workspace, rows: Rows, span: int, graphs: bool):
    """Logits [B, Q, V] of the query rows; replays (or captures) a CUDA graph when asked."""
    if not graphs:
        return lm_head(weights, forward_rows(weights, ws.tables, ws.kv, ws.key_pos, rows, span))
    key = (rows.n_content, rows.pos.shape[1])
    if key not in ws.graphs:
        return _capture(weights, ws, rows, span, key)
    if ws.graphs[key] is None:  # capture failed once: eager
        return run_rows(weights, ws, rows, span, graphs=False)
    graph, static, out = ws.graphs[key]
    for name in ("tok", "pos", "lim", "slot"):
        getattr(static, name).copy_(getattr(rows, name))
    graph.replay()
    return out.clone()


def _capture(weights: XLNetWeights, ws: Workspace, rows: Rows, span: int, key):
    """Run this call eagerly on a side stream (its result is returned), then capture it."""
    static = Rows(
        rows.tok.clone(), rows.pos.clone(), rows.lim.clone(), rows.slot.clone(), rows.n_content
    )

    def fwd():
        return lm_head(weights, forward_rows(weights, ws.tables, ws.kv, ws.key_pos, static, span))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        result = fwd()  # writes this call's keys/values: capturing below does not run anything
    torch.cuda.current_stream().wait_stream(side)
    if ws.pool is None:
        ws.pool = torch.cuda.graph_pool_handle()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, pool=ws.pool):
            out = fwd()
    except RuntimeError as e:  # e.g. an op that cannot be captured on this build: stay eager
        warnings.warn(f"CUDA graph capture failed, running eagerly: {e}", stacklevel=3)
        ws.graphs[key] = None
        return result
    ws.graphs[key] = (graph, static, out)
    return result
