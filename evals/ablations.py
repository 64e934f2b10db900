"""Ablations: draft length k x sequence length, and lossy acceptance (r_atol) vs exactness.

Both reuse the Table-1 prompts (``spec_decoding.Prompt``). k x L: ASSD's calls and tokens per
call as functions of k and L (prefixes of the packed sequences, re-masked at the same rate).
r_atol: accepting proposals with p/q >= 1 - r_atol raises acceptance but breaks exactness;
the perplexity/entropy tests against r_atol = 0 show what that costs.
"""

from __future__ import annotations

import traceback

from tqdm.auto import tqdm

import assd

from .spec_decoding import SamplerSpec, make_prompts, run_one
from .stats import compare, summary
from .store import Store


def k_by_length(
    lm: assd.Loaded, sequences: list[list[int]], ks: tuple[int, ...], lengths: tuple[int, ...],
    store: Store, seed: int, rate: float, evaluator,
) -> list[dict]:  # fmt: skip
    """ASSD(k) on the first L tokens of every sequence, for every (k, L)."""
    blank = lm.tokenizer.mask_token_id
    todo = [
        (k, L, p)
        for L in lengths
        for p in make_prompts([s[:L] for s in sequences], rate, seed)
        for k in ks
    ]
    todo = [t for t in todo if not store.done(f"k={t[0]}/L={t[1]}/{t[2].idx}")]
    for k, L, p in tqdm(todo, desc="ablation k x L", unit="seq"):
        item = f"k={k}/L={L}/{p.idx}"
        spec = SamplerSpec(f"assd (k={k})", lambda k=k: assd.ASSD(k))
        try:
            store.add({"id": item, "k": k, "L": L, **run_one(lm, p, spec, seed, evaluator, blank)})
        except Exception as e:  # noqa: BLE001
            store.add(
                {
                    "id": item,
                    "k": k,
                    "L": L,
                    "error": repr(e),
                    "traceback": traceback.format_exc(limit=5),
                }
            )
    return store.records()


def r_atol_sweep(
    lm: assd.Loaded, sequences: list[list[int]], k: int, r_atols: tuple[float, ...],
    store: Store, seed: int, rate: float, evaluator,
) -> list[dict]:  # fmt: skip
    """ASSD(k, r_atol) for every r_atol (0 = exact) on the same prompts."""
    blank = lm.tokenizer.mask_token_id
    prompts = make_prompts(sequences, rate, seed)
    todo = [(r, p) for r in r_atols for p in prompts if not store.done(f"r_atol={r}/{p.idx}")]
    for r, p in tqdm(todo, desc="ablation r_atol", unit="seq"):
        item = f"r_atol={r}/{p.idx}"
        spec = SamplerSpec(
            f"assd (k={k}, r_atol={r})", lambda r=r: assd.ASSD(k, r_atol=r), exact=r == 0
        )
        try:
            store.add({"id": item, "r_atol": r, **run_one(lm, p, spec, seed, evaluator, blank)})
        except Exception as e:  # noqa: BLE001
            store.add(
                {
                    "id": item,
                    "r_atol": r,
                    "error": repr(e),
                    "traceback": traceback.format_exc(limit=5),
                }
            )
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
        }  # fmt: skip
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
        s = {m: summary([rows[i][m] for i in sorted(rows)]) for m in
             ("nfe", "tokens_per_call", "acceptance_rate", "ppl", "entropy")}  # fmt: skip
        if ra != 0 and ref:
            common = sorted(set(rows) & set(ref))
            s["tests"] = {m: compare([ref[i][m] for i in common], [rows[i][m] for i in common])
                          for m in ("ppl", "entropy")}  # fmt: skip
        out[str(ra)] = s
    return out
