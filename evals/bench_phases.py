"""Where a run's time goes: fixed cost per run (session, first round) against steady rounds.

Why: with round graphs kept across runs, a run of a 6-layer model on a GPU is a few hundred
replays of ~0.3-0.7 ms each plus a fixed cost (opening the session, which encodes the prompt;
the first round; the host reads at the end). The fixed cost is about the same for every
sampler, so it weighs most on the fastest ones: it is what a speed-up over sequential
decoding loses first. This script measures it, per method and batch size, on trained models.

For each method: one warm-up run (captures and, with --compile, compiles the round), then per
batch (1) a plain timed ``assd.sample`` (the figure bench_speed reports), (2) the same run
through ``assd.samplers.rounds`` with a device sync after every round: time to the first
round (session + round 1), the later rounds, and after the last, and (3) ``model.open`` alone
(the session: prompt encoding). The synced rounds cost a little more than unsynced ones (the
host no longer queues ahead), so compare phases with each other, totals with bench_speed.

    python evals/bench_phases.py --models prose --batch-sizes 1,8 --compile \\
        --data ../shared/data/text/wiki_valid.jsonl.xz
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

import assd
from assd.backends import XLNetEngine
from evals.bench_speed import DEFAULT_CODE, DEFAULT_DATA, load_net, make_batches, prompt_pool

METHODS = {
    "c": assd.Sequential(),
    "h2": assd.ASSD(2, draft="head"),
    "hb3": assd.ASSD(3, draft="head", verify="block"),
    "d": assd.ASSD(5),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="prose")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--rate", type=float, default=0.95)
    p.add_argument("--n-seqs", type=int, default=8)
    p.add_argument("--methods", default="c,h2,hb3", help=f"comma list of {','.join(METHODS)}")
    p.add_argument("--compile", action="store_true", help="compiled rounds (assd.sample compile)")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--data-code", default=str(DEFAULT_CODE))
    p.add_argument("--prompts", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="evals/results/bench_phases")
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def phases(model, batch, sampler, device, seed: int, compile: bool) -> dict:
    """One batch: plain timed run, then the synced phases of the same run (same seed)."""
    g = lambda: torch.Generator(device).manual_seed(seed)  # noqa: E731
    sync(device)
    t0 = time.perf_counter()
    res = assd.sample(model, batch, sampler, g(), trace=False, compile=compile)
    sync(device)
    total = time.perf_counter() - t0
    n_rounds = max(r.rounds for r in res)
    t0 = time.perf_counter()
    session = model.open(batch)
    sync(device)
    open_s = time.perf_counter() - t0
    del session
    times = []
    sync(device)
    t0 = time.perf_counter()
    for _ in assd.samplers.rounds(model, batch, sampler, g(), compile=compile, sync_every=1):
        sync(device)
        times.append(time.perf_counter())
    sync(device)
    end = time.perf_counter()
    first = times[0] - t0
    later = [b - a for a, b in zip(times, times[1:])]
    steady = statistics.median(later) if later else 0.0
    return {
        "total_s": total,
        "rounds": n_rounds,
        "open_s": open_s,
        "to_first_round_s": first,
        "steady_round_s": steady,
        "after_last_s": end - times[-1],
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        net, tok, forbidden, desc, head = load_net(name)
        model = XLNetEngine.from_hf(net.to(device), forbidden, dtype=dtype, head=head)
        data = args.data_code if "code" in name else args.data
        seqs = prompt_pool(
            args, tok, net.config.vocab_size, forbidden, args.n_seqs, args.length, data
        )
        for B in [int(b) for b in args.batch_sizes.split(",")]:
            batches = [
                b.to(device) for b in make_batches(seqs, args.length, B, args.rate, args.seed)
            ]
            for key in tqdm(args.methods.split(","), desc=f"{name} B={B}"):
                s = METHODS[key]
                assd.sample(
                    model,
                    batches[0],
                    s,
                    torch.Generator(device).manual_seed(99),
                    trace=False,
                    compile=args.compile,
                )  # warm-up: capture, compile
                per = [phases(model, b, s, device, j, args.compile) for j, b in enumerate(batches)]
                row = {"model": name, "B": B, "method": key + ("-c" if args.compile else "")}
                for f in per[0]:
                    row[f] = statistics.median(p[f] for p in per)
                rows.append(row)
                print(
                    json.dumps(
                        {k: round(v * 1e3, 2) if k.endswith("_s") else v for k, v in row.items()}
                    )
                )
    (out / "bench_phases.json").write_text(json.dumps(rows, indent=1))
    lines = [
        f"# Phases of a run ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'},"
        f" torch {torch.__version__}, {args.dtype}, L={args.length}, rate {args.rate},"
        f" {args.n_seqs} sequences; medians over batches, ms)",
        "",
        "| model | B | method | total | rounds | steady round (synced) | session open |"
        " to 1st round | after last |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = {k: f"{r[k] * 1e3:.2f}" for k in r if k.endswith("_s")}
        lines.append(
            f"| {r['model']} | {r['B']} | {r['method']} | {ms['total_s']} | {r['rounds']} | "
            f"{ms['steady_round_s']} | {ms['open_s']} | "
            f"{ms['to_first_round_s']} | {ms['after_last_s']} |"
        )
    (out / "bench_phases.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
