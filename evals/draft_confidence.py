"""Would hybrid drafts pay? Acceptance of context-bigram and draft-head proposals by how
confident the drafter was, at the states exact runs of the trained models visit.

    python evals/draft_confidence.py --models prose,code --n-seqs 3

A hybrid drafter would take a context-bigram proposal (no network call) where the bigram is
confident and the draft head's elsewhere, saving head calls. That pays only if confident bigram
proposals are accepted about as often as the head's. This script runs the shipped exact
samplers ``ASSD(k, draft="bigram")`` and ``ASSD(k, draft="head")`` on the same prompts and
orders and, for every proposal they verify, records q(x) (the drafter's probability of its
proposal) and the acceptance probability min(1, p(x) / q(x)) (p: the exact conditional at that
state). It prints and saves the mean acceptance overall and among proposals with q(x) >= each
threshold, with the fraction of proposals above it.
"""

from __future__ import annotations

# ruff: noqa: E402  (the imports below follow the sys.path line that lets this run as a script)
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json

import torch
from tqdm.auto import tqdm

import assd
from assd.backends import XLNetEngine
from evals.bench_speed import DEFAULT_CODE, DEFAULT_DATA, load_net, make_batches, prompt_pool

THRESHOLDS = (0.0, 0.5, 0.8, 0.95)


def proposal_stats(results) -> list[tuple[float, float]]:
    """(q(x), min(1, p(x)/q(x))) for every verified proposal of sampled results (with traces)."""
    out = []
    for r in results:
        for t in r.trace:
            n = len(t.drafted)
            for q, p in zip(t.p_draft[:n], t.p_oracle[:n]):
                q, p = float(q), float(p)
                out.append((q, min(1.0, p / max(q, 1e-30))))
    return out


def summarise(pairs: list[tuple[float, float]]) -> list[dict]:
    """Per threshold: the fraction of proposals with q(x) >= it and their mean acceptance."""
    a = torch.tensor(pairs, dtype=torch.float64).view(-1, 2)
    rows = []
    for th in THRESHOLDS:
        m = a[:, 0] >= th
        rows.append(
            {
                "q_at_least": th,
                "fraction": float(m.double().mean()) if len(a) else 0.0,
                "acceptance": float(a[m, 1].mean()) if m.any() else None,
                "n": int(m.sum()),
            }
        )
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="prose,code")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--n-seqs", type=int, default=3)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--rate", type=float, default=0.95)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--data-code", default=str(DEFAULT_CODE))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="evals/results/draft_confidence")
    args = p.parse_args(argv)
    args.prompts = None  # prompt_pool reads text chunks from --data
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.models.split(","):
        net, tok, forbidden, desc, head = load_net(name)
        eng = XLNetEngine.from_hf(net, forbidden, dtype=torch.float32, head=head)
        data = args.data_code if "code" in name else args.data
        seqs = prompt_pool(args, tok, eng.vocab_size, forbidden, args.n_seqs, args.length, data)
        batches = make_batches(seqs, args.length, 1, args.rate, args.seed)
        drafts = ["bigram"] + (["head"] if head is not None else [])
        for draft in drafts:
            s = assd.ASSD(args.k, args.temperature, draft=draft)
            pairs = []
            for j, b in enumerate(tqdm(batches, desc=f"{name} {draft}")):
                res = assd.sample(eng, b, s, torch.Generator().manual_seed(args.seed + j))
                pairs += proposal_stats(res)
            row = {"model": name, "draft": draft, "k": args.k, "by_confidence": summarise(pairs)}
            results.append(row)
    lines = [
        "| model | drafter | q(x) >= | share of proposals | mean acceptance min(1, p/q) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        for c in r["by_confidence"]:
            acc = "-" if c["acceptance"] is None else f"{c['acceptance']:.3f}"
            lines.append(
                f"| {r['model']} | {r['draft']} | {c['q_at_least']:g} | {c['fraction']:.2f} "
                f"({c['n']}) | {acc} |"
            )
    table = "\n".join(lines)
    print(table)
    (out / "draft_confidence.json").write_text(
        json.dumps({"args": vars(args), "results": results}, indent=1)
    )
    (out / "draft_confidence.md").write_text(
        "# Drafter confidence against acceptance (`evals/draft_confidence.py`)\n\n"
        f"Settings: {vars(args)}\n\n{table}\n"
    )
    return {"results": results}


if __name__ == "__main__":
    main()
