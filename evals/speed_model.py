"""What would it take? A round-cost model of exact speculative sampling, from a benchmark run.

    python evals/speed_model.py evals/results/bench_speed/cpu_round6/bench_speed.json

A speculative round costs ``c`` sequential rounds (measured: its ms per round over sequential's)
and yields ``t`` tokens, so it is ``t / c`` times as fast as sequential decoding. With k
proposals a round and each accepted with probability ``a`` (given the ones before it; the
i.i.d. model of Leviathan et al.), ``t = (1 - a^(k+1)) / (1 - a)``. From each measured row
this prints the acceptance ``a`` its tokens per round imply, the acceptance it would need for
1.2x and 1.5x at its measured round cost, and its ceiling (every proposal accepted: ``(k+1) /
c``). Where even the ceiling is under a target, no acceptance can reach it at that round cost:
the round itself must get cheaper. Rows of batch size 1; ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def tokens_per_round(a: float, k: int) -> float:
    """Expected tokens of a round with k proposals, each accepted with probability a."""
    return float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


def acceptance_for(t: float, k: int) -> float | None:
    """The acceptance a with tokens_per_round(a, k) = t (None if t > k + 1), by bisection."""
    if t > k + 1 + 1e-9:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tokens_per_round(mid, k) < t else (lo, mid)
    return (lo + hi) / 2


def proposals(method: str, label: str) -> int | None:
    """k of a row: ASSD(k=...) in its label; None for sequential or unknown."""
    m = re.search(r"k=(\d+)", label)
    return int(m.group(1)) if m else None


def rows_of(bench: dict, targets=(1.2, 1.5)) -> list[dict]:
    out = []
    e2e = [r for r in bench["end_to_end"] if r["B"] == 1]
    seq = {(r["model"], r["L"], r["method"]): r for r in e2e}
    for r in e2e:
        compiled = r["method"].endswith("-c")
        base = seq.get((r["model"], r["L"], "c-c" if compiled else "c"))
        k = proposals(r["method"], r["label"])
        if base is None or k is None or "reference" in r["label"]:
            continue
        rounds = r["rounds_per_batch"]
        t = (
            r["n_tokens"] if "n_tokens" in r else r["tokens_per_call"] * r["calls_per_seq"]
        ) / rounds
        c = r["ms_per_round"] / base["ms_per_round"]
        row = {"model": r["model"], "method": r["method"], "k": k, "round_cost": c}
        row |= {"tokens_per_round": t, "speedup": base["per_seq_s"] / r["per_seq_s"]}
        row |= {"acceptance": acceptance_for(t, k), "ceiling": (k + 1) / c}
        for x in targets:
            row[f"needed_{x}"] = acceptance_for(x * c, k)
        out.append(row)
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    def f(v, fmt="{:.2f}"):
        return "unreachable" if v is None else fmt.format(v)

    lines = [
        f"Round-cost model of `{meta.get('device_name')}` ({meta.get('dtype')}, torch "
        f"{meta.get('torch')}, {meta.get('date')}), batch 1; cost in sequential rounds.",
        "",
        "| model | method | k | round cost | tokens / round | speed-up | acceptance (implied) "
        "| needed for 1.2x | needed for 1.5x | ceiling (all accepted) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['k']} | {r['round_cost']:.2f} | "
            f"{r['tokens_per_round']:.2f} | {r['speedup']:.2f} | {f(r['acceptance'])} | "
            f"{f(r['needed_1.2'])} | {f(r['needed_1.5'])} | {r['ceiling']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("bench", help="bench_speed.json of evals/bench_speed.py")
    p.add_argument("--out", default=None, help="write the table here (default: beside the json)")
    a = p.parse_args(argv)
    bench = json.loads(Path(a.bench).read_text())
    md = markdown(rows_of(bench), bench.get("meta", {}))
    out = Path(a.out) if a.out else Path(a.bench).with_name("speed_model.md")
    out.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
