"""Would tree verification pay? Expected tokens per round of draft-head ASSD with c candidates
per depth, measured at the states an exact run of the trained model visits.

    python evals/tree_gain.py --models prose,code --ks 2,3,5 --cs 2,3,4 --n-seqs 4

A chain of k head proposals x_0..x_{k-1} (each conditioned on the ones before it) is verified
token by token; the round commits the accepted prefix plus one token. A token tree
(SpecInfer/SpecTr style) adds c - 1 sibling candidates at each depth d, drawn from the head's
q_d *without replacement* (the chain's x_d first), verified by recursive rejection sampling:
after x_d is rejected the target becomes norm(max(p_d - q_d, 0)) and the proposal q_d without
the candidates already tried, renormalised; the next candidate is accepted with
min(1, p'(y) / q'(y)); an accepted sibling ends the round with one more exact token after it
(its own oracle row). Exact, like the chain.

This script runs the shipped chain sampler (``ASSD(k, draft="head")``, exact samples) and, at
every round it plays, computes from the round's real p_d, q_d and x_d the expected committed
tokens of the chain and of each tree shape (c candidates at every depth, or only at depth 0),
the sibling acceptance by Monte Carlo over the sibling draws. It prints and saves the mean
expected tokens per round (= tokens per target call) and the extra query rows each tree
costs, so whether a tree is worth building can be read off before it is built.
"""

from __future__ import annotations

# ruff: noqa: E402  (the imports below follow the sys.path line that lets this run as a script)
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

import assd
from assd.backends import XLNetEngine
from assd.probs import residual
from evals.bench_speed import DEFAULT_CODE, DEFAULT_DATA, load_net, make_batches, prompt_pool


def sibling_accept(p, q, x, c: int, draws: int, gen: torch.Generator) -> torch.Tensor:
    """P(one of c - 1 siblings is accepted | the chain's x was rejected), per row.

    p, q: [N, V] exact and draft rows at one depth; x: [N] the chain's (rejected) candidate.
    Siblings are drawn from q without replacement (x excluded); each is tested against the
    running residual target. Monte Carlo over ``draws`` sibling sequences. -> [N]
    """
    N, V = p.shape
    hit = torch.zeros(N, dtype=torch.float64)
    for _ in range(draws):
        target = residual(p, q)  # norm(max(p - q, 0)): the target after x's rejection
        prop = q.scatter(1, x[:, None], 0.0)
        accepted = torch.zeros(N, dtype=torch.bool)
        for _ in range(c - 1):
            z = prop.sum(1, keepdim=True)
            live = (z[:, 0] > 1e-12) & ~accepted
            qn = prop / z.clamp(min=1e-30)
            y = torch.multinomial(torch.where(live[:, None], qn, 1.0 / V), 1, generator=gen)
            py, qy = target.gather(1, y)[:, 0], qn.gather(1, y)[:, 0]
            acc = torch.rand(N, generator=gen, dtype=torch.float64) < (py / qy.clamp(min=1e-30))
            accepted |= live & acc
            # Rejected: the target moves to norm(max(target - qn, 0)), y leaves the proposal.
            target = torch.where((live & ~acc)[:, None], residual(target, qn), target)
            prop = prop.scatter(1, y, 0.0)
        hit += accepted.double()
    return hit / draws


@dataclass
class Tally:
    rounds: int = 0
    chain: float = 0.0  # summed expected tokens per round
    tree: dict | None = None  # (c, where) -> summed expected tokens


