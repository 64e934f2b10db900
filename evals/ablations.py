"""Ablations: draft length k x sequence length, and lossy acceptance (r_atol) vs exactness.

Both reuse the Table-1 prompts (``spec_decoding.Prompt``). k x L: ASSD's calls and tokens per
call as functions of k and L (prefixes of the packed sequences, re-masked at the same rate).
r_atol, the paper's rule: a draft token is accepted when u < min(1, p/q + r_atol) (u uniform,
p its oracle probability, q its draft probability); r_atol = 0 is exact ASSD, r_atol > 0 raises
acceptance but breaks exactness; the perplexity/entropy tests against r_atol = 0 show what
that costs. The paper ablates r_atol in {0, 1e-4, 1e-3, 1e-2, 5e-2, 1e-1} at k = 5, L = 256.
"""

from __future__ import annotations

from tqdm.auto import tqdm

import assd

from .spec_decoding import SamplerSpec, make_prompts, run_one
from .stats import compare, summary
from .store import Store, shard


def k_by_length(
    lm: assd.Loaded,
    sequences: list[list[int]],
    ks: tuple[int, ...],
    lengths: tuple[int, ...],
    store: Store,
    seed: int,
    rate: float,
    evaluator,
    rank: int = 0,
    world: int = 1,
) -> list[dict]:
    """ASSD(k) on the first L tokens of every sequence, for every (k, L); this process's
    sequences only."""
    blank = lm.tokenizer.mask_token_id
    todo = [
        (k, L, p)
        for L in lengths
        for p in shard(make_prompts([s[:L] for s in sequences], rate, seed), rank, world)
        for k in ks
        if not store.done(f"k={k}/L={L}/{p.idx}")
    ]
    for k, L, p in tqdm(todo, desc="ablation k x L", unit="seq"):
        item = f"k={k}/L={L}/{p.idx}"
        spec = SamplerSpec(f"assd (k={k})", lambda k=k: assd.ASSD(k))
        with store.guard(item, k=k, L=L):
            store.add({"id": item, "k": k, "L": L, **run_one(lm, p, spec, seed, evaluator, blank)})
    return store.records()


def r_atol_sweep(
    lm: assd.Loaded,
    sequences: list[list[int]],
    k: int,
    r_atols: tuple[float, ...],
    store: Store,
    seed: int,
    rate: float,
    evaluator,
    rank: int = 0,
    world: int = 1,
) -> list[dict]:
    """``assd.ASSD(k, r_atol=r)`` for every r (0 = exact) on the same prompts (this process's)."""
    blank = lm.tokenizer.mask_token_id
    prompts = shard(make_prompts(sequences, rate, seed), rank, world)
    todo = [(r, p) for r in r_atols for p in prompts if not store.done(f"r_atol={r}/{p.idx}")]
    for r, p in tqdm(todo, desc="ablation r_atol", unit="seq"):
        item = f"r_atol={r}/{p.idx}"
        spec = SamplerSpec(
            f"assd (k={k}, r_atol={r})", lambda r=r: assd.ASSD(k, r_atol=r), exact=r == 0
        )
        with store.guard(item, r_atol=r):
            store.add({"id": item, "r_atol": r, **run_one(lm, p, spec, seed, evaluator, blank)})
    return store.records()


def summarize_k_by_length(records: list[dict]) -> dict:
    """{"k=K/L=L": {nfe, tokens_per_call, acceptance_rate, seconds summaries}}."""
    cells: dict[tuple[int, int], list[dict]] = {}
    for r in records:
        cells.setdefault((r["k"], r["L"]), []).append(r)
    return {
        f"k={k}/L={L}": {
            "k": k,
            "L": L,
            **{
                m: summary([r[m] for r in rows])
                for m in ("nfe", "tokens_per_call", "acceptance_rate", "seconds")
            },
        }
        for (k, L), rows in sorted(cells.items())
    }


def summarize_r_atol(records: list[dict]) -> dict:
    """Per r_atol: calls, acceptance, quality; p-values of ppl/entropy against r_atol = 0."""
    by: dict[float, dict[int, dict]] = {}
    for r in records:
        by.setdefault(r["r_atol"], {})[r["seq"]] = r
    ref = by.get(0.0, by.get(0, {}))
    out = {}
    for ra, rows in sorted(by.items()):
        s = {
            m: summary([rows[i][m] for i in sorted(rows)])
            for m in ("nfe", "tokens_per_call", "acceptance_rate", "ppl", "entropy")
        }
        if ra != 0 and ref:
            common = sorted(set(rows) & set(ref))
            s["tests"] = {
                m: compare([ref[i][m] for i in common], [rows[i][m] for i in common])
                for m in ("ppl", "entropy")
            }
        out[str(ra)] = s
    return out
