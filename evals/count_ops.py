"""Kernels per round and per token of each sampler: the figure that bounds a replayed round.

Why. On a GPU at batch 1 a small model's round is bound by how many kernels it runs, not by
FLOPs: a replayed CUDA graph launches the same kernels without the Python overhead, and each
kernel costs a few microseconds however little it computes. Counting the tensor operations a
round dispatches (views excluded: they launch nothing) therefore predicts the ratio of round
times between samplers on any device, and it runs on the CPU in a minute or two. On an H200
the count predicted a draft-head round (k = 1) at 1.69x a sequential round; the replayed
graphs took 1.62x (evals/results/bench_speed/h200_round3/).

    python evals/count_ops.py --model prose --k 1,2,3 --out evals/results/count_ops

Prints and saves (JSON + Markdown) for every sampler: operations per round, tokens per round,
operations per token and the speed-up over sequential that the counts predict (sequential's
operations per token over the sampler's), beside tokens per target call.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import assd

PROMPT = (
    "The river rises in the hills north of the town and flows south through farmland, "
    "where it was used for centuries to power mills and carry goods to the coast."
)

# Operations that only re-describe memory: no kernel on any device.
VIEWS = {
    "view", "unsqueeze", "select", "slice", "t", "transpose", "expand", "permute", "_unsafe_view",
    "as_strided", "squeeze", "alias", "detach", "lift_fresh", "reshape", "split", "unbind",
    "narrow", "_reshape_alias", "scalar_tensor",
}  # fmt: skip


class OpCounter(TorchDispatchMode):
    """Counts every dispatched tensor operation that is not a view."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] not in VIEWS:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def count(model, batch, sampler, seed: int, max_rounds: int) -> dict:
    """Operations of the sampler's rounds (fixed shapes, as a replayed round runs them)."""
    g = torch.Generator().manual_seed(seed)
    rounds = assd.samplers.rounds(model, batch, sampler, g, graphs=False, sync_free=True)
    ops, st = [], None
    while len(ops) < max_rounds:
        with OpCounter() as c:
            out = next(rounds, None)
        if out is None:  # every row finished
            break
        st, _ = out
        ops.append(c.ops)
    n_rounds = len(ops)
    if st is None:
        raise ValueError("nothing to generate: every position is visible")
    done = (st.n - batch.n_prompt).sum().item()
    calls = st.nfe.sum().item()
    steady = ops[2:] or ops  # the first rounds may compute many rows
    per_round = sum(steady) / len(steady)
    return {
        "sampler": sampler.name,
        "rounds": n_rounds,
        "ops_per_round": per_round,
        "tokens_per_round": done / n_rounds,
        "ops_per_token": per_round * n_rounds / max(done, 1),
        "tokens_per_call": done / max(calls, 1),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="prose", help="'prose', 'code' or a model folder")
    ap.add_argument("--k", default="1,2,3,5", help="proposals per round of the ASSD forms")
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--visible", type=int, default=13, help="prompt tokens (the rest is masked)")
    ap.add_argument("--prompt", default=PROMPT, help="text whose first tokens are visible")
    ap.add_argument("--rounds", type=int, default=40, help="rounds counted per sampler")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--check", action="store_true", help="keep the engine's protocol checks (default: off)"
    )
    ap.add_argument("--out", default=None, help="folder for count_ops.json / count_ops.md")
    args = ap.parse_args(argv)
    if args.length < 2 or not 1 <= args.visible < args.length:
        ap.error("--length must be >= 2 and --visible in [1, length)")
    ks = [int(x) for x in args.k.split(",") if x]
    if any(k < 1 for k in ks):
        ap.error("--k takes positive integers, e.g. 1,2,3")

    lm = assd.load(args.model, device="cpu")
    model = lm.model
    if hasattr(model, "check"):  # as evals/bench_speed.py runs the engine: protocol checks off
        model.check = args.check
    prompt = lm.tokenizer(args.prompt, add_special_tokens=False)["input_ids"][: args.visible]
    if len(prompt) < args.visible:
        ap.error(f"--prompt has {len(prompt)} tokens, fewer than --visible {args.visible}")
    tokens = torch.zeros(1, args.length, dtype=torch.long)  # masked positions: any id
    tokens[0, : args.visible] = torch.tensor(prompt)
    batch = assd.make_batch(tokens, torch.arange(args.length)[None].clone(), args.visible)

    samplers = [assd.Sequential(), assd.ASSD(5), assd.ASSD(5, bonus=True)]
    samplers += [assd.ASSD(5, one_call=True)]
    if getattr(model, "has_draft_head", False):
        for k in ks:
            samplers += [assd.ASSD(k, draft="head"), assd.ASSD(k, draft="head", verify="block")]
    rows = [count(model, batch, s, args.seed, args.rounds) for s in samplers]
    base = rows[0]["ops_per_token"]
    lines = [
        f"# Operations per round ({args.model}, L = {args.length}, {args.visible} visible, "
        f"left to right, {args.rounds} rounds, views excluded)",
        "",
        "| sampler | ops / round | tokens / round | ops / token | predicted x vs sequential "
        "| tokens / target call |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        r["predicted_speedup"] = base / r["ops_per_token"]
        lines.append(
            f"| {r['sampler']} | {r['ops_per_round']:.0f} | {r['tokens_per_round']:.2f} | "
            f"{r['ops_per_token']:.0f} | {r['predicted_speedup']:.2f} | "
            f"{r['tokens_per_call']:.2f} |"
        )
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "count_ops.json").write_text(
            json.dumps({"args": vars(args), "rows": rows}, indent=1)
        )
        (out / "count_ops.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
