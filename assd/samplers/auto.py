"""The library's fastest exact sampler for a model on its device (a measured choice).

Why a table and not a search: each entry below was chosen by ``evals/bench_speed.py`` on the
trained embedded models, side by side in one run per device (figures in the README). What
decides it is the ratio of a round's cost to a call's cost, which depends on the device:

- CUDA: a whole round replays as one CUDA graph, so extra query rows and draft-head steps are
  nearly free next to the call; the most tokens per target call wins.
- CPU: every computed row costs real FLOPs, rejected drafts are paid in full, and a round's
  Python overhead is a few calls' worth; the cheapest proposals win.
"""

from __future__ import annotations

import torch

from .speculative import ASSD


def fastest(model, *, temperature: float = 1.0, device: torch.device | str | None = None):
    """An exact sampler: the fastest this library knows for ``model`` on ``device`` (default:
    the model's). Models with a draft head draft with it; others use the model's own drafts."""
    dev = torch.device(device) if device is not None else model.device
    head = bool(getattr(model, "has_draft_head", False))
    if dev.type == "cuda":
        if head:
            return ASSD(k=5, draft="head", temperature=temperature)
        return ASSD(k=5, one_call=True, temperature=temperature)
    if head:
        return ASSD(k=3, draft="head", temperature=temperature)
    return ASSD(k=5, draft="bigram", bonus=True, temperature=temperature)
