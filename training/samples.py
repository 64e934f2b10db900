"""ASSD infilling samples from the model being trained (logged at intervals, and for model cards)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from assd import ASSD, make_batch, random_order, sample
from assd.backends import XLNetReference


@dataclass
class Infill:
    prompt: str  # the text with each masked span shown as ``[___]``
    output: str  # the completed text
    original: str  # the held-out text
    nfe: int  # network calls
    generated: int  # tokens generated


def show_masked(tokenizer, ids: list[int], mask: list[bool], hole: str = "[___]") -> str:
    """Decode ``ids`` with every run of masked positions replaced by ``hole``."""
    out, run = [], []
    for t, m in zip(ids, mask):
        if m:
            if run:
                out.append(tokenizer.decode(run))
                run = []
            if not out or out[-1] != hole:
                out.append(hole)
        else:
            run.append(t)
    if run:
        out.append(tokenizer.decode(run))
    return "".join(out)


@torch.no_grad()
def infill(
    model,
    tokenizer,
    chunks: torch.Tensor,
    rate: float = 0.5,
    k: int = 5,
    seed: int = 0,
    temperature: float = 1.0,
) -> list[Infill]:
    """Mask a fraction ``rate`` of each row of ``chunks`` [B, L] at random and infill with ASSD.

    Leaves the model in eval mode (the caller switches back to train mode).
    """
    g = torch.Generator().manual_seed(seed)
    B, L = chunks.shape
    sig, masks = zip(*(random_order(L, rate, g) for _ in range(B)))
    sigma, mask = torch.stack(sig), torch.stack(masks)
    n_prompt = (~mask).sum(-1)
    mask_id = tokenizer.mask_token_id
    tokens = chunks.masked_fill(mask, mask_id if mask_id is not None else 0)
    batch = make_batch(tokens, sigma, n_prompt)
    net = XLNetReference(model, forbidden_ids=tuple(tokenizer.all_special_ids), max_length=L)
    results = sample(net, batch, ASSD(k=k, temperature=temperature), g, trace=False)
    return [
        Infill(
            prompt=show_masked(tokenizer, chunks[b].tolist(), mask[b].tolist()),
            output=tokenizer.decode(r.tokens),
            original=tokenizer.decode(chunks[b].tolist()),
            nfe=r.nfe,
            generated=r.n_generated,
        )
        for b, r in enumerate(results)
    ]
