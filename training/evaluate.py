"""Validation loss with a fixed protocol, and held-out ASSD infills for model cards.

The validation figure is the mean NLL per masked token (nats) under the training objective, on
the first ``eval_chunks`` validation chunks; chunk j gets masking rate
``min + (max - min) * (j + 0.5) / n`` (the final range, evenly covered) and an order seeded by
(seed, j). So it does not depend on the step, the batch size or the number of processes.

    python -m training.evaluate assd/pretrained/prose --val-data ../shared/data/text/wiki_valid.jsonl.xz
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from .fast_model import FastXLNet
from .objective import sample_orders, target_nll
from .schedule import n_masked_of
from .seeds import TAG_VALIDATION, mix_seed


@torch.no_grad()
def val_nll(
    model,
    val: torch.Tensor,
    idx: list[int],
    n_total: int,
    cfg,
    mask_id: int,
    device: torch.device | str,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """[2] (sum of NLL, number of targets) over ``val`` [N, L], whose rows have global indices
    ``idx`` among ``n_total`` chunks. ``model``: a FastXLNet (or a Hugging Face XLNet, wrapped
    here). Leaves the model in eval mode. Always token-weighted (mean NLL per masked token)."""
    inner = getattr(model, "module", model)  # under DDP
    if not isinstance(getattr(inner, "_orig_mod", inner), FastXLNet):  # torch.compile'd or not
        model = FastXLNet(model)
    model.eval()
    lo, hi = cfg.mask_min, cfg.mask_max
    tot = torch.zeros(2, device=device)
    L = val.shape[1]
    for s in range(0, len(val), cfg.batch_size):
        x, js = val[s : s + cfg.batch_size], idx[s : s + cfg.batch_size]
        orders = []
        for j in js:  # chunk j: rate at the j-th of n_total evenly spaced points, seed (seed, j)
            n_masked = n_masked_of(torch.tensor([lo + (hi - lo) * (j + 0.5) / n_total]), L)
            g = torch.Generator().manual_seed(mix_seed(cfg.seed, j, TAG_VALIDATION))
            orders.append(sample_orders(n_masked, L, cfg.order, g))
        sigma = torch.cat([o[0] for o in orders]).to(device)
        n_prompt = torch.cat([o[1] for o in orders]).to(device)
        with autocast():
            nll, _ = target_nll(model, x.to(device), sigma, n_prompt, cfg.objective, mask_id)
        tot += torch.stack([nll.sum(), torch.tensor(float(nll.numel()), device=nll.device)])
    return tot


def _span_infills(model, tokenizer, chunks: torch.Tensor, span: tuple[int, int], k: int, seed: int):
    """Infill one contiguous span [a, b) of each row with ASSD; returns (prompt, output, nfe, n)."""
    from assd import ASSD, make_batch, order_from_mask, sample
    from assd.backends import XLNetReference

    from .samples import show_masked

    B, L = chunks.shape
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[:, span[0] : span[1]] = True
    sigma, n_prompt = order_from_mask(mask)
    batch = make_batch(chunks.masked_fill(mask, tokenizer.mask_token_id), sigma, n_prompt)
    net = XLNetReference(model, forbidden_ids=tuple(tokenizer.all_special_ids), max_length=L)
    res = sample(net, batch, ASSD(k=k), torch.Generator().manual_seed(seed), trace=False)
    out = []
    for b, r in enumerate(res):
        prompt = show_masked(tokenizer, chunks[b].tolist(), mask[b].tolist())
        reference = tokenizer.decode(chunks[b, span[0] : span[1]].tolist())
        out.append((prompt, tokenizer.decode(r.tokens), reference, r.nfe, r.n_generated))
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse
    from dataclasses import replace

    from assd.loading import load as load_model

    from .config import TrainConfig
    from .data import pack, split_docs, tokenize
    from .samples import infill
    from .tokenizer import eod_id
    from .tokenizer import load as load_tokenizer

    p = argparse.ArgumentParser(description="Validation loss and held-out ASSD infills of a model.")
    p.add_argument("model", help="an exported model folder (weights + tokenizer)")
    p.add_argument(
        "--data", default=None, help="training data (held-out docs: every val_every_doc-th)"
    )
    p.add_argument("--val-data", default=None)
    p.add_argument("--val-every-doc", type=int, default=50)
    p.add_argument("--eval-chunks", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--sample-len", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    if (a.data is None) == (a.val_data is None):
        raise ValueError("give exactly one of --data (held-out documents) or --val-data")
    cfg = replace(
        TrainConfig(),
        data=a.data or a.val_data,
        val_data=a.val_data,
        val_every_doc=a.val_every_doc,
        batch_size=a.batch_size,
        seed=0,
    )
    tok = load_tokenizer(a.model)
    model = load_model(a.model, device=a.device, backend="reference").model.net  # int8 too
    _, val_docs = split_docs(cfg, 0, 1)
    val = pack(tokenize(tok, val_docs), eod_id(tok), a.seq_len)[: a.eval_chunks]
    tot = val_nll(model, val, list(range(len(val))), len(val), cfg, tok.mask_token_id, a.device)
    print(
        f"validation: {float(tot[0] / tot[1]):.4f} nats per masked token "
        f"({int(tot[1])} targets, {len(val)} chunks x {a.seq_len} tokens)"
    )
    rows = val[:: max(1, len(val) // a.samples)][: a.samples, : a.sample_len]
    L = rows.shape[1]
    print("\n## contiguous span (middle third), ASSD k=5\n")
    for pr, out, ref, nfe, n in _span_infills(model, tok, rows, (L // 3, 2 * L // 3), 5, a.seed):
        print(
            f"- {n} tokens in {nfe} network calls\n  prompt: {pr!r}\n  output: {out!r}\n  reference span: {ref!r}\n"
        )
    print("\n## 50% random positions, ASSD k=5\n")
    for s in infill(model, tok, rows, 0.5, k=5, seed=a.seed):
        print(
            f"- {s.generated} tokens in {s.nfe} network calls\n  prompt: {s.prompt!r}\n  output: {s.output!r}\n"
        )


if __name__ == "__main__":
    main()