class Recording(assd.ASSD):
    """The shipped exact chain sampler; ``_verify`` also scores tree shapes on the same round."""

    def __init__(self, *a, tally: Tally, cs, draws, gen, **kw):
        super().__init__(*a, **kw)
        object.__setattr__(self, "_extra", (tally, cs, draws, gen))

    def _verify(self, st, tokens, props, p_all, has_next, rng):
        tally, cs, draws, gen = self._extra
        K = st.k
        rows = st.active & (props.k == K)  # full rounds only (the tail has fewer proposals)
        if rows.any():
            p = p_all[rows][:, :K].double()
            q = props.q[rows].double()
            x = props.x[rows]
            px = p.gather(2, x[..., None])[..., 0]
            qx = q.gather(2, x[..., None])[..., 0]
            a = (px / qx.clamp(min=1e-30)).clamp(max=1.0)  # [N, K] chain acceptance
            reach = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), a], 1), 1)  # [N, K+1]
            stop = reach[:, :K] * (1 - a)  # P(first rejection at depth d)
            depth = torch.arange(K, dtype=torch.float64)
            chain = (stop * (depth + 1)).sum(1) + reach[:, K] * (K + 1)
            tally.rounds += int(rows.sum())
            tally.chain += float(chain.sum())
            for c in cs:
                b = torch.stack(
                    [sibling_accept(p[:, d], q[:, d], x[:, d], c, draws, gen) for d in range(K)],
                    1,
                )  # [N, K]
                for where in ("all", "root"):
                    bb = b if where == "all" else torch.cat([b[:, :1], 0 * b[:, 1:]], 1)
                    tree = (stop * (depth + 1 + bb)).sum(1) + reach[:, K] * (K + 1)
                    key = f"c={c},{where}"
                    tally.tree[key] = tally.tree.get(key, 0.0) + float(tree.sum())
        return super()._verify(st, tokens, props, p_all, has_next, rng)


def extra_rows(k: int, c: int, where: str) -> int:
    """Query rows a tree adds to the oracle call: per sibling one content row and one query row
    (the exact row after it)."""
    siblings = (c - 1) * (k if where == "all" else 1)
    return 2 * siblings


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="prose,code")
    p.add_argument("--ks", default="2,3,5")
    p.add_argument("--cs", default="2,3,4")
    p.add_argument("--n-seqs", type=int, default=4)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--rate", type=float, default=0.95)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--draws", type=int, default=8, help="Monte Carlo draws of the siblings")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--data-code", default=str(DEFAULT_CODE))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="evals/results/tree_gain")
    args = p.parse_args(argv)
    args.prompts = None  # prompt_pool reads text chunks from --data
    ks = [int(v) for v in args.ks.split(",")]
    cs = [int(v) for v in args.cs.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.models.split(","):
        net, tok, forbidden, desc, head = load_net(name)
        eng = XLNetEngine.from_hf(net, forbidden, dtype=torch.float32, head=head)
        data = args.data_code if "code" in name else args.data
        seqs = prompt_pool(args, tok, eng.vocab_size, forbidden, args.n_seqs, args.length, data)
        batches = make_batches(seqs, args.length, 1, args.rate, args.seed)
        for k in tqdm(ks, desc=name):
            tally = Tally(tree={})
            gen = torch.Generator().manual_seed(args.seed)
            s = Recording(
                k, args.temperature, draft="head", tally=tally, cs=cs, draws=args.draws, gen=gen
            )
            for j, b in enumerate(batches):
                assd.sample(eng, b, s, torch.Generator().manual_seed(j), trace=False)
            row = {
                "model": name,
                "k": k,
                "rounds": tally.rounds,
                "chain": tally.chain / tally.rounds,
            }
            for key, v in tally.tree.items():
                c, where = int(key.split(",")[0][2:]), key.split(",")[1]
                row[key] = {
                    "tokens_per_round": v / tally.rounds,
                    "gain": v / tally.chain,
                    "extra_rows": extra_rows(k, c, where),
                }
            results.append(row)
            print(json.dumps(row))
    lines = [
        "| model | k | chain tokens/round | tree | tokens/round | gain | extra query rows |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for key, v in r.items():
            if isinstance(v, dict):
                lines.append(
                    f"| {r['model']} | {r['k']} | {r['chain']:.3f} | {key} | "
                    f"{v['tokens_per_round']:.3f} | {v['gain']:.3f}x | {v['extra_rows']} |"
                )
    table = "\n".join(lines)
    print(table)
    (out / "tree_gain.json").write_text(
        json.dumps({"args": vars(args), "results": results}, indent=1)
    )
    (out / "tree_gain.md").write_text(
        f"# Tree verification: expected tokens per round (`evals/tree_gain.py`)\n\n"
        f"Settings: {vars(args)}\n\n{table}\n"
    )
    return {"results": results}


if __name__ == "__main__":
    main()
