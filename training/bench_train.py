"""Training throughput of a preset on this machine: tokens/s and model FLOP utilisation.

    python -m training.bench_train --preset base --seq-len 512 --batch-size 64 --steps 20

Times the real training step (``train.train_step``: the fast forward, the joint objective,
bf16 autocast on CUDA, AdamW, clipping) on random tokens with the masking rates of a run past
its warm-up, for each variant named in ``--variants`` (``full``: every position's query row,
as before; ``packed``: the targets' query rows only; ``packed-compile``: the same through
``torch.compile``). MFU is given two ways: the 6 N rule (N = parameters, every input token),
and the FLOPs the two-stream forward really does (content and query rows, attention and the
relative-position term), against ``--peak-tflops`` (the H200's measured bf16 matrix rate).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from .fast_model import FastXLNet, query_rows
from .model import PRESETS, build_model, freeze_unused, n_params
from .objective import sample_orders, target_nll, weighted_loss
from .schedule import MaskSchedule, n_masked_of

MASK_ID = 2  # the <mask> id of training.tokenizer.SPECIAL_TOKENS


def step_flops(cfg, B: int, L: int, n_query: float, vocab: int, n_target: float) -> float:
    """Forward + backward FLOPs (x3 of the forward) of one step: R = L + n_query rows per row.

    Per layer and sequence: projections q (R rows), k, v (L), o and the FFN (R); attention
    scores and values (R x L); the relative term: its [2L-1] projections and R x (2L-1) scores.
    """
    d, f, Lyr = cfg.d_model, cfg.d_inner, cfg.n_layer
    R = L + n_query
    dense = 2 * (R * d * d + 2 * L * d * d + R * d * d + 2 * R * d * f)
    attn = 2 * 2 * R * L * d + 2 * R * (2 * L - 1) * d + 2 * (2 * L - 1) * d * d
    head = 2 * n_target * d * vocab
    return 3.0 * B * (Lyr * (dense + attn) + head)


def run_variant(name, preset, args, device, dtype):
    torch.manual_seed(0)
    net = build_model(_Vocab(args.vocab), preset).to(device)
    freeze_unused(net)
    B, L = args.batch_size, args.seq_len
    fixed = int(n_masked_of(torch.tensor([args.mask_max]), L))  # as train.py does
    model = FastXLNet(net, pack_queries=name != "full", min_query_rows=fixed)
    if name.endswith("compile"):
        model = torch.compile(model, dynamic=False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    sched = MaskSchedule(args.mask_min, args.mask_min, args.mask_max, 0)
    g = torch.Generator().manual_seed(1)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    n_query = n_target = 0.0

    def step():
        nonlocal n_query, n_target
        x = torch.randint(6, args.vocab, (B, L), generator=g)
        n = n_masked_of(sched.sample(1, B, g), L)
        sigma, n_prompt = sample_orders(n, L, "left-to-right", g)
        x, sigma, n_prompt = x.to(device), sigma.to(device), n_prompt.to(device)
        with autocast:
            nll, rows = target_nll(model, x, sigma, n_prompt, "joint", MASK_ID)
            total, weight = weighted_loss(nll, rows, B, "sequence")
            loss = total / weight
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        n_target += int(n.sum()) / B
        n_query += (
            L if name == "full" else query_rows(sigma >= n_prompt[:, None], fixed)[0].shape[1]
        )

    for _ in range(args.warmup):
        step()
    n_query = n_target = 0.0
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / args.steps
    tok_s = B * L / dt
    params = n_params(net)
    flops = step_flops(net.config, B, L, n_query / args.steps, args.vocab, n_target / args.steps)
    peak = args.peak_tflops * 1e12
    return {
        "variant": name,
        "ms_per_step": 1e3 * dt,
        "tokens_per_s": tok_s,
        "params": params,
        "mfu_6n": 6 * params * tok_s / peak,
        "mfu_counted": flops / dt / peak,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None,
    }


class _Vocab:
    """The few tokenizer facts ``build_model`` reads."""

    def __init__(self, n):
        self.n = n
        self.pad_token_id, self.cls_token_id, self.sep_token_id = 1, 3, 4

    def __len__(self):
        return self.n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="base", choices=sorted(PRESETS))
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--mask-min", type=float, default=0.05)
    p.add_argument("--mask-max", type=float, default=0.25)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--variants", default="full,packed,packed-compile")
    p.add_argument("--peak-tflops", type=float, default=790.0)
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.set_float32_matmul_precision("high")
    rows = []
    for name in a.variants.split(","):
        r = run_variant(name, a.preset, a, device, dtype)
        rows.append(r)
        print(
            f"{name:16s} {r['ms_per_step']:8.1f} ms/step {r['tokens_per_s']:10.0f} tok/s "
            f"MFU 6N {100 * r['mfu_6n']:5.1f}%  counted {100 * r['mfu_counted']:5.1f}%  "
            f"peak mem {r['peak_mem_gb']}",
            flush=True,
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "device": str(device), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
