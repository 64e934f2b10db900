"""Toy AS-ARMs: tiny vocabularies and lengths, exact joints by enumeration.

The conditional of target position i given a visible set is a fixed random function (a small
seeded MLP) of (i, the visible tokens, which positions are hidden). It is deliberately *not*
consistent across orders, as a real AS-ARM need not be; the samplers must still reproduce the
chain-rule joint of the order they are given.
"""

from __future__ import annotations

import torch

from ..model import Batch, check_queries, logits_by_paths, write_rows


class ToyASARM:
    """A seeded toy AS-ARM over sequences of length <= ``length`` and ``vocab_size`` tokens."""

    mask_id: int | None = None  # no mask token: every id is an ordinary token

    def __init__(
        self,
        vocab_size: int,
        length: int,
        seed: int = 0,
        hidden: int = 16,
        scale: float = 2.0,
        forbidden_ids: tuple[int, ...] = (),
        needs_prompt: bool = False,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        draft_head: bool = False,
    ):
        g = torch.Generator().manual_seed(seed)
        V, L = vocab_size, length
        d_in = L * (V + 1) + L

        def w(*shape):
            return (torch.randn(*shape, generator=g, dtype=dtype) * scale).to(device)

        self.w1, self.b1 = w(d_in, hidden) / d_in**0.5 * 2, w(hidden) / 2
        self.w2, self.b2 = w(L, hidden, V) / hidden**0.5, w(L, V) / 2
        self.vocab_size, self.max_length = V, L
        self.forbidden_ids = tuple(forbidden_ids)
        self.needs_prompt = needs_prompt
        self.calls = 0  # network calls served (for tests)
        self.draft_calls = 0
        self.has_draft_head = draft_head  # a toy stand-in: any function of what a head may read

    @property
    def device(self) -> torch.device:
        return self.w1.device

    def open(self, batch: Batch) -> ToySession:
        return ToySession(self, batch)

    def conditional_logits(self, tokens: torch.Tensor, visible: torch.Tensor, target: torch.Tensor):
        """tokens [N, L], visible [N, L] bool, target [N] positions -> logits [N, V]."""
        N, L = tokens.shape
        V, Lm = self.vocab_size, self.max_length
        code = torch.where(visible, tokens.clamp(0, V - 1), V)  # hidden -> V
        pad = torch.full((N, Lm - L), V, dtype=code.dtype, device=code.device)
        x = (
            torch.nn.functional.one_hot(torch.cat([code, pad], 1), V + 1)
            .flatten(1)
            .to(self.w1.dtype)
        )
        t = torch.nn.functional.one_hot(target, Lm).to(self.w1.dtype)
        h = torch.tanh(torch.cat([x, t], 1) @ self.w1 + self.b1)  # [N, H]
        return torch.einsum("nh,nhv->nv", h, self.w2[target]) + self.b2[target]


class ToySession:
    vocab_size: int

    def __init__(self, model: ToyASARM, batch: Batch):
        self.model, self.batch = model, batch
        self.vocab_size = model.vocab_size

    supports_tree = True  # by plain calls, one per query that reads a node (the ground truth)

    def refill(self, rows, batch) -> None:
        write_rows(self.batch, rows, batch)  # every call recomputes from the batch: nothing else

    def logits(self, tokens, n, m, q_rank, q_ctx, tree=None):
        if tree is not None:
            return logits_by_paths(self.logits, self.batch, tokens, n, m, q_rank, q_ctx, tree)
        check_queries(self.batch, n, m, q_rank, q_ctx)
        self.model.calls += 1
        return self.logits_unchecked(tokens, q_rank, q_ctx)

    def logits_unchecked(self, tokens, q_rank, q_ctx):
        B, Q = q_rank.shape
        sigma = self.batch.sigma
        valid = q_rank >= 0
        target = torch.gather(self.batch.pos_of_rank, 1, q_rank.clamp(min=0))  # [B, Q]
        visible = sigma[:, None, :] < q_ctx[:, :, None]  # [B, Q, L]
        flat = self.model.conditional_logits(
            tokens[:, None, :].expand(B, Q, -1).reshape(B * Q, -1),
            visible.reshape(B * Q, -1),
            target.reshape(-1),
        )
        return torch.where(
            valid[:, :, None], flat.view(B, Q, -1), torch.zeros_like(flat.view(B, Q, -1))
        )

    def draft_logits(self, tokens, q_rank, q_ctx, q_feat):
        """A toy draft head: the conditional given ranks < q_ctx, bent by a fixed function of
        (q_feat, q_rank), so that it differs from the model (and with q_feat) like a real head."""
        if not self.model.has_draft_head:
            raise ValueError("this toy model has no draft head (ToyASARM(..., draft_head=True))")
        self.model.draft_calls += 1
        valid = q_rank >= 0
        base = self.logits_unchecked(tokens, q_rank, q_ctx)
        V = base.shape[-1]
        wobble = torch.cos(
            1.3 * q_feat[:, :, None].to(base.dtype)
            + 0.7 * q_rank[:, :, None].to(base.dtype)
            + torch.arange(V, dtype=base.dtype, device=base.device)
        )
        return torch.where(valid[:, :, None], base + 0.8 * wobble, torch.zeros_like(base))
